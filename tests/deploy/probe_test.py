#!/usr/bin/env python3
"""The manifests' probes against the real binaries: what the kubelet would see.

  probe_test.py --bin-dir BUILD/bin --repo REPO_ROOT

Reads the router's and the workers' probes from deploy/k8s (Deployment,
StatefulSet) and deploy/k8s/lws (LeaderWorkerSet), maps each probe's port to the
flag that opens it (--listen, --control-listen, --metrics-listen), starts a router
(--workers 1, a cluster secret) and later one CPU worker on the bundled tiny model
on loopback ports, and probes as the kubelet does (grpc.health.v1 Check with the
probe's service, plaintext; HTTP GET):

  * before the worker joins: every liveness probe passes, the router's readiness
    fails (NOT_SERVING: no group yet);
  * after it joined: every liveness and readiness probe passes.

So a liveness probe that depended on the workers, or a readiness probe that did
not, fails here. Needs python3-grpcio (Debian, tools/setup.sh).
"""

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

from block_yaml import load_yaml_documents

ROLES = {"listen": "grpc", "control_listen": "control", "metrics_listen": "metrics"}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def containers(repo):
    """[(where, binary, {flag: value}, container)] of every epserve container."""
    out = []
    for rel in ("deploy/k8s/router.yaml", "deploy/k8s/worker.yaml",
                "deploy/k8s/lws/leaderworkerset.yaml"):
        for doc in load_yaml_documents(os.path.join(repo, rel)):
            specs = []
            spec = (doc or {}).get("spec") or {}
            if "template" in spec:
                specs.append(spec["template"].get("spec") or {})
            lwt = spec.get("leaderWorkerTemplate") or {}
            for t in ("leaderTemplate", "workerTemplate"):
                if t in lwt:
                    specs.append(lwt[t].get("spec") or {})
            for ps in specs:
                for c in ps.get("containers") or []:
                    binary = os.path.basename(str((c.get("command") or [""])[0]))
                    flags = {}
                    for a in c.get("args") or []:
                        m = re.fullmatch(r"--([A-Za-z0-9_-]+)=(.*)", str(a))
                        if m:
                            flags[m.group(1).replace("-", "_")] = m.group(2)
                    out.append((f"{rel} container {c.get('name')}", binary, flags, c))
    return out


def probe_targets(where, flags, c, probe_name, defaults):
    """(kind, role, service or path) of C's PROBE_NAME, the role being the flag
    whose port it probes; None when there is no such probe."""
    probe = c.get(probe_name)
    if not probe:
        return None
    ports = {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}
    for kind in ("grpc", "httpGet"):
        if kind in probe:
            port = probe[kind].get("port")
            port = ports.get(port, port)
            for flag, role in ROLES.items():
                value = flags.get(flag, defaults.get(flag, ""))
                if value.rsplit(":", 1)[-1] == str(port):
                    extra = probe[kind].get("service", "") if kind == "grpc" else probe[kind].get("path")
                    return kind, role, extra
            raise SystemExit(f"FAIL: {where}: {probe_name} port {port} is none of the ports "
                             f"its flags open ({', '.join(ROLES)})")
    raise SystemExit(f"FAIL: {where}: {probe_name} is neither grpc nor httpGet")


def grpc_health(grpc, address, service):
    channel = grpc.insecure_channel(address)
    try:
        check = channel.unary_unary("/grpc.health.v1.Health/Check")
        data = service.encode()
        request = (b"\x0a" + bytes([len(data)]) + data) if data else b""
        response = check(request, timeout=3)
        return {b"\x08\x01": "SERVING", b"\x08\x02": "NOT_SERVING"}.get(response, repr(response))
    except grpc.RpcError as e:
        return f"{e.code().name} ({e.details()})"
    finally:
        channel.close()


def http_get(address, path):
    try:
        with urllib.request.urlopen(f"http://{address}{path}", timeout=3) as r:
            return r.status
    except OSError as e:
        return str(e)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--repo", required=True)
    opts = ap.parse_args()
    try:
        import grpc
    except ImportError as e:
        print(f"FAIL: cannot import grpc ({e}): install python3-grpcio (tools/setup.sh)")
        return 1
    repo = os.path.abspath(opts.repo)
    probes = []  # (where, binary, probe name, kind, role, service/path)
    for where, binary, flags, c in containers(repo):
        defaults = {"metrics_listen": "0.0.0.0:9401"} if binary == "epserve-worker" else {}
        for name in ("readinessProbe", "livenessProbe", "startupProbe"):
            t = probe_targets(where, flags, c, name, defaults)
            if t:
                probes.append((where, binary, name) + t)
    if not any(p[1] == "epserve-router" and p[2] == "readinessProbe" for p in probes):
        print("FAIL: no router readinessProbe in the manifests")
        return 1

    failures = []
    with tempfile.TemporaryDirectory(prefix="epserve_probe_test.") as tmp:
        secret = os.path.join(tmp, "secret")
        with open(secret, "w") as f:
            f.write(os.urandom(24).hex() + "\n")
        os.chmod(secret, 0o600)
        ports_file = os.path.join(tmp, "ports.json")
        model = os.path.join(repo, "checkpoints", "tiny-random-qwen3-moe")
        router = subprocess.Popen(
            [os.path.join(opts.bin_dir, "epserve-router"), "--model", model, "--workers", "1",
             "--cluster-secret-file", secret, "--listen", "127.0.0.1:0",
             "--control-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
             "--ports-file", ports_file, "--log-level", "warn"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "router.log"), "w"))
        worker = None
        try:
            for _ in range(300):
                if os.path.exists(ports_file) and os.path.getsize(ports_file) > 0:
                    break
                if router.poll() is not None:
                    break
                time.sleep(0.1)
            with open(ports_file) as f:
                addr = json.load(f)
            worker_metrics = f"127.0.0.1:{free_port()}"
            addr_of = {("epserve-router", role): addr[role] for role in ROLES.values()}
            addr_of[("epserve-worker", "metrics")] = worker_metrics

            def probe_all(phase, expect_ready):
                for where, binary, name, kind, role, extra in probes:
                    if binary == "epserve-worker" and worker is None:
                        continue
                    address = addr_of.get((binary, role))
                    if kind == "grpc":
                        got = grpc_health(grpc, address, extra or "")
                        ok = got == "SERVING"
                    else:
                        got = http_get(address, extra or "/")
                        ok = got == 200
                    want = ok if (name != "readinessProbe" or expect_ready) else not ok
                    print(f"{phase}: {where} {name} {kind} {role} -> {got}")
                    if not want:
                        failures.append(f"{phase}: {where}: {name} ({kind} on the {role} port) "
                                        f"got {got}, expected it to "
                                        f"{'pass' if expect_ready or name != 'readinessProbe' else 'fail'}")

            probe_all("no worker yet", expect_ready=False)
            worker = subprocess.Popen(
                [os.path.join(opts.bin_dir, "epserve-worker"), "--router", addr["control"],
                 "--cluster-secret-file", secret, "--metrics-listen", worker_metrics,
                 "--cpu-threads", "1", "--log-level", "warn"],
                stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, "worker.log"), "w"))
            deadline = time.time() + 120
            while time.time() < deadline and grpc_health(grpc, addr["grpc"], "") != "SERVING":
                if worker.poll() is not None or router.poll() is not None:
                    break
                time.sleep(0.2)
            probe_all("worker joined", expect_ready=True)
        finally:
            for p in (worker, router):
                if p is not None and p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        p.kill()
        if failures:
            for name in ("router.log", "worker.log"):
                path = os.path.join(tmp, name)
                if os.path.exists(path):
                    with open(path) as f:
                        print(f"--- {name}\n{f.read()[-3000:]}")
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        return 1
    print(f"probes: {len(probes)} probes of the manifests behave as intended against the binaries")
    return 0


if __name__ == "__main__":
    sys.exit(main())
