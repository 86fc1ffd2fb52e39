#!/usr/bin/env bash
# A serving sweep: one local cluster (router + N CPU workers on a model, gRPC and
# the OpenAI HTTP API), `epserve bench` through each front end at each
# concurrency, one JSON per run, then tools/plot_bench.py's table (and chart
# when matplotlib is there).
#
#   tools/bench_sweep.sh OUT_DIR [--model DIR] [--workers N] [--concurrency "1 4 16 64"]
#       [--backends "grpc openai"] [--num-prompts N] [--input-len L] [--output-len O]
#
# Writes OUT_DIR/<backend>-c<C>.json, OUT_DIR/table.md and OUT_DIR/bench.png.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: tools/bench_sweep.sh OUT_DIR [options]}"; shift
model="$root/checkpoints/tiny-random-qwen3-moe"
workers=2 conc="1 4 16 64" backends="grpc openai" prompts=128 in_len=128 out_len=64
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --concurrency) conc="$2"; shift 2 ;;
    --backends) backends="$2"; shift 2 ;;
    --num-prompts) prompts="$2"; shift 2 ;;
    --input-len) in_len="$2"; shift 2 ;;
    --output-len) out_len="$2"; shift 2 ;;
    *) echo "bench_sweep: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
bin="${EPSERVE_BIN_DIR:-$root/build/bin}"
mkdir -p "$out"
"$bin/epserve-router" --model "$model" --local-workers "$workers" --listen 127.0.0.1:0 \
  --http-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 --ports-file "$out/ports.json" \
  --log-level warn 2>"$out/router.log" &
router=$!
trap 'kill -TERM $router 2>/dev/null || true; wait $router 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  [ -s "$out/ports.json" ] && break
  kill -0 "$router" 2>/dev/null || { cat "$out/router.log" >&2; exit 1; }
  sleep 0.1
done
port_of() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$out/ports.json" "$1"; }
grpc="$(port_of grpc)" http="$(port_of http)"
"$bin/epserve" health --server "$grpc" --wait-serving-s 120 >/dev/null
files=()
for c in $conc; do
  for b in $backends; do
    f="$out/$b-c$c.json"
    "$bin/epserve" bench --server "$grpc" --http-server "$http" --backend "$b" \
      --num-prompts "$prompts" --max-concurrency "$c" --input-len "$in_len" \
      --output-len "$out_len" --seed 1 --warmup 8 --json-out "$f" >/dev/null
    files+=("$f")
  done
done
python3 "$root/tools/plot_bench.py" --table "${files[@]}" | tee "$out/table.md"
if /usr/bin/python3 -c 'import matplotlib' 2>/dev/null; then
  /usr/bin/python3 "$root/tools/plot_bench.py" --out "$out/bench.png" \
    --title "epserve bench: $(basename "$model"), $workers CPU workers" "${files[@]}"
fi
