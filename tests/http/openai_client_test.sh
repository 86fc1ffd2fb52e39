#!/usr/bin/env bash
# Starts a router with 2 local CPU workers on the tiny model and the HTTP API
# on a free port, then runs the official OpenAI Node client against it
# (openai_client_test.cjs). Usage: openai_client_test.sh BIN_DIR MODEL_DIR NODE_MODULES
set -euo pipefail
bin="$1" model="$2" modules="$3"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ ! -f "$modules/openai/package.json" ]; then
  echo "openai_client_test: the openai npm client is not in $modules; run tools/fetch_node_clients.sh" >&2
  exit 1
fi
scratch="$(mktemp -d "${TMPDIR:-/tmp}/epserve_openai_test.XXXXXX")"
router=""
cleanup() {
  if [ -n "$router" ]; then kill "$router" 2>/dev/null || true; wait "$router" 2>/dev/null || true; fi
  rm -rf "$scratch"
}
trap cleanup EXIT
"$bin/epserve-router" --model "$model" --local-workers 2 --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --ports-file "$scratch/ports.json" \
  --worker-cpu-threads 1 --log-level warn >"$scratch/router.log" 2>&1 &
router=$!
# Waits for the router's ports file (the router must stay up meanwhile).
wait_ports() {
  for _ in $(seq 1 600); do
    [ -s "$scratch/ports.json" ] && return 0
    kill -0 "$router" 2>/dev/null || { cat "$scratch/router.log" >&2; exit 1; }
    sleep 0.1
  done
  echo "openai_client_test: no ports file" >&2
  exit 1
}
wait_ports
field() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$scratch/ports.json" "$1"; }
http="$(field http)" grpc="$(field grpc)" metrics="$(field metrics)"
for _ in $(seq 1 600); do
  code="$(curl -s -o /dev/null -w '%{http_code}' "http://$http/health" || true)"
  [ "$code" = 200 ] && break
  sleep 0.1
done
[ "$code" = 200 ] || { echo "the router did not serve:" >&2; cat "$scratch/router.log" >&2; exit 1; }
NODE_PATH="$modules" EPSERVE_HTTP="http://$http" EPSERVE_GRPC="$grpc" EPSERVE_METRICS="$metrics" \
  EPSERVE_CLI="$bin/epserve" EPSERVE_MODEL="$(basename "$model")" node "$here/openai_client_test.cjs"
kill "$router"; wait "$router" 2>/dev/null || true; router=""

# API keys: the same --api-key-file as the gRPC API, as "Authorization: Bearer".
echo "sk-test-0123456789abcdef" >"$scratch/keys"
chmod 600 "$scratch/keys"
rm -f "$scratch/ports.json"
"$bin/epserve-router" --model "$model" --local-workers 1 --listen 127.0.0.1:0 \
  --metrics-listen 127.0.0.1:0 --http-listen 127.0.0.1:0 --ports-file "$scratch/ports.json" \
  --api-key-file "$scratch/keys" --worker-cpu-threads 1 --log-level warn >"$scratch/router.log" 2>&1 &
router=$!
wait_ports
http="$(field http)"
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$http/health")" = 200 ] && break
  sleep 0.1
done
expect() {  # expect STATUS SUBSTRING curl-args...
  local want="$1" text="$2"; shift 2
  local body code
  body="$(curl -s -w '\n%{http_code}' "$@")"
  code="${body##*$'\n'}"
  body="${body%$'\n'*}"
  if [ "$code" != "$want" ] || [[ "$body" != *"$text"* ]]; then
    echo "FAIL curl $*: expected $want with '$text', got $code: $body" >&2
    exit 1
  fi
}
expect 401 '"type":"authentication_error"' "http://$http/v1/models"
expect 401 'invalid API key' -H "Authorization: Bearer sk-wrong" "http://$http/v1/models"
expect 200 '"object":"list"' -H "Authorization: Bearer sk-test-0123456789abcdef" "http://$http/v1/models"
expect 200 '"version"' "http://$http/version"
expect 400 'not valid JSON' -H "Authorization: Bearer sk-test-0123456789abcdef" -d '{oops' "http://$http/v1/completions"
expect 413 'exceeds' -H "Authorization: Bearer sk-test-0123456789abcdef" -H 'Content-Length: 999999999' \
  -d '{}' "http://$http/v1/completions"
expect 404 'no route' -H "Authorization: Bearer sk-test-0123456789abcdef" "http://$http/v2/nothing"
# Key rotation without a restart: the file is re-read when it changes.
sleep 1.1  # a modification time the router has not seen
echo "sk-rotated-0123456789abcdef" >"$scratch/keys.new" && chmod 600 "$scratch/keys.new"
mv "$scratch/keys.new" "$scratch/keys"
for _ in $(seq 1 50); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer sk-rotated-0123456789abcdef" \
       "http://$http/v1/models")" = 200 ] && break
  sleep 0.1
done
expect 200 '"object":"list"' -H "Authorization: Bearer sk-rotated-0123456789abcdef" "http://$http/v1/models"
expect 401 'invalid API key' -H "Authorization: Bearer sk-test-0123456789abcdef" "http://$http/v1/models"
# A broken file (too short a key) keeps the keys in use.
sleep 1.1
echo "short" >"$scratch/keys.new" && chmod 600 "$scratch/keys.new" && mv "$scratch/keys.new" "$scratch/keys"
sleep 1.5
expect 200 '"object":"list"' -H "Authorization: Bearer sk-rotated-0123456789abcdef" "http://$http/v1/models"
echo "sk-test-0123456789abcdef" >"$scratch/keys.new" && chmod 600 "$scratch/keys.new" && mv "$scratch/keys.new" "$scratch/keys"
for _ in $(seq 1 50); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer sk-test-0123456789abcdef" \
       "http://$http/v1/models")" = 200 ] && break
  sleep 0.1
done
NODE_PATH="$modules" EPSERVE_HTTP="http://$http" EPSERVE_MODEL="$(basename "$model")" \
  EPSERVE_API_KEY=sk-test-0123456789abcdef node -e '
    const OpenAI = require("openai");
    const c = new OpenAI({ baseURL: process.env.EPSERVE_HTTP + "/v1", apiKey: process.env.EPSERVE_API_KEY });
    c.completions.create({ model: process.env.EPSERVE_MODEL, prompt: "hi", max_tokens: 2 })
      .then((r) => { if (r.choices.length !== 1) process.exit(1); console.log("ok   api key"); })
      .catch((e) => { console.log("FAIL api key: " + e); process.exit(1); });'
echo "openai_client_test: all passed"
