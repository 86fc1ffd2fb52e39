#!/usr/bin/python3
"""Worker faults against a real local cluster (router + --local-workers).

  fault_bench.py recovery --bin-dir build/bin [--expert-parallel] [--repeats 3]
      Streams greedy requests, SIGKILLs worker rank 1 mid-stream, and
      measures how long the streams stall (kill -> next token) and how long
      the router took from the loss to resuming the requests; every stream
      must end with exactly the tokens of an undisturbed run. Prints JSON.

  fault_bench.py soak --bin-dir build/bin --minutes 10
      Mixed traffic (greedy requests of several lengths, 30 % cancelled by
      the client at a random point) while workers are killed (SIGKILL) or
      stopped (SIGSTOP, then SIGKILL once declared lost) at random. Asserts
      that every request ends exactly once, that every request that
      completed carries the tokens of an undisturbed run, and that the
      cluster returns to idle (no running or waiting request, KV usage 0,
      router memory near its baseline). Prints a JSON summary; exit 1 on a
      violated assertion. Requests that arrive while a lost group is being
      replaced wait for it (at most 1 % may end UNAVAILABLE).

Logs go to stderr; stdout is the JSON only. Needs python3-grpcio and
python3-grpc-tools (tools/setup.sh installs them).
"""

import argparse
import importlib.util
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(REPO, "checkpoints", "tiny-random-qwen3-moe")


def log(msg):
    print(f"fault_bench: {msg}", file=sys.stderr, flush=True)


def fail(msg):
    print(f"fault_bench: FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def load_stubs(scratch):
    spec = importlib.util.spec_from_file_location(
        "python_client", os.path.join(REPO, "tools", "examples", "python_client.py"))
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    return client.compile_stubs(os.path.join(scratch, "stubs"))


class Cluster:
    """epserve-router with local workers, on loopback ports it picks."""

    def __init__(self, bin_dir, scratch, workers, expert_parallel, model, extra=()):
        import grpc  # noqa: PLC0415 (after the stubs check)

        self.grpc = grpc
        self.pb2, pb2_grpc = load_stubs(scratch)
        ports = os.path.join(scratch, "ports.json")
        self.log_path = os.path.join(scratch, "router.log")
        argv = [os.path.join(bin_dir, "epserve-router"), f"--model={model}",
                f"--local-workers={workers}", "--listen=127.0.0.1:0",
                "--metrics-listen=127.0.0.1:0", f"--ports-file={ports}",
                "--worker-timeout-ms=1500", "--heartbeat-interval-ms=200",
                "--collective-timeout-ms=5000", "--worker-cpu-threads=1", "--log-level=info"]
        if expert_parallel:
            argv.append(f"--expert-parallel={workers}")
        argv.extend(extra)
        self.router = subprocess.Popen(argv, stdout=open(self.log_path, "w"),
                                       stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while not os.path.exists(ports):
            if self.router.poll() is not None or time.monotonic() > deadline:
                fail(f"the router did not start:\n{open(self.log_path).read()}")
            time.sleep(0.05)
        time.sleep(0.05)
        with open(ports) as f:
            bound = json.load(f)
        self.address, self.metrics_address = bound["grpc"], bound["metrics"]
        self.channel = grpc.insecure_channel(self.address)
        self.stub = pb2_grpc.EpserveStub(self.channel)
        if not self.wait_serving(60):
            fail(f"the cluster did not serve:\n{open(self.log_path).read()}")

    def info(self):
        return self.stub.GetServerInfo(self.pb2.GetServerInfoRequest(), timeout=5)

    def serving(self):
        try:
            return self.info().state == self.pb2.CLUSTER_STATE_SERVING
        except self.grpc.RpcError:
            return False

    def wait_serving(self, seconds):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.serving():
                return True
            time.sleep(0.1)
        return False

    def worker_pid(self, rank):
        for w in self.info().workers:
            if w.rank == rank:
                return w.pid
        return None

    def metrics(self):
        with urllib.request.urlopen(f"http://{self.metrics_address}/metrics", timeout=5) as r:
            return r.read().decode()

    def metric(self, name):
        """Sum of every sample of `name` (any labels)."""
        total = 0.0
        for line in self.metrics().splitlines():
            m = re.match(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", line)
            if m:
                total += float(m.group(2))
        return total

    def router_rss_mib(self):
        with open(f"/proc/{self.router.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
        return 0.0

    def request(self, prompt_ids, max_tokens):
        req = self.pb2.GenerateRequest()
        req.token_ids.ids.extend(prompt_ids)
        p = req.sampling_params
        p.max_tokens = max_tokens
        p.temperature = 0.0
        p.ignore_eos = True
        return req

    def stop(self):
        if self.router.poll() is None:
            self.router.send_signal(signal.SIGTERM)
            try:
                self.router.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.router.kill()
                self.router.wait()


class Stream:
    """One Generate call on a thread: chunk arrival times, tokens, the end."""

    def __init__(self, cluster, req, cancel_after=None):
        self.cluster, self.req, self.cancel_after = cluster, req, cancel_after
        self.arrivals = []  # (monotonic time, tokens in the chunk)
        self.tokens = []
        self.completes = 0
        self.code = None
        self.message = ""
        self.finish_reason = None
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        call = self.cluster.stub.Generate(self.req, timeout=300)
        timer = None
        if self.cancel_after is not None:
            timer = threading.Timer(self.cancel_after, call.cancel)
            timer.start()
        try:
            for resp in call:
                kind = resp.WhichOneof("response")
                if kind == "chunk":
                    self.arrivals.append((time.monotonic(), len(resp.chunk.token_ids)))
                    self.tokens.extend(resp.chunk.token_ids)
                elif kind == "complete":
                    self.completes += 1
                    self.finish_reason = resp.complete.finish_reason
            self.code = self.cluster.grpc.StatusCode.OK
        except self.cluster.grpc.RpcError as e:
            self.code, self.message = e.code(), e.details() or ""
        finally:
            if timer is not None:
                timer.cancel()

    def join(self, timeout=None):
        self.thread.join(timeout)
        return not self.thread.is_alive()


def prompt(i):
    return [(17 * i + k) % 200 + 3 for k in range(2 + i % 5)]


def recovery(args):
    with tempfile.TemporaryDirectory(prefix="epserve_fault_bench_") as scratch:
        extra = []
        if args.survivors:
            extra.append("--survivor-grace-ms=0")
        if args.redundant_experts:
            extra.append("--redundant-experts")
        cluster = Cluster(args.bin_dir, scratch, args.workers, args.expert_parallel, args.model,
                          extra)
        try:
            reqs = [cluster.request(prompt(i), args.tokens) for i in range(args.streams)]
            undisturbed = [Stream(cluster, r) for r in reqs]
            for s in undisturbed:
                s.join()
            for i, s in enumerate(undisturbed):
                if s.code != cluster.grpc.StatusCode.OK or len(s.tokens) != args.tokens:
                    fail(f"undisturbed stream {i}: {s.code} {s.message}")
            gaps = []
            for s in undisturbed:
                times = [t for t, _ in s.arrivals]
                gaps.extend(b - a for a, b in zip(times, times[1:]))
            normal_gap = statistics.median(gaps) if gaps else 0.0
            runs = []
            for repeat in range(args.repeats):
                before = cluster.metric("epserve_recovery_seconds_sum")
                count_before = cluster.metric("epserve_recovery_seconds_count")
                streams = [Stream(cluster, r) for r in reqs]
                while sum(len(s.tokens) for s in streams) < args.streams * args.tokens // 4:
                    time.sleep(0.005)
                victim = cluster.worker_pid(1)
                killed = time.monotonic()
                os.kill(victim, signal.SIGKILL)
                first_wait = None
                if args.survivors:
                    # The survivors' group, then the full group when the
                    # restarted worker is back: two recoveries. The first
                    # (the loss's) is the sum when the count first moves.
                    deadline = time.monotonic() + 60
                    while (cluster.metric("epserve_recovery_seconds_count") < count_before + 1
                           and time.monotonic() < deadline):
                        time.sleep(0.005)
                    first_wait = cluster.metric("epserve_recovery_seconds_sum") - before
                for s in streams:
                    s.join()
                done = time.monotonic()
                stalls = []
                for i, s in enumerate(streams):
                    if s.code != cluster.grpc.StatusCode.OK:
                        fail(f"repeat {repeat} stream {i} ended {s.code}: {s.message}")
                    if s.tokens != undisturbed[i].tokens:
                        fail(f"repeat {repeat} stream {i}: tokens differ from the undisturbed run")
                    # The stall: the longest gap between two chunks around
                    # and after the kill (chunks already on their way arrive
                    # just after it).
                    times = [t for t, _ in s.arrivals]
                    gaps = [b - a for a, b in zip(times, times[1:]) if b > killed]
                    if gaps:
                        stalls.append(max(gaps))
                router_wait = cluster.metric("epserve_recovery_seconds_sum") - before
                if first_wait is not None:
                    router_wait = first_wait
                runs.append({"stall_s_median": statistics.median(stalls) if stalls else None,
                             "stall_s_max": max(stalls) if stalls else None,
                             "router_loss_to_resume_s": router_wait,
                             "kill_to_all_done_s": done - killed})
                log(f"repeat {repeat}: {runs[-1]}")
                if not cluster.wait_serving(60):
                    fail("the cluster did not serve again")
                # A worker that ran 10 s is restarted at once when it dies
                # (shorter runs back off): each repeat measures a first loss.
                time.sleep(10.5)
            print(json.dumps({
                "mode": "expert_parallel" if args.expert_parallel else "data_parallel",
                "survivors": args.survivors, "redundant_experts": args.redundant_experts,
                "workers": args.workers, "streams": args.streams, "tokens": args.tokens,
                "model": os.path.basename(args.model), "runs": runs,
                "undisturbed_chunk_gap_s_median": normal_gap,
                "stall_s_median": statistics.median(r["stall_s_median"] for r in runs),
                "router_loss_to_resume_s_median":
                    statistics.median(r["router_loss_to_resume_s"] for r in runs),
            }))
        finally:
            cluster.stop()


def soak(args):
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="epserve_soak_") as scratch:
        cluster = Cluster(args.bin_dir, scratch, args.workers, args.expert_parallel, args.model)
        try:
            lengths = [8, 32, 96]
            prompts = [prompt(i) for i in range(8)]
            reference = {}
            for i, p in enumerate(prompts):
                for n in lengths:
                    s = Stream(cluster, cluster.request(p, n))
                    s.join()
                    if s.code != cluster.grpc.StatusCode.OK:
                        fail(f"reference run {i}/{n}: {s.code} {s.message}")
                    reference[(i, n)] = s.tokens
            rss0 = cluster.router_rss_mib()
            end = time.monotonic() + args.minutes * 60
            live, finished, faults = [], [], []
            next_fault = time.monotonic() + rng.uniform(2, 6)
            while time.monotonic() < end:
                live = [s for s in live if not (s.join(0) and finished.append(s) is None)]
                while len(live) < args.concurrency:
                    i, n = rng.randrange(len(prompts)), rng.choice(lengths)
                    cancel = rng.uniform(0.0, 0.5) if rng.random() < 0.3 else None
                    s = Stream(cluster, cluster.request(prompts[i], n), cancel)
                    s.key = (i, n)
                    live.append(s)
                if time.monotonic() >= next_fault and cluster.serving():
                    rank = rng.randrange(args.workers)
                    pid = cluster.worker_pid(rank)
                    kind = rng.choice(["SIGKILL", "SIGSTOP"])
                    if pid:
                        log(f"{kind} worker rank {rank} (pid {pid})")
                        os.kill(pid, getattr(signal, kind))
                        if kind == "SIGSTOP":
                            # Declared lost after the worker timeout; then gone
                            # for good, as an operator or Kubernetes would.
                            time.sleep(2.0)
                            os.kill(pid, signal.SIGKILL)
                        faults.append(kind)
                    next_fault = time.monotonic() + rng.uniform(4, 10)
                time.sleep(0.02)
            for s in live:
                if not s.join(120):
                    fail("a stream did not end within 120 s after the soak")
                finished.append(s)
            if not cluster.wait_serving(60):
                fail("the cluster did not serve again after the soak")
            problems, codes = [], {}
            completed = cancelled = 0
            for s in finished:
                codes[str(s.code)] = codes.get(str(s.code), 0) + 1
                ok = s.code == cluster.grpc.StatusCode.OK
                if s.code == cluster.grpc.StatusCode.CANCELLED and s.completes == 1:
                    # The client's cancel raced the end: the request had
                    # completed (the complete message arrived) before it.
                    ok = True
                if ok and s.completes != 1:
                    problems.append(f"{s.key}: OK with {s.completes} complete messages")
                if not ok and s.completes != 0:
                    problems.append(f"{s.key}: {s.code} after a complete message")
                if ok:
                    completed += 1
                    if s.tokens != reference[s.key]:
                        problems.append(f"{s.key}: tokens differ from the undisturbed run")
                elif s.code == cluster.grpc.StatusCode.CANCELLED:
                    cancelled += 1
                elif s.code != cluster.grpc.StatusCode.UNAVAILABLE:
                    problems.append(f"{s.key}: ended {s.code}: {s.message}")
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                info = cluster.info()
                if info.requests_running == 0 and info.requests_waiting == 0:
                    break
                time.sleep(0.1)
            info = cluster.info()
            if info.requests_running or info.requests_waiting:
                problems.append(f"not idle: {info.requests_running} running, "
                                f"{info.requests_waiting} waiting")
            kv = cluster.metric("epserve_kv_cache_usage_ratio")
            if kv != 0:
                problems.append(f"KV usage {kv} after the soak")
            # Requests that arrive while a lost group is replaced wait for the
            # new one; only a rare request that lived through 3 losses ends
            # UNAVAILABLE.
            unavailable = codes.get(str(cluster.grpc.StatusCode.UNAVAILABLE), 0)
            if unavailable > len(finished) // 100:
                problems.append(f"{unavailable} of {len(finished)} requests ended UNAVAILABLE")
            rss1 = cluster.router_rss_mib()
            if rss1 > rss0 + 64:
                problems.append(f"router RSS grew from {rss0:.0f} to {rss1:.0f} MiB")
            summary = {"minutes": args.minutes, "requests": len(finished),
                       "completed": completed, "cancelled": cancelled, "by_code": codes,
                       "faults": {k: faults.count(k) for k in set(faults)},
                       "recovered": cluster.metric("epserve_requests_recovered_total"),
                       "router_rss_mib": [round(rss0), round(rss1)], "problems": problems}
            print(json.dumps(summary))
            if problems:
                fail(f"{len(problems)} problem(s): {problems[:5]}")
            if not faults or completed == 0:
                fail(f"the soak tested nothing: {len(faults)} faults, {completed} completed")
        finally:
            cluster.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="mode", required=True)
    for name in ("recovery", "soak"):
        p = sub.add_parser(name)
        p.add_argument("--bin-dir", default=os.path.join(REPO, "build", "bin"))
        p.add_argument("--model", default=MODEL)
        p.add_argument("--workers", type=int, default=2)
        p.add_argument("--expert-parallel", action="store_true")
    r = sub.choices["recovery"]
    r.add_argument("--streams", type=int, default=8)
    r.add_argument("--tokens", type=int, default=300)
    r.add_argument("--repeats", type=int, default=3)
    r.add_argument("--survivors", action="store_true",
                   help="--survivor-grace-ms=0: the survivors serve (taking over the lost "
                        "worker's experts) until the restarted worker is back")
    r.add_argument("--redundant-experts", action="store_true",
                   help="with --survivors and --expert-parallel: the survivors hold copies")
    s = sub.choices["soak"]
    s.add_argument("--minutes", type=float, default=10)
    s.add_argument("--concurrency", type=int, default=12)
    s.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    try:
        import grpc  # noqa: F401, PLC0415
    except ImportError as e:
        fail(f"cannot import grpc ({e}): install python3-grpcio (tools/setup.sh)")
    recovery(args) if args.mode == "recovery" else soak(args)


if __name__ == "__main__":
    main()
