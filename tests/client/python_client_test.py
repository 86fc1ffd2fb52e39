"""tools/examples/python_client.py against a real router (one local CPU
worker, the bundled tiny model, API keys required): it prints the streamed
text and a final JSON line whose output_ids equal those `epserve generate
--json` reports for the same greedy request; without the key it is refused.

    python3 python_client_test.py --bin-dir build/bin --source-dir .
"""

import argparse
import importlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

PROMPT = "Hello, world! The capital of France is"


def fail(message):
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def require_modules():
    # A missing module fails the test (never skips it), naming the package.
    for module, package in (("grpc", "python3-grpcio"), ("grpc_tools.protoc", "python3-grpc-tools")):
        try:
            importlib.import_module(module)
        except ImportError as e:
            fail(
                f"{sys.executable} cannot import {module} ({e}): install the Debian package "
                f"{package} (tools/setup.sh installs it)"
            )


def run(argv, timeout=120):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        fail(f"{' '.join(argv)} exited {r.returncode}\nstdout:\n{r.stdout}\nstderr:\n{r.stderr}")
    return r


API_KEY = "python-client-test-key-0123456789"


def start_router(bin_dir, model, scratch):
    ports = os.path.join(scratch, "ports.json")
    keys = os.path.join(scratch, "api_keys")
    with open(keys, "w") as f:
        f.write(API_KEY + "\n")
    os.chmod(keys, 0o600)
    log = open(os.path.join(scratch, "router.log"), "w")
    router = subprocess.Popen(
        [
            os.path.join(bin_dir, "epserve-router"),
            f"--model={model}",
            "--local-workers=1",
            "--listen=127.0.0.1:0",
            "--metrics-listen=127.0.0.1:0",
            f"--ports-file={ports}",
            f"--api-key-file={keys}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    while not os.path.exists(ports):
        if router.poll() is not None or time.monotonic() > deadline:
            fail(f"the router did not start; log:\n{open(log.name).read()}")
        time.sleep(0.05)
    time.sleep(0.05)  # the file is written in one go; let the writer close it
    with open(ports) as f:
        return router, json.load(f)["grpc"], log.name, keys


def stop_router(router):
    if router.poll() is None:
        router.send_signal(signal.SIGTERM)
        try:
            router.wait(timeout=15)
        except subprocess.TimeoutExpired:
            router.kill()
            router.wait()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    args = parser.parse_args()
    require_modules()
    epserve = os.path.join(args.bin_dir, "epserve")
    example = os.path.join(args.source_dir, "tools", "examples", "python_client.py")
    model = os.path.join(args.source_dir, "checkpoints", "tiny-random-qwen3-moe")

    with tempfile.TemporaryDirectory(prefix="epserve_python_client_") as scratch:
        router, address, log, keys = start_router(args.bin_dir, model, scratch)
        try:
            health = subprocess.run(
                [epserve, "health", f"--server={address}", "--wait-serving-s=60"],
                capture_output=True, text=True, timeout=90,
            )
            if health.returncode != 0:
                fail(f"the router is not serving: {health.stdout}{health.stderr}\n"
                     f"router log:\n{open(log).read()}")

            cli = run([epserve, "generate", f"--server={address}", f"--prompt={PROMPT}",
                       "--temperature=0", "--max-tokens=16", "--json", f"--api-key-file={keys}"])
            messages = [json.loads(line) for line in cli.stdout.splitlines() if line]
            completes = [m["complete"] for m in messages if "complete" in m]
            if len(completes) != 1:
                fail(f"epserve generate --json printed {len(completes)} complete messages:\n"
                     f"{cli.stdout}")
            cli_text = "".join(m["chunk"]["text"] for m in messages if "chunk" in m)

            py = run([sys.executable, example, f"--server={address}", f"--prompt={PROMPT}",
                      "--temperature=0", "--max-tokens=16", f"--api-key={API_KEY}"])
            refused = subprocess.run(
                [sys.executable, example, f"--server={address}", f"--prompt={PROMPT}",
                 "--max-tokens=1"],
                capture_output=True, text=True, timeout=60,
                env={k: v for k, v in os.environ.items() if k != "EPSERVE_API_KEY"})
            if refused.returncode == 0 or "UNAUTHENTICATED" not in refused.stderr:
                fail(f"without the key the client was not refused: exit {refused.returncode}, "
                     f"stderr {refused.stderr!r}")
            lines = py.stdout.rstrip("\n").split("\n")
            final = json.loads(lines[-1])
            for key in ("finish_reason", "usage", "output_ids"):
                if key not in final:
                    fail(f"the final line has no {key}: {lines[-1]}")
            if final["output_ids"] != completes[0]["output_ids"]:
                fail(f"output_ids differ: python {final['output_ids']}, "
                     f"epserve {completes[0]['output_ids']}")
            if final["usage"]["completion_tokens"] != len(final["output_ids"]):
                fail(f"usage.completion_tokens {final['usage']} != {len(final['output_ids'])} ids")
            streamed = "\n".join(lines[:-1])
            if streamed != cli_text:
                fail(f"streamed text {streamed!r} != epserve's {cli_text!r}")
            print(f"OK: {len(final['output_ids'])} tokens, finish_reason {final['finish_reason']}")
        finally:
            stop_router(router)


if __name__ == "__main__":
    main()
