#!/usr/bin/env bash
# Installs the Kubernetes API schemas that tests/deploy/check_manifests.py
# validates deploy/k8s against, from the npm registry (pinned), into
# .cache/k8s_schemas/node_modules:
#   kubernetes-models 4.3.1                          Kubernetes 1.27 OpenAPI definitions
#   @kubernetes-models/apimachinery 1.2.2            ObjectMeta, Quantity, IntOrString, ...
#   @kubernetes-models/prometheus-operator 4.0.0     the ServiceMonitor CRD schema
# These versions ship the definitions as plain JSON-schema objects (later ones
# only as compiled validators), which the check reads with the standard library
# and validates strictly (unknown fields are errors) with python3-jsonschema.
# The LeaderWorkerSet schema is committed (tests/deploy/schemas). Idempotent:
# nothing is fetched when these versions are in place.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${EPSERVE_K8S_SCHEMAS_DIR:-${root}/.cache/k8s_schemas}"
packages=(kubernetes-models@4.3.1 @kubernetes-models/apimachinery@1.2.2
          @kubernetes-models/prometheus-operator@4.0.0)
present=1
for p in "${packages[@]}"; do
  name="${p%@*}" version="${p##*@}"
  if ! grep -qs "\"version\": \"$version\"" "$dest/node_modules/$name/package.json"; then
    present=0
  fi
done
if [ "$present" = 1 ]; then
  echo "fetch_k8s_schemas: ${packages[*]} present in $dest"
  exit 0
fi
mkdir -p "$dest"
[ -f "$dest/package.json" ] || echo '{"name":"epserve-k8s-schemas","private":true}' >"$dest/package.json"
(cd "$dest" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "${packages[@]}")
echo "fetch_k8s_schemas: ${packages[*]} installed in $dest"
