#!/usr/bin/env bash
# Quick start: set up, build the three binaries it runs, start a local cluster
# (router + 2 CPU workers) on the bundled tiny model, show that it formed,
# stream a generation through the gRPC API and the OpenAI-compatible HTTP
# API, run a short benchmark, then shut it down cleanly.
#
#   tools/quickstart.sh [--cuda] [--keep-running]
#
# --cuda builds the CUDA backend (also EPSERVE_CUDA=ON; by default only when
# nvidia-smi sees a GPU) and runs the workers on the GPU. --keep-running leaves
# the cluster up until Ctrl-C. The build lands in build-quick/ (Release, no
# tests or benchmarks; EPSERVE_BUILD_DIR overrides it; tools/test.sh builds
# everything in build/). Ports: free ones unless EPSERVE_PORT /
# EPSERVE_HTTP_PORT name them; a port in use stops the script at once.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
keep=0
cuda="${EPSERVE_CUDA:-auto}"
for arg in "$@"; do
  case "$arg" in
    --keep-running) keep=1 ;;
    --cuda) cuda=ON ;;
    *) echo "quickstart: unknown argument '$arg' (expected --cuda, --keep-running)" >&2; exit 2 ;;
  esac
done
if [ "$cuda" = auto ]; then
  cuda=OFF
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
    cuda=ON
  fi
fi
build="${EPSERVE_BUILD_DIR:-$root/build-quick}"
device=cpu
[ "$cuda" = ON ] && device=cuda

# A port given and taken: stop before building or starting anything.
port_in_use() {
  python3 -c 'import socket,sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}
for var in EPSERVE_PORT EPSERVE_HTTP_PORT; do
  p="${!var:-}"
  if [ -n "$p" ] && port_in_use "$p"; then
    echo "quickstart: port $p is in use ($var); free it or choose another ($var=PORT)" >&2
    exit 1
  fi
done

bash "$root/tools/setup.sh"
if [ ! -f "$build/build.ninja" ]; then
  cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DEPSERVE_CUDA="$cuda" \
    -DEPSERVE_BUILD_TESTS=OFF -DEPSERVE_BUILD_BENCHMARKS=OFF
fi
ninja -C "$build" -j "${EPSERVE_BUILD_JOBS:-$(nproc)}" epserve-router epserve-worker epserve
bin="$build/bin"
model="$root/checkpoints/tiny-random-qwen3-moe"
run_dir="$(mktemp -d "${TMPDIR:-/tmp}/epserve-quickstart.XXXXXX")"
ports_file="$run_dir/ports.json"

echo
echo "== starting epserve-router --model $model --local-workers 2 --device $device"
"$bin/epserve-router" --model "$model" --local-workers 2 --device "$device" \
  --listen "127.0.0.1:${EPSERVE_PORT:-0}" --http-listen "127.0.0.1:${EPSERVE_HTTP_PORT:-0}" \
  --metrics-listen 127.0.0.1:0 --ports-file "$ports_file" &
router=$!
trap 'kill -TERM $router 2>/dev/null || true; wait $router 2>/dev/null || true; rm -rf "$run_dir"' EXIT

# The router writes its bound ports once it listens; if it exits first
# (a port taken meanwhile, a bad model), stop here with its error above.
for _ in $(seq 1 600); do
  [ -s "$ports_file" ] && break
  if ! kill -0 "$router" 2>/dev/null; then
    wait "$router" || true
    echo "quickstart: epserve-router exited during start-up (its error is above)" >&2
    exit 1
  fi
  sleep 0.1
done
[ -s "$ports_file" ] || { echo "quickstart: epserve-router wrote no ports file in 60 s" >&2; exit 1; }
port_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$ports_file" "$1"; }
server="$(port_of grpc)"
http="$(port_of http)"

echo "== epserve health (waits until every worker joined the collective group)"
"$bin/epserve" health --router "$server" --wait-serving-s 120
echo "== epserve info (topology, each worker's weights and experts, the model)"
"$bin/epserve" info --router "$server"

echo "== epserve generate (streamed through the router's gRPC API; the model's weights are random, so is the text)"
"$bin/epserve" generate --server "$server" --prompt "Hello, world!" --max-tokens 24 \
  --temperature 0 --ignore-eos
echo "== POST /v1/completions (the OpenAI-compatible HTTP API on $http)"
curl -s "http://$http/v1/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny-random-qwen3-moe", "prompt": "Hello, world!", "max_tokens": 8, "temperature": 0}'
echo
echo "== POST /v1/chat/completions (the conversation rendered by the model's chat template)"
curl -s "http://$http/v1/chat/completions" -H 'Content-Type: application/json' \
  -d '{"model": "tiny-random-qwen3-moe", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "temperature": 0}'
echo
echo "== epserve bench (16 requests, 4 at a time)"
"$bin/epserve" bench --server "$server" --num-prompts 16 --max-concurrency 4 \
  --input-len 32 --output-len 16

if [ "$keep" = 1 ]; then
  echo "== cluster is up: gRPC on $server, OpenAI HTTP API on http://$http; Ctrl-C stops it"
  wait $router
else
  echo "== stopping (SIGTERM: the router drains and its workers exit)"
  kill -TERM $router
  wait $router
  trap - EXIT
  rm -rf "$run_dir"
  echo "== done"
fi
