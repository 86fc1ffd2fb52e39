#!/usr/bin/env bash
# Installs the official OpenAI Node client (npm "openai", pinned) into
# .cache/node_clients/node_modules for tests/http/openai_client_test.sh.
# Idempotent: nothing is fetched when that version is in place.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${EPSERVE_NODE_CLIENTS_DIR:-${root}/.cache/node_clients}"
version="4.95.0"
if [ -f "$dest/node_modules/openai/package.json" ] &&
   grep -q "\"version\": \"$version\"" "$dest/node_modules/openai/package.json"; then
  echo "fetch_node_clients: openai $version present in $dest"
  exit 0
fi
mkdir -p "$dest"
[ -f "$dest/package.json" ] || echo '{"name":"epserve-node-clients","private":true}' >"$dest/package.json"
(cd "$dest" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "openai@$version")
echo "fetch_node_clients: openai $version installed in $dest"
