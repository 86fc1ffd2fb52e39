#!/usr/bin/env python3
"""The command-line contracts of every epserve binary, run as a user would.

* `--help` exits 0 and prints the usage on stdout; `--version` exits 0 and
  prints "<program> <version> (<commit>, <build type>, <backends>)".
* An unknown flag, and another subcommand's flag, exit 2 naming the flag.
* Commands that promise JSON print exactly one JSON document on stdout (logs
  go to stderr): epserve-run inspect / tokenize / logits / generate,
  epserve info against a local cluster.
* `epserve health` on a cluster that is not serving explains why on stderr.
* The router fails fast, with the worker's own error, when a local worker
  exits during start-up (a truncated checkpoint).
* tools/quickstart.sh stops at once when the port it is told to use is taken.

Standard library only. Usage: cli_contract_test.py --bin-dir DIR --source-dir DIR
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import unittest

OPTS = None
VERSION_PREFIX = "0.1"


def run(args, timeout=60, env=None, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env, **kw)


def binary(name):
    return os.path.join(OPTS.bin_dir, name)


def tiny_model():
    return os.path.join(OPTS.source_dir, "checkpoints", "tiny-random-qwen3-moe")


class Router:
    """epserve-router on free ports (--ports-file), optionally with local workers."""

    def __init__(self, extra, wait_ports=True, env=None):
        self.dir = tempfile.mkdtemp(prefix="epserve-cli-")
        self.ports_file = os.path.join(self.dir, "ports.json")
        self.log = open(os.path.join(self.dir, "router.log"), "w+")
        self.proc = subprocess.Popen(
            [binary("epserve-router"), "--listen", "127.0.0.1:0", "--control-listen",
             "127.0.0.1:0", "--ports-file", self.ports_file] + extra,
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        self.ports = None
        if wait_ports:
            deadline = time.time() + 30
            while time.time() < deadline and self.proc.poll() is None:
                if os.path.exists(self.ports_file):
                    with open(self.ports_file) as f:
                        self.ports = json.load(f)
                    return
                time.sleep(0.05)
            raise AssertionError("router did not write its ports file:\n" + self.output())

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


class HelpAndVersion(unittest.TestCase):
    BINARIES = ["epserve-router", "epserve-worker", "epserve", "epserve-run"]

    def test_help_exits_zero_with_usage_on_stdout(self):
        for name in self.BINARIES:
            for flag in ["--help", "-h"]:
                r = run([binary(name), flag])
                self.assertEqual(r.returncode, 0, f"{name} {flag}: {r.stderr}")
                self.assertIn(name, r.stdout, f"{name} {flag} printed no usage on stdout")

    def test_version_names_program_version_and_build(self):
        for name in ["epserve-router", "epserve-worker", "epserve"]:
            r = run([binary(name), "--version"])
            self.assertEqual(r.returncode, 0, f"{name} --version: {r.stderr}")
            lines = r.stdout.strip().splitlines()
            self.assertEqual(len(lines), 1, f"{name} --version: {r.stdout!r}")
            line = lines[0]
            self.assertTrue(line.startswith(f"{name} {VERSION_PREFIX}"), line)
            self.assertNotIn("NDEBUG", line)
            self.assertIn("backend", line)
            self.assertRegex(line, r"\((git [0-9a-f]|no git)")
        r = run([binary("epserve-run"), "--version"])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(r.stdout.startswith(f"epserve-run {VERSION_PREFIX}"), r.stdout)

    def test_unknown_flag_is_an_error_naming_it(self):
        for name in ["epserve-router", "epserve-worker", "epserve"]:
            r = run([binary(name), "--no-such-flag=1"])
            self.assertEqual(r.returncode, 2, f"{name}: {r.stdout} {r.stderr}")
            self.assertIn("no_such_flag", r.stderr.replace("-", "_"))

    def test_subcommands_refuse_each_others_flags(self):
        cases = [
            (["bench", "--max-tokens", "3"], "max_tokens", "bench"),
            (["info", "--prompt", "hi"], "prompt", "info"),
            (["generate", "--prompt", "hi", "--num-prompts", "3"], "num_prompts", "generate"),
            (["health", "--json"], "json", "health"),
        ]
        for args, flag, command in cases:
            r = run([binary("epserve")] + args + ["--server", "127.0.0.1:1"])
            self.assertEqual(r.returncode, 2, f"epserve {args}: {r.stderr}")
            self.assertIn(f"--{flag} is not an option of '{command}'", r.stderr)
        # bench shares generate's --seed on purpose: parsed, then fails to connect.
        r = run([binary("epserve"), "bench", "--seed", "3", "--num-prompts", "1", "--server",
                 "127.0.0.1:1", "--timeout-s", "1"])
        self.assertNotIn("not an option", r.stderr)
        r = run([binary("epserve-run"), "tokenize", "--model", tiny_model(), "--text", "hi"])
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("--model", r.stderr)


class JsonOnStdout(unittest.TestCase):
    def assert_one_json(self, args, timeout=120):
        r = run(args, timeout=timeout)
        self.assertEqual(r.returncode, 0, f"{args}: {r.stderr}")
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            self.fail(f"{' '.join(args)}: stdout is not one JSON document ({e}):\n{r.stdout[:2000]}")

    def test_epserve_run_commands(self):
        model = tiny_model()
        tok = os.path.join(model, "tokenizer.json")
        self.assert_one_json([binary("epserve-run"), "inspect", "--model", model])
        ids = self.assert_one_json([binary("epserve-run"), "tokenize", "--tokenizer", tok,
                                    "--text", "Hello, world!"])
        self.assertTrue(ids)
        self.assert_one_json([binary("epserve-run"), "logits", "--model", model, "--token-ids",
                              "1,2,3"])
        self.assert_one_json([binary("epserve-run"), "logits", "--model", model, "--token-ids",
                              "1,2,3", "--dtype", "bfloat16"])
        self.assert_one_json([binary("epserve-run"), "generate", "--model", model, "--token-ids",
                              "1,2,3", "--max-tokens", "3"])

    def test_info_and_health_against_a_cluster(self):
        router = Router(["--model", tiny_model(), "--local-workers", "1"])
        try:
            server = router.ports["grpc"]
            r = run([binary("epserve"), "health", "--server", server, "--wait-serving-s", "60"],
                    timeout=90)
            self.assertEqual((r.returncode, r.stdout.strip()), (0, "SERVING"), r.stderr)
            info = self.assert_one_json([binary("epserve"), "info", "--server", server])
            self.assertEqual(info["server"]["state"], "CLUSTER_STATE_SERVING")
            # bench: results JSON per concurrency, tabulated by tools/plot_bench.py.
            files = []
            for c in (1, 2):
                out = os.path.join(router.dir, f"bench-{c}.json")
                r = run([binary("epserve"), "bench", "--server", server, "--num-prompts", "4",
                         "--max-concurrency", str(c), "--input-len", "8", "--output-len", "4",
                         "--json-out", out], timeout=120)
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertIn("epserve bench: 4 of 4 requests done (0 failed)", r.stderr)
                files.append(out)
            r = run([sys.executable, os.path.join(OPTS.source_dir, "tools", "plot_bench.py"),
                     "--table"] + files)
            self.assertEqual(r.returncode, 0, r.stderr)
            rows = [l for l in r.stdout.splitlines() if l.startswith("| grpc |")]
            self.assertEqual([row.split("|")[2].strip() for row in rows], ["1", "2"], r.stdout)
        finally:
            router.stop()

    def test_health_explains_not_serving(self):
        # Two ranks expected, none started: both missing, never registered.
        router = Router(["--model", tiny_model(), "--workers", "2"],
                        env=dict(os.environ, EPSERVE_CLUSTER_SECRET="cli-contract-test-secret"))
        try:
            r = run([binary("epserve"), "health", "--server", router.ports["grpc"]])
            self.assertEqual(r.returncode, 1)
            self.assertEqual(r.stdout.strip(), "NOT_SERVING")
            self.assertIn("cluster CLUSTER_STATE_FORMING", r.stderr)
            self.assertIn("rank 0: missing: no worker has registered for it", r.stderr)
            self.assertIn("rank 1: missing: no worker has registered for it", r.stderr)
        finally:
            router.stop()


class StartupFailures(unittest.TestCase):
    def test_router_fails_fast_with_the_workers_error(self):
        # The router next to a worker that fails at start-up as a worker does
        # (its error on stderr and in $EPSERVE_ERROR_FILE, exit 1): the
        # router stops at once with that error, instead of waiting.
        work = tempfile.mkdtemp(prefix="epserve-failing-worker-")
        try:
            shutil.copy2(binary("epserve-router"), os.path.join(work, "epserve-router"))
            worker = os.path.join(work, "epserve-worker")
            with open(worker, "w") as f:
                f.write("#!/bin/sh\n"
                        "msg='--device cuda:0: no CUDA device (cudaGetDeviceCount: no device)'\n"
                        "echo \"epserve-worker: error: $msg\" >&2\n"
                        "[ -n \"$EPSERVE_ERROR_FILE\" ] && echo \"$msg\" > \"$EPSERVE_ERROR_FILE\"\n"
                        "exit 1\n")
            os.chmod(worker, 0o755)
            start = time.time()
            r = run([os.path.join(work, "epserve-router"), "--model", tiny_model(),
                     "--local-workers", "2", "--listen", "127.0.0.1:0"], timeout=60)
            elapsed = time.time() - start
            self.assertEqual(r.returncode, 1, r.stderr)
            self.assertLess(elapsed, 20, "the router waited instead of failing fast")
            last = r.stderr.strip().splitlines()[-1]
            self.assertRegex(last, r"^epserve-router: error: local worker [01] \(cpu, pid \d+\) "
                                   r"exited with code 1 before the cluster served: --device cuda:0: "
                                   r"no CUDA device")
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def test_die_writes_the_error_file(self):
        # What the router reads: the real worker's fatal error, also in the file.
        work = tempfile.mkdtemp(prefix="epserve-error-file-")
        try:
            path = os.path.join(work, "error")
            r = run([binary("epserve-worker"), "--router", "127.0.0.1:1", "--kv-cache-memory-mb",
                     "0"], env=dict(os.environ, EPSERVE_ERROR_FILE=path))
            self.assertEqual(r.returncode, 2)
            with open(path) as f:
                self.assertEqual(f.read(), "--kv-cache-memory-mb must be positive\n")
            self.assertIn("epserve-worker: error: --kv-cache-memory-mb must be positive", r.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def test_quickstart_stops_when_its_port_is_taken(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        try:
            env = dict(os.environ, EPSERVE_PORT=str(port),
                       EPSERVE_BUILD_DIR=os.path.dirname(OPTS.bin_dir))
            start = time.time()
            r = run(["bash", os.path.join(OPTS.source_dir, "tools", "quickstart.sh")],
                    timeout=600, env=env)
            self.assertNotEqual(r.returncode, 0, r.stdout)
            self.assertIn(f"port {port} is in use", r.stderr)
            self.assertNotIn("== epserve generate", r.stdout)
            self.assertLess(time.time() - start, 300)
        finally:
            taken.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    parser.add_argument("--source-dir", required=True)
    OPTS, rest = parser.parse_known_args()
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
