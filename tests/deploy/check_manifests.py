#!/usr/bin/env python3
"""Checks deploy/ against the real binaries and the metric names epserve exports.

  check_manifests.py --router-bin PATH --worker-bin PATH --repo REPO_ROOT

Standard library only. The Kubernetes manifests are read with a small parser for
the block-style YAML subset they are written in (block_yaml.py); anything outside
that subset is reported as an error (so a construct it cannot read fails the test
instead of being skipped). Every problem found is printed; the exit code is 1 if any.
"""

import argparse
import json
import os
import re
import subprocess
import sys

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
DASHBOARD = "deploy/grafana/epserve-dashboard.json"
BINARIES = ("epserve-router", "epserve-worker")

failures = []


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
                cmd = c.get("command") or []
                binary = os.path.basename(str(cmd[0])) if cmd else None
                if binary not in binaries:
                    fail(f"{where}: command {cmd} is not one of {list(binaries)}")
                    continue
                args = parse_args(c.get("args"), where)
                known = binaries[binary]
                for name in args:
                    if known and name not in known:
                        fail(f"{where}: --{name.replace('_', '-')} is not a flag of {binary} "
                             f"(its --help lists: {', '.join(sorted(known))})")
                env = {e.get("name") for e in c.get("env") or []}
                for a in c.get("args") or []:
                    for var in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(a)):
                        if var not in env:
                            fail(f"{where}: arg '{a}' uses $({var}), which is not in env "
                                 "(Kubernetes would pass it literally)")
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
    listen_port = port_of(flag("epserve-router", "listen"), f"{rwhere} --listen")
    control_port = port_of(flag("epserve-router", "control_listen"), f"{rwhere} --control-listen")
    if control_port is not None:
        resolve_port(rc, control_port, f"{rwhere} --control-listen")
        if control_port == listen_port:
            fail(f"{rwhere}: --control-listen and --listen share port {listen_port}")
    rmetrics_port = port_of(flag("epserve-router", "metrics_listen"), f"{rwhere} --metrics-listen")
    for p in (listen_port, rmetrics_port):
        if p is not None:
            resolve_port(rc, p, f"{rwhere} --listen/--metrics-listen")
    drain = flag("epserve-router", "drain_timeout_s")
    grace = rspec.get("terminationGracePeriodSeconds")
    if grace is None:
        fail(f"{rwhere}: no terminationGracePeriodSeconds (default 30 must exceed the drain timeout)")
    elif drain is None or not str(drain).isdigit():
        fail(f"{rwhere}: cannot tell --drain-timeout-s ({drain!r})")
    elif not int(grace) > int(drain):
        fail(f"{rwhere}: terminationGracePeriodSeconds {grace} must exceed --drain-timeout-s {drain}")
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
    else:
        resolve_port(rc, port, f"{rwhere} livenessProbe")
        if kind == "grpc":
            # grpc.health.v1 is NOT_SERVING while a worker is missing: a liveness
            # probe on it would restart the router (and with it every worker).
            fail(f"{rwhere}: livenessProbe must not use grpc health (it depends on the workers)")
        if kind == "httpGet" and port_num(rc, port) == rmetrics_port and lp["httpGet"].get("path") != "/metrics":
            fail(f"{rwhere}: livenessProbe on the metrics port must GET /metrics")
    model = flag("epserve-router", "model")
    rmounts = mounts_by_path(rspec, rc)
    if not model or model not in rmounts:
        fail(f"{rwhere}: --model {model!r} is not a volume mountPath of the router container "
             f"({sorted(rmounts)})")

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
    wmetrics_port = port_of(flag("epserve-worker", "metrics_listen"), f"{wwhere} --metrics-listen")
    if wmetrics_port is not None:
        resolve_port(wc, wmetrics_port, f"{wwhere} --metrics-listen")
    lp = wc.get("livenessProbe") or {}
    if "httpGet" not in lp or lp["httpGet"].get("path") != "/metrics" or \
            port_num(wc, lp["httpGet"].get("port")) != wmetrics_port:
        fail(f"{wwhere}: livenessProbe must be httpGet /metrics on the --metrics-listen port "
             f"{wmetrics_port}")
    env = {e.get("name"): e for e in wc.get("env") or []}

    def env_field(value):
        m = re.fullmatch(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(value or ""))
        e = env.get(m.group(1)) if m else None
        return (((e or {}).get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath")

    if env_field(wargs.get("collective_host")) != "status.podIP":
        fail(f"{wwhere}: --collective-host must be $(VAR) with VAR from fieldRef status.podIP")
    rank_src = env_field(wargs.get("rank"))
    if rank_src != "metadata.labels['apps.kubernetes.io/pod-index']":
        fail(f"{wwhere}: --rank must be $(VAR) with VAR from the pod-index label, got {rank_src!r}")
    if (env.get("NCCL_NVLS_ENABLE") or {}).get("value") != "0":
        fail(f"{wwhere}: env NCCL_NVLS_ENABLE must be \"0\"")
    device = str(flag("epserve-worker", "device") or "")
    resources = wc.get("resources") or {}
    gpus = (resources.get("limits") or {}).get("nvidia.com/gpu")
    if device.startswith("cuda"):
        # GPU workers: one GPU per pod (NCCL needs one GPU per rank), multicast off.
        if str(gpus) != "1":
            fail(f"{wwhere}: --device {device} needs resources.limits nvidia.com/gpu: 1, "
                 f"got {gpus!r}")
        requested = (resources.get("requests") or {}).get("nvidia.com/gpu")
        if requested is not None and str(requested) != str(gpus):
            fail(f"{wwhere}: resources.requests nvidia.com/gpu {requested!r} differs from the "
                 f"limit {gpus!r}")
        nvls = env.get("NCCL_NVLS_ENABLE") or {}
        if "valueFrom" in nvls or str(nvls.get("value")) != "0":
            fail(f"{wwhere}: GPU workers need env NCCL_NVLS_ENABLE: \"0\" as a literal value")
        debug = (env.get("NCCL_DEBUG") or {}).get("value")
        if debug is not None and debug not in ("VERSION", "WARN", "INFO", "TRACE"):
            fail(f"{wwhere}: env NCCL_DEBUG {debug!r} is not one of VERSION, WARN, INFO, TRACE")
        backend = flag("epserve-router", "collective_backend")
        if backend not in (None, "auto", "nccl"):
            fail(f"{wwhere}: GPU workers with one GPU each run over NCCL: the router's "
                 f"--collective-backend must be auto or nccl, got {backend!r}")
    wmounts = mounts_by_path(wspec, wc)
    shm = wmounts.get("/dev/shm")
    if not shm or ((shm.get("emptyDir") or {}).get("medium") != "Memory"):
        fail(f"{wwhere}: /dev/shm must be a memory-backed emptyDir")
    if model and model in rmounts:
        if model not in wmounts:
            fail(f"{wwhere}: workers must mount the model at the router's --model path {model} "
                 "(the router sends that path in the plan)")
        elif volume_source(wmounts[model]) != volume_source(rmounts[model]):
            fail(f"{wwhere}: the model volume at {model} differs from the router's")

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
    opts = ap.parse_args()
    REPO = os.path.abspath(opts.repo)

    router_flags = help_flags(opts.router_bin)
    worker_flags = help_flags(opts.worker_bin)
    objects = []
    walk_kustomization(REPO, os.path.join(REPO, KUSTOMIZE_ROOT), objects, set())
    check_manifests(objects, router_flags, worker_flags)
    check_dashboard(os.path.join(REPO, DASHBOARD))

    failures[:] = list(dict.fromkeys(failures))  # one line per problem, first-seen order
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        print(f"{len(failures)} problem(s) in deploy/")
        return 1
    print(f"deploy/: {len(objects)} objects and the dashboard check out against "
          f"{os.path.basename(opts.router_bin)} and {os.path.basename(opts.worker_bin)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
