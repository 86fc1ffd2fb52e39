#!/usr/bin/env bash
# Serving benchmark: starts a router with N local workers on a model and runs
# `epserve bench` at several concurrency caps, then prints a Markdown table
# (requests/s, output tokens/s, TTFT and ITL percentiles) and, from the
# router's metrics, the share of the wall time the workers spent in their
# forward passes (the rest is router, gRPC, detokenization and waiting).
# With expert parallelism (`-- --expert-parallel N`) it also reports, from
# the workers' metrics, the MoE dispatch + combine share of their step time.
#
#   tools/bench_serving.sh [--model DIR] [--workers N] [--concurrency "1 8 32"]
#                          [--prompts-per-client 16] [--input-len 128]
#                          [--output-len 64] [--out DIR] [-- extra router flags]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${EPSERVE_BUILD_DIR:-$root/build}/bin"
model="$root/checkpoints/tiny-random-qwen3-moe"
workers=1
concurrency="1 8 32"
per_client=16
input_len=128
output_len=64
out="$root/build/bench_serving"
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --workers) workers="$2"; shift 2 ;;
    --concurrency) concurrency="$2"; shift 2 ;;
    --prompts-per-client) per_client="$2"; shift 2 ;;
    --input-len) input_len="$2"; shift 2 ;;
    --output-len) output_len="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench_serving.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
for b in epserve-router epserve-worker epserve; do
  [ -x "$bin/$b" ] || { echo "bench_serving.sh: $bin/$b missing (run tools/build.sh)" >&2; exit 1; }
done

ports="$out/ports.json"
rm -f "$ports"
"$bin/epserve-router" --model "$model" --local-workers "$workers" --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --ports-file "$ports" --log-level warn "${extra[@]}" \
  > "$out/router.log" 2>&1 &
router=$!
trap 'kill -TERM $router 2>/dev/null || true; wait $router 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -f "$ports" ] && break; sleep 0.1; done
grpc=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["grpc"])' "$ports")
metrics=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metrics"])' "$ports")
"$bin/epserve" health --server "$grpc" --wait-serving-s 120 > /dev/null

# Sum of epserve_step_duration_seconds_sum over workers and phases (the
# workers' step time as reported to the router), and the router's own step
# time (epserve_router_step_seconds_sum).
step_seconds() {
  curl -s "http://$metrics/metrics" |
    awk '/^epserve_step_duration_seconds_sum/ { s += $2 }
         /^epserve_router_step_seconds_sum/ { r += $2 }
         END { printf "%.6f %.6f\n", s, r }'
}
worker_metrics=$("$bin/epserve" info --server "$grpc" |
  python3 -c 'import json,sys; print(" ".join(w["metrics_address"] for w in json.load(sys.stdin)["server"]["workers"]))')
# Over all workers: step seconds, MoE dispatch seconds, MoE combine seconds.
moe_seconds() {
  for m in $worker_metrics; do curl -s "http://$m/metrics"; done |
    awk '/^epserve_worker_step_seconds_sum/ { s += $2 }
         /^epserve_moe_dispatch_seconds_sum/ { d += $2 }
         /^epserve_moe_combine_seconds_sum/ { c += $2 }
         END { printf "%.6f %.6f %.6f\n", s, d, c }'
}

for c in $concurrency; do
  n=$((c * per_client))
  before=$(step_seconds)
  moe_before=$(moe_seconds)
  "$bin/epserve" bench --server "$grpc" --num-prompts "$n" --max-concurrency "$c" \
    --input-len "$input_len" --output-len "$output_len" --warmup "$c" --seed 1 \
    --json-out "$out/c$c.json" > "$out/c$c.txt"
  after=$(step_seconds)
  echo "$before $after" > "$out/c$c.steps"
  echo "$moe_before $(moe_seconds)" > "$out/c$c.moe"
done

python3 - "$out" "$workers" $concurrency <<'EOF'
import json, sys
out, workers, conc = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
print("| concurrency | requests | req/s | output tok/s | TTFT p50 ms | TTFT p99 ms | ITL p50 ms | ITL p99 ms | worker busy | router + gRPC / step | MoE exchange / step |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
for c in conc:
    j = json.load(open(f"{out}/c{c}.json"))
    before, router_before, after, router_after = map(float, open(f"{out}/c{c}.steps").read().split())
    # Warm-up requests ran before the timed window; their steps are in the
    # difference too, so the share is a slight overestimate.
    busy = (after - before) / (j["duration"] * workers)
    m = list(map(float, open(f"{out}/c{c}.moe").read().split()))
    step, exchange = m[3] - m[0], (m[4] - m[1]) + (m[5] - m[2])
    # Dispatch + combine time (all-to-all-v of rows and counts, regrouping,
    # and the wait for the slowest rank) over the workers' step time.
    share = f"{100 * exchange / step:.0f} %" if exchange > 0 and step > 0 else "-"
    # The router's step (scheduling, plans out, every result back, tokens
    # handled) minus the workers' Execute time: plan building, gRPC both
    # ways, detokenizing and streaming. Exact with one worker.
    router_step = router_after - router_before
    overhead = (f"{100 * (router_step - (after - before) / workers) / router_step:.1f} %"
                if router_step > 0 and after > before else "-")
    print(f"| {c} | {j['completed']} | {j['request_throughput']:.1f} | {j['output_throughput']:.0f} "
          f"| {j['median_ttft_ms']:.2f} | {j['p99_ttft_ms']:.2f} | {j['median_itl_ms']:.2f} "
          f"| {j['p99_itl_ms']:.2f} | {100 * busy:.0f} % | {overhead} | {share} |")
EOF
