#!/usr/bin/env bash
# Quick start: set up, build, start a local cluster (router + 2 CPU workers)
# on the bundled tiny model, show that it formed, stream a generation through
# the gRPC API, then shut it down cleanly. `tools/quickstart.sh --keep-running`
# leaves it up until Ctrl-C.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${EPSERVE_BUILD_DIR:-$root/build}"
keep=0
[ "${1:-}" = "--keep-running" ] && keep=1

bash "$root/tools/build.sh"
bin="$build/bin"
port="${EPSERVE_PORT:-50051}"
http_port="${EPSERVE_HTTP_PORT:-8000}"
model="$root/checkpoints/tiny-random-qwen3-moe"

echo
echo "== starting epserve-router --model $model --local-workers 2 (port $port)"
"$bin/epserve-router" --model "$model" --local-workers 2 \
  --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http_port" --metrics-listen 127.0.0.1:0 &
router=$!
trap 'kill -TERM $router 2>/dev/null || true; wait $router 2>/dev/null || true' EXIT

echo "== epserve health (waits until every worker joined the collective group)"
"$bin/epserve" health --router "127.0.0.1:$port" --wait-serving-s 60
echo "== epserve info (topology, each worker's weights and experts, the model)"
"$bin/epserve" info --router "127.0.0.1:$port"

echo "== epserve generate (streamed through the router's gRPC API; the model's weights are random, so is the text)"
"$bin/epserve" generate --server "127.0.0.1:$port" --prompt "Hello, world!" --max-tokens 24 \
  --temperature 0 --ignore-eos
echo "== POST /v1/completions (the OpenAI-compatible HTTP API on 127.0.0.1:$http_port)"
curl -s "http://127.0.0.1:$http_port/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny-random-qwen3-moe", "prompt": "Hello, world!", "max_tokens": 8, "temperature": 0}'
echo
echo "== epserve bench (16 requests, 4 at a time)"
"$bin/epserve" bench --server "127.0.0.1:$port" --num-prompts 16 --max-concurrency 4 \
  --input-len 32 --output-len 16

if [ "$keep" = 1 ]; then
  echo "== cluster is up: gRPC on 127.0.0.1:$port, OpenAI HTTP API on 127.0.0.1:$http_port; Ctrl-C stops it"
  wait $router
else
  echo "== stopping (SIGTERM: the router drains and its workers exit)"
  kill -TERM $router
  wait $router
  trap - EXIT
  echo "== done"
fi
