#!/usr/bin/env python3
"""Checks deploy/ against the real binaries, the Kubernetes schemas and the metric names epserve exports.

  check_manifests.py --router-bin PATH --worker-bin PATH --repo REPO_ROOT [--schemas DIR]

The Kubernetes manifests are read with a small parser for the block-style YAML
subset they are written in (block_yaml.py); anything outside that subset is
reported as an error (so a construct it cannot read fails the test instead of
being skipped). Two kustomization trees are checked: deploy/k8s (router
Deployment, worker StatefulSet) and deploy/k8s/lws (LeaderWorkerSet). Every object
is validated strictly against the Kubernetes 1.27 schemas (npm kubernetes-models,
tools/fetch_k8s_schemas.sh), the ServiceMonitor CRD schema and the committed
LeaderWorkerSet schema (k8s_schemas.py; python3-jsonschema), and every pod template
against the "restricted" Pod Security Standard. Where kubectl is on PATH, both trees
are rendered with `kubectl kustomize` too. Every problem found is printed, naming
the manifest and the field; the exit code is 1 if any.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys

import k8s_schemas
from block_yaml import YamlError, load_yaml_documents

# --------------------------------------------------------------------------
# Metric names the dashboard may use: what the router and the worker export, read
# from their sources (exported_metrics()), plus the planned ones below.

# Sources whose `.Name("epserve_...")` registrations are exported metrics.
METRIC_SOURCE_DIRS = ("router", "worker")

# Planned metrics, not exported by any binary yet (none at present): name -> type.
# Panels that use them say PLANNED_NOTE in their description. When one is built,
# delete it here (the sources then provide it) and drop the note from its panels.
PLANNED_METRICS = {}
PLANNED_NOTE = "(available with expert parallelism)"

KUSTOMIZE_ROOT = "deploy/k8s"
LWS_ROOT = "deploy/k8s/lws"
# The image name the manifests use; each tree's kustomization sets the real one
# (images: name epserve -> newName/newTag).
IMAGE = "epserve"
# Environment variables the LeaderWorkerSet controller adds to every container.
LWS_ENV = ("LWS_LEADER_ADDRESS", "LWS_GROUP_SIZE", "LWS_WORKER_INDEX")
DASHBOARD = "deploy/grafana/epserve-dashboard.json"
BINARIES = ("epserve-router", "epserve-worker")

failures = []
KUSTOMIZATIONS = {}  # relative directory -> its parsed kustomization.yaml


def fail(msg):
    failures.append(msg)


# --------------------------------------------------------------------------
# Kustomization tree


def walk_kustomization(repo, kdir, objects, seen):
    kdir = os.path.normpath(kdir)
    if kdir in seen:
        return
    seen.add(kdir)
    rel = os.path.relpath(kdir, repo)
    kfile = os.path.join(kdir, "kustomization.yaml")
    if not os.path.isfile(kfile):
        fail(f"{rel}: no kustomization.yaml")
        return
    try:
        (k,) = load_yaml_documents(kfile)
    except (YamlError, ValueError) as e:
        fail(f"cannot read {os.path.relpath(kfile, repo)}: {e}")
        return
    KUSTOMIZATIONS[rel] = k
    listed = set()
    for field in ("resources", "components"):
        for entry in k.get(field) or []:
            target = os.path.join(kdir, entry)
            if os.path.isdir(target):
                walk_kustomization(repo, target, objects, seen)
            elif os.path.isfile(target):
                listed.add(os.path.normpath(target))
                try:
                    for doc in load_yaml_documents(target):
                        if doc is not None:
                            objects.append((os.path.relpath(target, repo), doc))
                except (YamlError, ValueError) as e:
                    fail(f"cannot read {os.path.relpath(target, repo)}: {e}")
            else:
                fail(f"{rel}/kustomization.yaml: {field} entry '{entry}' does not exist")
    for gen in (k.get("configMapGenerator") or []) + (k.get("secretGenerator") or []):
        for entry in gen.get("files") or []:
            path = entry.split("=", 1)[-1]
            target = os.path.normpath(os.path.join(kdir, path))
            if not os.path.isfile(target):
                fail(f"{rel}/kustomization.yaml: generator '{gen.get('name')}' file '{path}' "
                     "does not exist")
            elif not target.startswith(kdir + os.sep):
                # kustomize refuses files outside the kustomization root by default.
                fail(f"{rel}/kustomization.yaml: generator file '{path}' is outside {rel}")
            listed.add(target)
        objects.append((f"{rel}/kustomization.yaml", {
            "kind": "ConfigMap" if gen in (k.get("configMapGenerator") or []) else "Secret",
            "metadata": {"name": gen.get("name"),
                         "labels": dict(((k.get("generatorOptions") or {}).get("labels") or {}),
                                        **((gen.get("options") or {}).get("labels") or {}))},
            "_files": [e.split("=", 1)[-1] for e in gen.get("files") or []],
            "_dir": kdir,
        }))
    for p in k.get("patches") or []:
        if isinstance(p, dict) and p.get("path"):
            target = os.path.normpath(os.path.join(kdir, p["path"]))
            if not os.path.isfile(target):
                fail(f"{rel}/kustomization.yaml: patch '{p['path']}' does not exist")
            listed.add(target)
    # A manifest next to the kustomization that it does not list is never applied.
    for name in sorted(os.listdir(kdir)):
        path = os.path.normpath(os.path.join(kdir, name))
        if name.endswith((".yaml", ".yml")) and name != "kustomization.yaml" and path not in listed:
            fail(f"{rel}/{name} is not listed in {rel}/kustomization.yaml")


# --------------------------------------------------------------------------
# Binaries


def help_flags(binary):
    """{flag_name_with_underscores: default text} from BINARY --help."""
    try:
        r = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=20)
    except OSError as e:
        fail(f"cannot run {binary} --help: {e}")
        return {}
    text = r.stdout + r.stderr
    flags = {}
    # Abseil: "  --name (help, wrapped over lines); default: VALUE;" per flag.
    starts = list(re.finditer(r"^\s+--([A-Za-z0-9_]+) \(", text, re.M))
    for n, m in enumerate(starts):
        end = starts[n + 1].start() if n + 1 < len(starts) else len(text)
        entry = " ".join(text[m.end():end].split())
        d = re.search(r"\); default: (.*?);(?: |$)", entry)
        default = d.group(1) if d else None
        if default and default.startswith('"') and default.endswith('"'):
            default = default[1:-1]
        flags[m.group(1)] = default
    if not flags:
        fail(f"{binary} --help listed no flags (output changed?):\n{text[:500]}")
    return flags


def norm(flag):
    return flag.replace("-", "_")


def parse_args(args, where):
    """Container args -> {flag (underscored): value or None}."""
    out, i = {}, 0
    args = [str(a) for a in args or []]
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            fail(f"{where}: argument '{a}' is not a --flag (the binaries take no positionals)")
            i += 1
            continue
        name, eq, value = a[2:].partition("=")
        if not eq:
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value, i = args[i + 1], i + 1
            else:
                value = None
        if norm(name) in out:
            fail(f"{where}: --{name} given twice")
        out[norm(name)] = value
        i += 1
    return out


def port_of(hostport, where):
    m = re.fullmatch(r"(.*):([0-9]+)", hostport or "")
    if not m:
        fail(f"{where}: '{hostport}' is not HOST:PORT")
        return None
    return int(m.group(2))


# --------------------------------------------------------------------------
# Manifest checks


def containers_of(obj):
    spec = (((obj.get("spec") or {}).get("template") or {}).get("spec")) or {}
    return spec, spec.get("containers") or []


def container_ports(c):
    return {p.get("name"): p.get("containerPort") for p in c.get("ports") or []}


def resolve_port(c, port, where):
    """A probe / targetPort value (number or name) -> container port number."""
    ports = container_ports(c)
    if isinstance(port, int):
        if port not in ports.values():
            fail(f"{where}: port {port} is not a containerPort of '{c.get('name')}' "
                 f"({sorted(v for v in ports.values() if v)})")
        return port
    if port not in ports:
        fail(f"{where}: named port '{port}' is not declared by container '{c.get('name')}'")
        return None
    return ports[port]


def probe_port(probe):
    for kind in ("grpc", "httpGet", "tcpSocket"):
        if kind in probe:
            return kind, probe[kind].get("port")
    return None, None


def selects(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def container_command(c, binaries, where, injected_env=()):
    """(binary, {flag: value}) of container C, checking its flags against the
    binary's --help and its $(VAR)s against its env (plus INJECTED_ENV, variables a
    controller adds); (None, None) when it runs none of BINARIES."""
    cmd = c.get("command") or []
    binary = os.path.basename(str(cmd[0])) if cmd else None
    if binary not in binaries:
        fail(f"{where}: command {cmd} is not one of {list(binaries)}")
        return None, None
    args = parse_args(c.get("args"), where)
    known = binaries[binary]
    for name in args:
        if known and name not in known:
            fail(f"{where}: --{name.replace('_', '-')} is not a flag of {binary} "
                 f"(its --help lists: {', '.join(sorted(known))})")
    env = {e.get("name") for e in c.get("env") or []} | set(injected_env)
    for a in c.get("args") or []:
        for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(a)):
            if var not in env:
                fail(f"{where}: arg '{a}' uses $({var}), which is not in env "
                     "(Kubernetes would pass it literally)")
    return binary, args


def check_router_probes(rwhere, rc, router_flag):
    """The router's readiness (grpc health "" on --listen) and liveness (never
    the client port's health, which follows the workers)."""
    listen_port = port_of(router_flag("listen"), f"{rwhere} --listen")
    control_port = port_of(router_flag("control_listen"), f"{rwhere} --control-listen")
    metrics_port = port_of(router_flag("metrics_listen"), f"{rwhere} --metrics-listen")
    rp = rc.get("readinessProbe") or {}
    if "grpc" not in rp:
        fail(f"{rwhere}: readinessProbe must be a native grpc probe")
    else:
        resolve_port(rc, rp["grpc"].get("port"), f"{rwhere} readinessProbe")
        if rp["grpc"].get("port") != listen_port:
            fail(f"{rwhere}: readinessProbe grpc port {rp['grpc'].get('port')} != --listen port "
                 f"{listen_port}")
        if rp["grpc"].get("service") not in (None, ""):
            fail(f"{rwhere}: readinessProbe must check the overall health service \"\"")
    lp = rc.get("livenessProbe") or {}
    kind, port = probe_port(lp)
    if kind is None:
        fail(f"{rwhere}: no livenessProbe")
        return
    resolve_port(rc, port, f"{rwhere} livenessProbe")
    if kind == "grpc":
        # grpc.health.v1 on the client port is NOT_SERVING while a worker is
        # missing: a liveness probe on it would restart the router (and with it
        # every worker). The control listener's own health service stays SERVING.
        if port_num(rc, port) != control_port:
            fail(f"{rwhere}: a grpc livenessProbe must be on the --control-listen port "
                 f"{control_port} (the health of --listen depends on the workers)")
        if lp["grpc"].get("service") not in (None, ""):
            fail(f"{rwhere}: the grpc livenessProbe must check the overall health service \"\"")
        if router_flag("control_tls_cert"):
            fail(f"{rwhere}: --control-tls-cert is set: the kubelet's grpc probe speaks "
                 "plaintext and cannot pass the control port's TLS; use httpGet /metrics")
    if kind == "httpGet" and port_num(rc, port) == metrics_port and \
            lp["httpGet"].get("path") != "/metrics":
        fail(f"{rwhere}: livenessProbe on the metrics port must GET /metrics")


def check_shm(where, pod_spec, c):
    shm = mounts_by_path(pod_spec, c).get("/dev/shm")
    if not shm or ((shm.get("emptyDir") or {}).get("medium") != "Memory"):
        fail(f"{where}: /dev/shm must be a memory-backed emptyDir")
    elif not (shm.get("emptyDir") or {}).get("sizeLimit"):
        fail(f"{where}: the /dev/shm emptyDir needs a sizeLimit (it counts against the "
             "memory limit)")


def check_gpu_worker(where, c, device, router_backend):
    """A cuda worker: one GPU of its own, NCCL settings."""
    if not device.startswith("cuda"):
        return
    env = {e.get("name"): e for e in c.get("env") or []}
    resources = c.get("resources") or {}
    gpus = (resources.get("limits") or {}).get("nvidia.com/gpu")
    if str(gpus) != "1":
        fail(f"{where}: --device {device} needs resources.limits nvidia.com/gpu: 1, got {gpus!r}")
    requested = (resources.get("requests") or {}).get("nvidia.com/gpu")
    if requested is not None and str(requested) != str(gpus):
        fail(f"{where}: resources.requests nvidia.com/gpu {requested!r} differs from the "
             f"limit {gpus!r}")
    nvls = env.get("NCCL_NVLS_ENABLE") or {}
    if "valueFrom" in nvls or str(nvls.get("value")) != "0":
        fail(f"{where}: GPU workers need env NCCL_NVLS_ENABLE: \"0\" as a literal value")
    debug = (env.get("NCCL_DEBUG") or {}).get("value")
    if debug is not None and debug not in ("VERSION", "WARN", "INFO", "TRACE"):
        fail(f"{where}: env NCCL_DEBUG {debug!r} is not one of VERSION, WARN, INFO, TRACE")
    if router_backend not in (None, "auto", "nccl"):
        fail(f"{where}: GPU workers with one GPU each run over NCCL: the router's "
             f"--collective-backend must be auto or nccl, got {router_backend!r}")


def env_field_path(c, value):
    """fieldRef.fieldPath of the env var that VALUE, "$(VAR)", names in C."""
    env = {e.get("name"): e for e in c.get("env") or []}
    m = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(value or ""))
    e = env.get(m.group(1)) if m else None
    return (((e or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")


def check_router_container(rwhere, rspec, rc, router_flag):
    """Ports, drain vs grace period, probes and model mount of the router container.
    Returns (listen port, control port, metrics port, --model, {mountPath: volume})."""
    listen_port = port_of(router_flag("listen"), f"{rwhere} --listen")
    control_port = port_of(router_flag("control_listen"), f"{rwhere} --control-listen")
    if control_port is not None:
        resolve_port(rc, control_port, f"{rwhere} --control-listen")
        if control_port == listen_port:
            fail(f"{rwhere}: --control-listen and --listen share port {listen_port}")
    rmetrics_port = port_of(router_flag("metrics_listen"), f"{rwhere} --metrics-listen")
    for p in (listen_port, rmetrics_port):
        if p is not None:
            resolve_port(rc, p, f"{rwhere} --listen/--metrics-listen")
    drain = router_flag("drain_timeout_s")
    grace = rspec.get("terminationGracePeriodSeconds")
    if grace is None:
        fail(f"{rwhere}: no terminationGracePeriodSeconds (default 30 must exceed the drain timeout)")
    elif drain is None or not str(drain).isdigit():
        fail(f"{rwhere}: cannot tell --drain-timeout-s ({drain!r})")
    elif not int(grace) > int(drain):
        fail(f"{rwhere}: terminationGracePeriodSeconds {grace} must exceed --drain-timeout-s {drain}")
    check_router_probes(rwhere, rc, router_flag)
    model = router_flag("model")
    rmounts = mounts_by_path(rspec, rc)
    if not model or model not in rmounts:
        fail(f"{rwhere}: --model {model!r} is not a volume mountPath of the router container "
             f"({sorted(rmounts)})")
    return listen_port, control_port, rmetrics_port, model, rmounts


def check_worker_container(wwhere, wspec, wc, wargs, worker_flag, router_backend, model, rmounts):
    """Metrics port and liveness, collective host, GPU and NCCL settings, /dev/shm
    and the model mount of a worker container. Returns its metrics port."""
    wmetrics_port = port_of(worker_flag("metrics_listen"), f"{wwhere} --metrics-listen")
    if wmetrics_port is not None:
        resolve_port(wc, wmetrics_port, f"{wwhere} --metrics-listen")
    # The worker serves no gRPC (it is a client of the control plane): no grpc
    # probe can reach it; its /metrics endpoint is up from the start.
    lp = wc.get("livenessProbe") or {}
    if "httpGet" not in lp or lp["httpGet"].get("path") != "/metrics" or \
            port_num(wc, lp["httpGet"].get("port")) != wmetrics_port:
        fail(f"{wwhere}: livenessProbe must be httpGet /metrics on the --metrics-listen port "
             f"{wmetrics_port}")
    if env_field_path(wc, wargs.get("collective_host")) != "status.podIP":
        fail(f"{wwhere}: --collective-host must be $(VAR) with VAR from fieldRef status.podIP")
    env = {e.get("name"): e for e in wc.get("env") or []}
    if (env.get("NCCL_NVLS_ENABLE") or {}).get("value") != "0":
        fail(f"{wwhere}: env NCCL_NVLS_ENABLE must be \"0\"")
    check_gpu_worker(wwhere, wc, str(worker_flag("device") or ""), router_backend)
    check_shm(wwhere, wspec, wc)
    wmounts = mounts_by_path(wspec, wc)
    if model and model in rmounts:
        if model not in wmounts:
            fail(f"{wwhere}: workers must mount the model at the router's --model path {model} "
                 "(the router sends that path in the plan)")
        elif volume_source(wmounts[model]) != volume_source(rmounts[model]):
            fail(f"{wwhere}: the model volume at {model} differs from the router's")
    return wmetrics_port


def check_manifests(objects, router_flags, worker_flags):
    by_kind = {}
    for src, obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj:
            fail(f"{src}: a document without kind")
            continue
        if (obj.get("metadata") or {}).get("namespace"):
            fail(f"{src}: {obj['kind']}/{obj['metadata'].get('name')} sets a namespace "
                 "(the manifests are namespace-agnostic)")
        by_kind.setdefault(obj["kind"], []).append((src, obj))

    services = [o for _, o in by_kind.get("Service", [])]
    binaries = {"epserve-router": router_flags, "epserve-worker": worker_flags}
    found = {}  # binary -> (src, workload, container, parsed args)
    for kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        for src, obj in by_kind.get(kind, []):
            _, cs = containers_of(obj)
            for c in cs:
                where = f"{src}: {kind}/{obj['metadata']['name']} container '{c.get('name')}'"
                binary, args = container_command(c, binaries, where)
                if binary is None:
                    continue
                if binary in found:
                    fail(f"{where}: a second {binary} container")
                found[binary] = (src, obj, c, args)
    for binary in binaries:
        if binary not in found:
            fail(f"no workload runs {binary}")
    if len(found) < 2:
        return

    def flag(binary, name):
        _, _, _, args = found[binary]
        value = args.get(name)
        return value if value is not None else binaries[binary].get(name)

    # ---- router
    rsrc, rdep, rc, rargs = found["epserve-router"]
    rwhere = f"{rsrc}: {rdep['kind']}/{rdep['metadata']['name']}"
    rspec, _ = containers_of(rdep)
    if rdep["kind"] != "Deployment" or (rdep.get("spec") or {}).get("replicas") != 1:
        fail(f"{rwhere}: the router must be a Deployment with replicas: 1")
    if ((rdep.get("spec") or {}).get("strategy") or {}).get("type") != "Recreate":
        fail(f"{rwhere}: strategy must be Recreate (two routers must never run side by side)")
    listen_port, control_port, rmetrics_port, model, rmounts = check_router_container(
        rwhere, rspec, rc, lambda name: flag("epserve-router", name))

    # ---- workers
    wsrc, wss, wc, wargs = found["epserve-worker"]
    wwhere = f"{wsrc}: {wss['kind']}/{wss['metadata']['name']}"
    wspec, _ = containers_of(wss)
    if wss["kind"] != "StatefulSet":
        fail(f"{wwhere}: workers must be a StatefulSet")
    sspec = wss.get("spec") or {}
    if sspec.get("podManagementPolicy") != "Parallel":
        fail(f"{wwhere}: podManagementPolicy must be Parallel")
    workers = flag("epserve-router", "workers")
    if str(sspec.get("replicas")) != str(workers):
        fail(f"{wwhere}: replicas {sspec.get('replicas')} != router --workers {workers}")
    headless = [s for s in services if s["metadata"]["name"] == sspec.get("serviceName")]
    if not headless or (headless[0].get("spec") or {}).get("clusterIP") != "None":
        fail(f"{wwhere}: serviceName '{sspec.get('serviceName')}' is not a headless Service here")
    wmetrics_port = check_worker_container(
        wwhere, wspec, wc, wargs, lambda name: flag("epserve-worker", name),
        flag("epserve-router", "collective_backend"), model, rmounts)
    rank_src = env_field_path(wc, wargs.get("rank"))
    if rank_src != "metadata.labels['apps.kubernetes.io/pod-index']":
        fail(f"{wwhere}: --rank must be $(VAR) with VAR from the pod-index label, got {rank_src!r}")

    # ---- the workers reach the router
    router_addr = wargs.get("router") or ""
    rport = port_of(router_addr, f"{wwhere} --router")
    host = router_addr.rsplit(":", 1)[0].split(".")[0]
    svc = [s for s in services if s["metadata"]["name"] == host]
    tmpl_labels = ((rdep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    if not svc:
        fail(f"{wwhere}: --router host '{host}' is not a Service in the manifests")
    else:
        s = svc[0]
        sspec2 = s.get("spec") or {}
        if not selects(sspec2.get("selector"), tmpl_labels):
            fail(f"{wwhere}: Service {host} does not select the router pods")
        if not sspec2.get("publishNotReadyAddresses"):
            fail(f"{wwhere}: Service {host} needs publishNotReadyAddresses: true (the router only "
                 "becomes ready after the workers joined through it)")
        target = [p for p in sspec2.get("ports") or [] if p.get("port") == rport]
        if not target:
            fail(f"{wwhere}: Service {host} has no port {rport}")
        elif port_num(rc, target[0].get("targetPort", rport)) != control_port:
            fail(f"{wwhere}: Service {host} port {rport} does not lead to the router's "
                 f"--control-listen port {control_port} (workers register on the control plane)")

    # ---- the workers prove the cluster secret the router checks
    rsecret = secret_file_source(rspec, rc, flag("epserve-router", "cluster_secret_file"))
    wsecret = secret_file_source(wspec, wc, flag("epserve-worker", "cluster_secret_file"))
    if rsecret is None:
        fail(f"{rwhere}: --cluster-secret-file must be a file of a mounted Secret volume")
    if wsecret is None:
        fail(f"{wwhere}: --cluster-secret-file must be a file of a mounted Secret volume")
    if rsecret and wsecret and rsecret != wsecret:
        fail(f"{wwhere}: the workers' cluster secret {wsecret} is not the router's {rsecret}")
    keys = flag("epserve-router", "api_key_file")
    if keys and secret_file_source(rspec, rc, keys) is None:
        fail(f"{rwhere}: --api-key-file must be a file of a mounted Secret volume")

    # ---- every Service port leads to a containerPort of the pods it selects
    workloads = [(rdep, rc), (wss, wc)]
    for s in services:
        sel = (s.get("spec") or {}).get("selector") or {}
        where = f"Service/{s['metadata']['name']}"
        matched = [(w, c) for w, c in workloads
                   if selects(sel, ((w.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {})]
        if not matched:
            fail(f"{where}: selector {sel} matches no pods")
            continue
        for p in (s.get("spec") or {}).get("ports") or []:
            for _, c in matched:
                resolve_port(c, p.get("targetPort", p.get("port")), f"{where} port {p.get('name')}")
    client = [s for s in services if s["metadata"]["name"] == rdep["metadata"]["name"]]
    if not client:
        fail(f"no Service named {rdep['metadata']['name']} for clients")
    for s in client:
        for p in (s.get("spec") or {}).get("ports") or []:
            if control_port is not None and \
                    port_num(rc, p.get("targetPort", p.get("port"))) == control_port:
                fail(f"Service/{s['metadata']['name']}: the client Service exposes the control "
                     f"port {control_port} (port '{p.get('name')}')")
    else:
        ports = {p.get("port") for p in client[0]["spec"].get("ports") or []}
        if listen_port not in ports or rmetrics_port not in ports:
            fail(f"Service/{rdep['metadata']['name']}: must expose {listen_port} and {rmetrics_port}")

    # ---- ServiceMonitor scrapes the router's and the workers' metrics ports
    monitors = [o for _, o in by_kind.get("ServiceMonitor", [])]
    if not monitors:
        fail("no ServiceMonitor")
    for m in monitors:
        where = f"ServiceMonitor/{m['metadata']['name']}"
        if m.get("apiVersion") != "monitoring.coreos.com/v1":
            fail(f"{where}: apiVersion must be monitoring.coreos.com/v1")
        sel = ((m.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        eps = (m.get("spec") or {}).get("endpoints") or []
        scraped = set()
        for s in services:
            if not selects(sel, s["metadata"].get("labels") or {}):
                continue
            for ep in eps:
                for p in s["spec"].get("ports") or []:
                    if p.get("name") != ep.get("port"):
                        continue
                    for w, c in workloads:
                        wl = ((w.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
                        if selects(s["spec"].get("selector"), wl):
                            scraped.add((w["metadata"]["name"], port_num(c, p.get("targetPort", p.get("port")))))
                            if ep.get("path", "/metrics") != "/metrics":
                                fail(f"{where}: endpoint path must be /metrics")
        for w, port in ((rdep, rmetrics_port), (wss, wmetrics_port)):
            if (w["metadata"]["name"], port) not in scraped:
                fail(f"{where}: does not scrape {w['metadata']['name']} on its metrics port {port}")

    # ---- dashboard ConfigMap
    maps = [o for _, o in by_kind.get("ConfigMap", []) if "_files" in o]
    dash = [o for o in maps
            if any(os.path.normpath(os.path.join(o["_dir"], f)) ==
                   os.path.normpath(os.path.join(REPO, DASHBOARD)) for f in o["_files"])]
    if not dash:
        fail(f"no configMapGenerator in the kustomization tree generates {DASHBOARD}")
    elif str(dash[0]["metadata"]["labels"].get("grafana_dashboard")) != "1":
        fail(f"ConfigMap {dash[0]['metadata']['name']}: needs the label grafana_dashboard: \"1\"")


def port_num(c, port):
    if isinstance(port, int):
        return port
    return container_ports(c).get(port)


def mounts_by_path(pod_spec, c):
    vols = {v.get("name"): v for v in pod_spec.get("volumes") or []}
    return {m.get("mountPath"): vols.get(m.get("name"), {}) for m in c.get("volumeMounts") or []}


def secret_file_source(pod_spec, c, path):
    """(secretName, key) when `path` is a file of a Secret volume mounted in c."""
    if not path:
        return None
    for mpath, vol in mounts_by_path(pod_spec, c).items():
        prefix = str(mpath).rstrip("/") + "/"
        sec = vol.get("secret")
        if sec and str(path).startswith(prefix):
            return (sec.get("secretName"), str(path)[len(prefix):])
    return None


def volume_source(v):
    return json.dumps({k: x for k, x in v.items() if k != "name"}, sort_keys=True)


# --------------------------------------------------------------------------
# LeaderWorkerSet variant (deploy/k8s/lws)


def check_lws(objects, router_flags, worker_flags):
    """One LeaderWorkerSet: the leader pod runs the router (and possibly the
    worker of rank 0), the worker pods one worker each; group size, ranks, router
    address, restart and startup policies, probes, Services, ServiceMonitor."""
    by_kind = {}
    for src, obj in objects:
        if not isinstance(obj, dict) or "kind" not in obj:
            fail(f"{src}: a document without kind")
            continue
        if (obj.get("metadata") or {}).get("namespace"):
            fail(f"{src}: {obj['kind']}/{obj['metadata'].get('name')} sets a namespace "
                 "(the manifests are namespace-agnostic)")
        by_kind.setdefault(obj["kind"], []).append((src, obj))
    sets = by_kind.get("LeaderWorkerSet", [])
    if len(sets) != 1:
        fail(f"{LWS_ROOT}: expected one LeaderWorkerSet, found {len(sets)}")
        return
    src, lws = sets[0]
    name = lws["metadata"]["name"]
    where = f"{src}: LeaderWorkerSet/{name}"
    if lws.get("apiVersion") != "leaderworkerset.x-k8s.io/v1":
        fail(f"{where}: apiVersion must be leaderworkerset.x-k8s.io/v1")
    spec = lws.get("spec") or {}
    lwt = spec.get("leaderWorkerTemplate") or {}
    if lwt.get("restartPolicy") != "RecreateGroupOnPodRestart":
        fail(f"{where}: spec.leaderWorkerTemplate.restartPolicy must be RecreateGroupOnPodRestart "
             "(a group whose pod restarted re-forms as a whole)")
    if spec.get("startupPolicy", "LeaderCreated") != "LeaderCreated":
        fail(f"{where}: spec.startupPolicy must be LeaderCreated: the router only turns ready "
             "after the workers joined, so LeaderReady would never create them")
    leader_tmpl, worker_tmpl = lwt.get("leaderTemplate"), lwt.get("workerTemplate")
    if not leader_tmpl or not worker_tmpl:
        fail(f"{where}: needs spec.leaderWorkerTemplate.leaderTemplate and workerTemplate")
        return
    size = lwt.get("size", 1)
    binaries = {"epserve-router": router_flags, "epserve-worker": worker_flags}
    templates = {}  # "leader"/"worker" -> (pod spec, labels, {binary: (container, args)})
    for role, tmpl in (("leader", leader_tmpl), ("worker", worker_tmpl)):
        pod_spec = tmpl.get("spec") or {}
        found = {}
        for c in pod_spec.get("containers") or []:
            cwhere = f"{where} {role}Template container '{c.get('name')}'"
            binary, args = container_command(c, binaries, cwhere, injected_env=LWS_ENV)
            if binary is None:
                continue
            if binary in found:
                fail(f"{cwhere}: a second {binary} container in the {role} pod")
            found[binary] = (c, args)
        templates[role] = (pod_spec, (tmpl.get("metadata") or {}).get("labels") or {}, found)
    lspec, llabels, lfound = templates["leader"]
    wspec, wlabels, wfound = templates["worker"]
    if "epserve-router" not in lfound:
        fail(f"{where}: the leader pod must run epserve-router")
        return
    if "epserve-router" in wfound:
        fail(f"{where}: the worker pods must not run epserve-router")
    if "epserve-worker" not in wfound:
        fail(f"{where}: the worker pods must run epserve-worker")
        return
    rc, rargs = lfound["epserve-router"]

    def rflag(n):
        return rargs.get(n) if rargs.get(n) is not None else router_flags.get(n)

    rwhere = f"{where} leaderTemplate"
    listen_port, control_port, rmetrics_port, model, rmounts = check_router_container(
        rwhere, lspec, rc, rflag)
    workers = rflag("workers")
    leader_runs_worker = "epserve-worker" in lfound
    per_group = (int(size) - 1) + (1 if leader_runs_worker else 0)
    if str(workers) != str(per_group):
        fail(f"{where}: the router's --workers {workers} != the workers of a group ({per_group}: "
             f"size {size} {'with' if leader_runs_worker else 'less'} the leader)")
    ep = rflag("expert_parallel")
    if str(ep) not in ("0", str(workers)):
        fail(f"{where}: --expert-parallel {ep} must be 0 or the group's worker count {workers}")
    secret = secret_file_source(lspec, rc, rflag("cluster_secret_file"))
    if secret is None:
        fail(f"{rwhere}: --cluster-secret-file must be a file of a mounted Secret volume")
    keys = rflag("api_key_file")
    if keys and secret_file_source(lspec, rc, keys) is None:
        fail(f"{rwhere}: --api-key-file must be a file of a mounted Secret volume")

    worker_ports = []  # (pod labels, container, metrics port)
    for role, (pod_spec, labels, found) in templates.items():
        if "epserve-worker" not in found:
            continue
        wc, wargs = found["epserve-worker"]
        wwhere = f"{where} {role}Template container '{wc.get('name')}'"

        def wflag(n, wargs=wargs):
            return wargs.get(n) if wargs.get(n) is not None else worker_flags.get(n)

        port = check_worker_container(wwhere, pod_spec, wc, wargs, wflag,
                                      rflag("collective_backend"), model, rmounts)
        worker_ports.append((labels, wc, port))
        # Ranks: LWS_WORKER_INDEX is 0 in the leader and 1..size-1 in the workers,
        # so it is the rank exactly when the leader runs rank 0.
        rank = str(wargs.get("rank"))
        by_label = env_field_path(wc, rank) == \
            "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']"
        if leader_runs_worker and rank != "$(LWS_WORKER_INDEX)" and not by_label:
            fail(f"{wwhere}: --rank must be $(LWS_WORKER_INDEX) (the pod's index in its group)")
        if not leader_runs_worker and rank not in ("None", "-1"):
            fail(f"{wwhere}: without a worker in the leader, LWS_WORKER_INDEX runs 1..size-1: "
                 "--rank must be -1 (the router assigns ranks)")
        router = str(wargs.get("router") or "")
        rport = port_of(router, f"{wwhere} --router")
        host = router.rsplit(":", 1)[0]
        allowed = ("$(LWS_LEADER_ADDRESS)",) + (("127.0.0.1", "localhost") if role == "leader" else ())
        if host not in allowed:
            fail(f"{wwhere}: --router must be {' or '.join(a + ':PORT' for a in allowed)}, "
                 f"got {router!r}")
        if rport is not None and control_port is not None and rport != control_port:
            fail(f"{wwhere}: --router port {rport} is not the router's --control-listen port "
                 f"{control_port}")
        wsecret = secret_file_source(pod_spec, wc, wflag("cluster_secret_file"))
        if wsecret is None:
            fail(f"{wwhere}: --cluster-secret-file must be a file of a mounted Secret volume")
        elif secret and wsecret != secret:
            fail(f"{wwhere}: the worker's cluster secret {wsecret} is not the router's {secret}")

    # ---- Services: every port leads to a containerPort of the pods it selects
    pods = [("leader", llabels, lspec), ("worker", wlabels, wspec)]
    services = [o for _, o in by_kind.get("Service", [])]
    for ssrc, s in by_kind.get("Service", []):
        sname = s["metadata"]["name"]
        swhere = f"{ssrc}: Service/{sname}"
        if sname == name:
            fail(f"{swhere}: the LWS controller creates the headless Service {name} "
                 "(LWS_LEADER_ADDRESS); give this one another name")
        sel = (s.get("spec") or {}).get("selector") or {}
        matched = [(role, ps) for role, labels, ps in pods if selects(sel, labels)]
        if not matched:
            fail(f"{swhere}: selector {sel} matches no pods")
        for role, ps in matched:
            for p in (s.get("spec") or {}).get("ports") or []:
                target = p.get("targetPort", p.get("port"))
                cs = ps.get("containers") or []
                if not any(port_num(c, target) is not None and
                           (isinstance(target, str) or target in container_ports(c).values())
                           for c in cs):
                    fail(f"{swhere} port {p.get('name')}: {target!r} is not a containerPort of "
                         f"the {role} pods")
    client = [s for s in services if s["metadata"]["name"] == "epserve-router"]
    if not client:
        fail(f"{LWS_ROOT}: no Service epserve-router for clients")
    for s in client:
        ports = {port_num(rc, p.get("targetPort", p.get("port"))) for p in s["spec"].get("ports") or []}
        if not selects(s["spec"].get("selector"), llabels) or selects(s["spec"].get("selector"), wlabels):
            fail("Service/epserve-router: must select the leader pods only")
        if control_port in ports:
            fail(f"Service/epserve-router: the client Service exposes the control port {control_port}")
        if listen_port not in ports or rmetrics_port not in ports:
            fail(f"Service/epserve-router: must expose {listen_port} and {rmetrics_port}")

    # ---- ServiceMonitor scrapes the router and every worker
    monitors = [o for _, o in by_kind.get("ServiceMonitor", [])]
    if not monitors:
        fail(f"{LWS_ROOT}: no ServiceMonitor")
    for m in monitors:
        mwhere = f"ServiceMonitor/{m['metadata']['name']}"
        sel = ((m.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        eps = {ep.get("port") for ep in (m.get("spec") or {}).get("endpoints") or []}
        scraped = set()  # (pod role, container name, port)
        for s in services:
            if not selects(sel, s["metadata"].get("labels") or {}):
                continue
            for p in s["spec"].get("ports") or []:
                if p.get("name") not in eps:
                    continue
                target = p.get("targetPort", p.get("port"))
                for role, labels, ps in pods:
                    if selects(s["spec"].get("selector"), labels):
                        for c in ps.get("containers") or []:
                            scraped.add((role, c.get("name"), port_num(c, target)))
        wanted = [("leader", rc.get("name"), rmetrics_port)]
        for labels, wc, port in worker_ports:
            wanted.append(("leader" if labels is llabels else "worker", wc.get("name"), port))
        for role, cname, port in wanted:
            if (role, cname, port) not in scraped:
                fail(f"{mwhere}: does not scrape container '{cname}' of the {role} pods on its "
                     f"metrics port {port}")


# --------------------------------------------------------------------------
# Pod Security Standard "restricted", images


# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral",
                      "persistentVolumeClaim", "projected", "secret"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range",
                "net.ipv4.ip_unprivileged_port_start", "net.ipv4.tcp_syncookies",
                "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout",
                "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes"}


def pod_templates(obj):
    """[(field path of the pod template, pod template)] of a workload object."""
    kind, spec = obj.get("kind"), obj.get("spec") or {}
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
        return [("spec.template", spec.get("template") or {})]
    if kind == "CronJob":
        return [("spec.jobTemplate.spec.template",
                 ((spec.get("jobTemplate") or {}).get("spec") or {}).get("template") or {})]
    if kind == "Pod":
        return [("", obj)]
    if kind == "LeaderWorkerSet":
        lwt = spec.get("leaderWorkerTemplate") or {}
        out = [("spec.leaderWorkerTemplate.workerTemplate", lwt.get("workerTemplate") or {})]
        if lwt.get("leaderTemplate"):
            out.insert(0, ("spec.leaderWorkerTemplate.leaderTemplate", lwt["leaderTemplate"]))
        return out
    return []


def check_pod_security(src, obj):
    """Every pod template of OBJ against the restricted Pod Security Standard
    (and read-only root filesystems with /tmp writable): one message per field."""
    ident = f"{src}: {obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
    for base, tmpl in pod_templates(obj):
        spec = tmpl.get("spec") or {}
        at = f"{base}.spec" if base else "spec"

        def bad(field, problem, at=at):
            fail(f"{ident}: {at}.{field}: {problem} (Pod Security Standard restricted)")

        psc = spec.get("securityContext") or {}
        for field in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(field):
                bad(field, "must not be true")
        for i, v in enumerate(spec.get("volumes") or []):
            types = [k for k in v if k != "name"]
            for t in types:
                if t not in RESTRICTED_VOLUMES:
                    bad(f"volumes[{i}]({v.get('name')}).{t}", "volume type not allowed "
                        f"(allowed: {', '.join(sorted(RESTRICTED_VOLUMES))})")
        if psc.get("runAsNonRoot") is not True:
            bad("securityContext.runAsNonRoot", "must be true")
        for field in ("runAsUser", "runAsGroup", "fsGroup"):
            value = psc.get(field)
            if not isinstance(value, int) or value == 0:
                bad(f"securityContext.{field}", f"must be a non-zero id, got {value!r}")
        if (psc.get("seccompProfile") or {}).get("type") not in ("RuntimeDefault", "Localhost"):
            bad("securityContext.seccompProfile.type", "must be RuntimeDefault (or Localhost)")
        for i, sysctl in enumerate(psc.get("sysctls") or []):
            if sysctl.get("name") not in SAFE_SYSCTLS:
                bad(f"securityContext.sysctls[{i}]", f"{sysctl.get('name')} is not a safe sysctl")
        for field in ("containers", "initContainers", "ephemeralContainers"):
            for i, c in enumerate(spec.get(field) or []):
                cat = f"{field}[{i}]({c.get('name')})"
                csc = c.get("securityContext") or {}
                if csc.get("allowPrivilegeEscalation") is not False:
                    bad(f"{cat}.securityContext.allowPrivilegeEscalation", "must be false")
                if csc.get("privileged"):
                    bad(f"{cat}.securityContext.privileged", "must not be true")
                caps = csc.get("capabilities") or {}
                if "ALL" not in (caps.get("drop") or []):
                    bad(f"{cat}.securityContext.capabilities.drop", "must contain ALL")
                for cap in caps.get("add") or []:
                    if cap != "NET_BIND_SERVICE":
                        bad(f"{cat}.securityContext.capabilities.add", f"{cap} is not allowed")
                if csc.get("runAsNonRoot") is False:
                    bad(f"{cat}.securityContext.runAsNonRoot", "must not be false")
                if csc.get("runAsUser") == 0:
                    bad(f"{cat}.securityContext.runAsUser", "must not be 0")
                profile = (csc.get("seccompProfile") or {}).get("type")
                if profile is not None and profile not in ("RuntimeDefault", "Localhost"):
                    bad(f"{cat}.securityContext.seccompProfile.type", f"{profile} is not allowed")
                if csc.get("procMount") not in (None, "Default"):
                    bad(f"{cat}.securityContext.procMount", "must be Default")
                for j, p in enumerate(c.get("ports") or []):
                    if p.get("hostPort"):
                        bad(f"{cat}.ports[{j}].hostPort", "must not be set")
                if field != "containers":
                    continue
                # Not part of the standard: epserve's own policy. The root
                # filesystem is read-only; /tmp (the image's HOME) is writable.
                if csc.get("readOnlyRootFilesystem") is not True:
                    fail(f"{ident}: {at}.{cat}.securityContext.readOnlyRootFilesystem: must be true")
                tmp = mounts_by_path(spec, c).get("/tmp")
                if not tmp or "emptyDir" not in tmp:
                    fail(f"{ident}: {at}.{cat}.volumeMounts: /tmp must be an emptyDir mount "
                         "(the only writable path with a read-only root filesystem)")
                res = c.get("resources") or {}
                for kind in ("requests", "limits"):
                    for r in ("cpu", "memory"):
                        if r not in (res.get(kind) or {}):
                            fail(f"{ident}: {at}.{cat}.resources.{kind}.{r}: must be set")


def image_of(kustomization):
    """{name: newName:newTag} from a kustomization's images: field."""
    out = {}
    for e in kustomization.get("images") or []:
        out[e.get("name")] = f"{e.get('newName') or e.get('name')}:{e.get('newTag') or 'latest'}"
    return out


def check_images(root, objects):
    """Containers name the image "epserve"; ROOT's kustomization maps it."""
    k = KUSTOMIZATIONS.get(root) or {}
    images = image_of(k)
    entries = [e for e in k.get("images") or [] if e.get("name") == IMAGE]
    if not entries:
        fail(f"{root}/kustomization.yaml: images: needs an entry with name {IMAGE} "
             "(newName / newTag: the image to run)")
    for e in entries:
        if not e.get("newName") or not e.get("newTag"):
            fail(f"{root}/kustomization.yaml: images entry {IMAGE} needs newName and newTag")
    for src, obj in objects:
        for base, tmpl in pod_templates(obj):
            for i, c in enumerate(((tmpl.get("spec") or {}).get("containers")) or []):
                if c.get("image") != IMAGE:
                    fail(f"{src}: {obj['kind']}/{obj['metadata']['name']}: {base}.spec.containers[{i}]"
                         f".image: must be '{IMAGE}' (kustomize's images: sets the registry and "
                         f"tag), got {c.get('image')!r}")
    return images


def rendered_images(kubectl, root):
    """Every container image in `kubectl kustomize ROOT`, or None on failure."""
    try:
        r = subprocess.run([kubectl, "kustomize", os.path.join(REPO, root)],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        fail(f"{root}: kubectl kustomize: {e}")
        return None
    if r.returncode != 0:
        fail(f"{root}: kubectl kustomize failed: {r.stderr.strip()[:1000]}")
        return None
    return re.findall(r"^\s*(?:- )?image: *\"?([^\s\"]+)", r.stdout, re.M)


# --------------------------------------------------------------------------
# Schemas


def import_jsonschema():
    try:
        import jsonschema
        return jsonschema
    except ImportError:
        pass
    # Debian's python3-jsonschema, for a python3 other than Debian's.
    debian = "/usr/lib/python3/dist-packages"
    if os.path.isdir(os.path.join(debian, "jsonschema")) and debian not in sys.path:
        sys.path.append(debian)
        try:
            import jsonschema
            return jsonschema
        except ImportError:
            pass
    fail("python3-jsonschema is not installed (tools/setup.sh installs it): the manifests "
         "cannot be validated against the Kubernetes schemas")
    return None


def validate_schemas(objects, schemas_dir):
    jsonschema = import_jsonschema()
    if jsonschema is None:
        return 0
    try:
        definitions = k8s_schemas.load_definitions(schemas_dir)
    except (k8s_schemas.SchemaError, OSError) as e:
        fail(f"Kubernetes schemas: {e}")
        return 0
    kinds = k8s_schemas.kinds(definitions)
    n = 0
    for src, obj in objects:
        if "_files" in obj:
            continue  # a generator's ConfigMap, made by kustomize
        key = (obj.get("apiVersion"), obj.get("kind"))
        ident = kinds.get(key)
        name = f"{obj.get('kind')}/{(obj.get('metadata') or {}).get('name')}"
        if ident is None:
            fail(f"{src}: {name}: no schema for apiVersion {key[0]} kind {key[1]}")
            continue
        for path, message in k8s_schemas.validate(jsonschema, definitions, ident, obj):
            fail(f"{src}: {name}: {path}: {message} (schema {ident})")
        n += 1
    return n


# --------------------------------------------------------------------------
# Dashboard

_BUILD_RE = re.compile(r"\bBuild(Counter|Gauge|Histogram|Summary|Info)\s*\(\s*\)")
_NAME_RE = re.compile(r'\.Name\(\s*"(epserve_[A-Za-z0-9_:]*)"\s*\)')


def exported_metrics(repo):
    """{name: type} for every .Name("epserve_...") in REPO/{router,worker}/**/*.cc.

    The type ("counter", "gauge", "histogram", ...) is that of the nearest
    prometheus::BuildX() before the .Name(...) call. Unit tests (*_test.cc) register
    no exported metrics and are skipped.
    """
    found = {}
    for top in METRIC_SOURCE_DIRS:
        root = os.path.join(repo, top)
        if not os.path.isdir(root):
            fail(f"{top}/: not found under {repo} (cannot read the exported metric names)")
            continue
        n_dir = 0
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for fn in sorted(filenames):
                if not fn.endswith(".cc") or fn.endswith("_test.cc"):
                    continue
                path = os.path.join(dirpath, fn)
                rel = os.path.relpath(path, repo)
                with open(path, encoding="utf-8", errors="replace") as f:
                    text = f.read()
                for m in _NAME_RE.finditer(text):
                    builds = list(_BUILD_RE.finditer(text, 0, m.start()))
                    if not builds:
                        fail(f"{rel}: cannot tell the type of metric {m.group(1)} "
                             "(no prometheus::BuildX() before its .Name)")
                        continue
                    kind = builds[-1].group(1).lower()
                    name = m.group(1)
                    if found.get(name, (kind,))[0] != kind:
                        fail(f"{rel}: metric {name} registered as {kind} and as {found[name][0]} "
                             f"({found[name][1]})")
                    found.setdefault(name, (kind, rel))
                    n_dir += 1
        if not n_dir:
            fail(f"{top}/: no .Name(\"epserve_...\") metric registration found in its *.cc files")
    return {name: kind for name, (kind, _) in found.items()}


PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or",
    "unless", "offset", "inf", "nan", "atan2",
}


def metric_names(expr):
    e = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)
    e = re.sub(r"\{[^{}]*\}", " ", e)          # label matchers
    e = re.sub(r"\[[^\[\]]*\]", " ", e)        # ranges, subqueries
    e = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r" ", e)
    names = set()
    for m in re.finditer(r"(?<![\w.$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?", e):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS:
            continue
        names.add(word)
    return names


def check_dashboard(path):
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        fail(f"{DASHBOARD}: {e}")
        return
    built = exported_metrics(REPO)
    for name in sorted(set(built) & set(PLANNED_METRICS)):
        fail(f"tests/deploy/check_manifests.py: {name} is exported now; remove it from "
             "PLANNED_METRICS")
    allowed = dict(PLANNED_METRICS, **built)
    series = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count")}
    used = set()

    def base_metric(name, where):
        if name in allowed:
            if allowed[name] == "histogram":
                fail(f"{where}: histogram {name} used without _bucket/_sum/_count")
            return name
        for kind, suffixes in series.items():
            for suffix in suffixes:
                if name.endswith(suffix) and allowed.get(name[: -len(suffix)]) == kind:
                    return name[: -len(suffix)]
        fail(f"{where}: unknown metric '{name}': not exported (no matching .Name(\"epserve_...\") "
             f"in {'/, '.join(METRIC_SOURCE_DIRS)}/ *.cc) and not in PLANNED_METRICS of "
             "tests/deploy/check_manifests.py")
        return None

    def exprs_of(panel):
        for t in panel.get("targets") or []:
            if "expr" in t:
                yield t["expr"]

    def walk(panels):
        for p in panels:
            yield p
            yield from walk(p.get("panels") or [])

    ids = set()
    panels = list(walk(dash.get("panels") or []))
    if not panels:
        fail(f"{DASHBOARD}: no panels")
    for p in panels:
        where = f"{DASHBOARD}: panel '{p.get('title')}'"
        if p.get("id") in ids:
            fail(f"{where}: duplicate id {p.get('id')}")
        ids.add(p.get("id"))
        if p.get("type") == "row":
            continue
        exprs = list(exprs_of(p))
        if not exprs:
            fail(f"{where}: no PromQL targets")
        planned = False
        for expr in exprs:
            names = metric_names(expr)
            if not names:
                fail(f"{where}: no metric in '{expr}'")
            for n in names:
                b = base_metric(n, where)
                if b:
                    used.add(b)
                    planned |= b in PLANNED_METRICS
        if planned and PLANNED_NOTE not in (p.get("description") or ""):
            fail(f"{where}: uses a planned metric; its description must say '{PLANNED_NOTE}'")
        if not planned and PLANNED_NOTE in (p.get("description") or ""):
            fail(f"{where}: says '{PLANNED_NOTE}' but only uses metrics that exist today")
    for v in (dash.get("templating") or {}).get("list") or []:
        if v.get("type") != "query":
            continue
        q = v.get("query")
        q = q.get("query") if isinstance(q, dict) else q
        m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", q or "")
        if not m:
            fail(f"{DASHBOARD}: variable '{v.get('name')}': expected label_values(METRIC, label)")
            continue
        for n in metric_names(m.group(1)):
            b = base_metric(n, f"{DASHBOARD}: variable '{v.get('name')}'")
            if b:
                used.add(b)
    for name in sorted(set(allowed) - used):
        fail(f"{DASHBOARD}: no panel shows {name}")


# --------------------------------------------------------------------------

REPO = None


def main():
    global REPO
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--router-bin", required=True)
    ap.add_argument("--worker-bin", required=True)
    ap.add_argument("--repo", required=True)
    ap.add_argument("--schemas", help="node_modules holding the Kubernetes schemas "
                    "(default: REPO/.cache/k8s_schemas/node_modules, tools/fetch_k8s_schemas.sh)")
    ap.add_argument("--kubectl", help="kubectl to render the kustomizations with "
                    "(default: kubectl on PATH, if any; 'none' skips it)")
    opts = ap.parse_args()
    REPO = os.path.abspath(opts.repo)
    schemas = opts.schemas or os.path.join(REPO, ".cache", "k8s_schemas", "node_modules")

    router_flags = help_flags(opts.router_bin)
    worker_flags = help_flags(opts.worker_bin)
    trees = {}
    for root in (KUSTOMIZE_ROOT, LWS_ROOT):
        trees[root] = []
        walk_kustomization(REPO, os.path.join(REPO, root), trees[root], set())
    check_manifests(trees[KUSTOMIZE_ROOT], router_flags, worker_flags)
    check_lws(trees[LWS_ROOT], router_flags, worker_flags)
    unique = {}
    for root, objects in trees.items():
        expected = check_images(root, objects)
        for src, obj in objects:
            unique.setdefault((src, obj.get("kind"), (obj.get("metadata") or {}).get("name")),
                              (src, obj))
        kubectl = opts.kubectl or shutil.which("kubectl")
        if kubectl and kubectl != "none":
            images = rendered_images(kubectl, root)
            want = expected.get(IMAGE)
            for image in images or []:
                if image != want:
                    fail(f"{root}: kubectl kustomize renders image {image!r}, expected {want!r} "
                         "(the images: entry)")
            if images is not None and not images:
                fail(f"{root}: kubectl kustomize rendered no container image")
        else:
            print(f"note: no kubectl on PATH: {root} not rendered with kubectl kustomize")
    for src, obj in unique.values():
        check_pod_security(src, obj)
    validated = validate_schemas(list(unique.values()), schemas)
    check_dashboard(os.path.join(REPO, DASHBOARD))

    failures[:] = list(dict.fromkeys(failures))  # one line per problem, first-seen order
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        print(f"{len(failures)} problem(s) in deploy/")
        return 1
    print(f"deploy/: {len(unique)} objects in {len(trees)} kustomization trees ({validated} "
          "validated against the Kubernetes, ServiceMonitor and LeaderWorkerSet schemas, pod "
          "templates restricted) and the dashboard check out against "
          f"{os.path.basename(opts.router_bin)} and {os.path.basename(opts.worker_bin)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
