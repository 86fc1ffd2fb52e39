#!/usr/bin/env python3
"""Checks Dockerfile and Dockerfile.cuda offline (no docker, no network).

  check_dockerfile.py --repo REPO_ROOT --bin-dir BUILD/bin

Standard library only, plus ldd, readelf and dpkg of this machine. What it checks:

Dockerfile (CPU image):
  * the build and runtime stages are Debian images of this machine's release
    (/etc/os-release), so that this machine's dpkg database can speak for them;
  * the build stage installs the build dependencies with tools/setup.sh and builds
    Release binaries with -DEPSERVE_CUDA=OFF, the targets it copies out;
  * every shared library the binaries of BUILD/bin link (ldd) belongs (dpkg -S)
    to a package the runtime stage installs, to the base image's libc6 /
    libstdc++6 / libgcc-s1 / zlib1g, or (for libraries the binaries do not link
    themselves) to a dependency of an installed package (dpkg's Depends). CUDA
    toolkit libraries are left out: the CPU image is built without CUDA. Every
    package the runtime stage installs provides a linked library, exists in this
    release, and is no -dev package;
Both:
  * the final stage's USER is a numeric non-root uid:gid, the one the
    Kubernetes manifests run as (runAsUser / runAsGroup in deploy/k8s);
  * every COPY source exists in the repository (COPY --from sources are
    binaries the build stage's ninja builds) and is not excluded by .dockerignore;
Dockerfile.cuda:
  * NVIDIA's CUDA 13 devel and runtime images (Ubuntu 24.04) of one CUDA version,
    -DEPSERVE_CUDA=ON, NCCL (libnccl-dev in the build stage, libnccl2 at run
    time), and the runtime packages derived in the build stage with dpkg -S
    (Ubuntu's package names cannot be checked here).

Every problem is printed naming the file and line; the exit code is 1 if any.
"""

import argparse
import fnmatch
import os
import re
import shlex
import subprocess
import sys

from block_yaml import YamlError, load_yaml_documents

BINARIES = ("epserve-router", "epserve-worker", "epserve", "epserve-run")
# In every Debian base image (apt and dpkg depend on them); the Dockerfile's
# runtime stage says so too.
BASE_PACKAGES = {"libc6", "libgcc-s1", "libstdc++6", "zlib1g"}
CUDA_PATH = re.compile(r"^/usr/local/cuda|/libcuda\.so|/libnccl\.so|/libcublas|/libcudart")

failures = []


def fail(msg):
    failures.append(msg)


# --------------------------------------------------------------------------
# Dockerfile parsing


class Instruction:
    def __init__(self, line, keyword, text):
        self.line, self.keyword, self.text = line, keyword, text

    def __repr__(self):
        return f"{self.keyword} {self.text}"


def parse_dockerfile(path):
    """[stages], each {"name", "from", "line", "instructions": [Instruction]}, and
    the ARGs declared before the first FROM ({name: default})."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    instructions, buf, start = [], "", None
    for n, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction
        if start is None:
            start = n
        if stripped.endswith("\\"):
            buf += stripped[:-1] + " "
            continue
        buf += stripped
        keyword, _, rest = buf.partition(" ")
        instructions.append(Instruction(start, keyword.upper(), rest.strip()))
        buf, start = "", None
    global_args, stages = {}, []
    for ins in instructions:
        if ins.keyword == "FROM":
            m = re.fullmatch(r"(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?", ins.text, re.I)
            stages.append({"from": m.group(1) if m else ins.text, "name": m.group(2) if m else None,
                           "line": ins.line, "instructions": []})
        elif not stages:
            if ins.keyword == "ARG":
                name, _, default = ins.text.partition("=")
                global_args[name.strip()] = default.strip()
        else:
            stages[-1]["instructions"].append(ins)
    return stages, global_args


def expand(text, args):
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)",
                  lambda m: args.get(m.group(1) or m.group(2), m.group(0)), text)


def apt_installs(stage):
    """[(line, package)] of every `apt-get install` in the stage's RUNs."""
    out = []
    for ins in stage["instructions"]:
        if ins.keyword != "RUN":
            continue
        for m in re.finditer(r"apt-get\s+install\s+(.*?)(?:&&|;|\|\||$)", ins.text):
            for tok in m.group(1).split():
                if tok.startswith("-") or tok.startswith("$") or "$(" in tok:
                    continue
                out.append((ins.line, tok))
    return out


def copies(stage):
    """[(line, --from stage or None, [sources], dest)] of the stage's COPY/ADD."""
    out = []
    for ins in stage["instructions"]:
        if ins.keyword not in ("COPY", "ADD"):
            continue
        toks = shlex.split(ins.text)
        frm = None
        rest = []
        for t in toks:
            if t.startswith("--from="):
                frm = t.split("=", 1)[1]
            elif t.startswith("--"):
                continue
            else:
                rest.append(t)
        if len(rest) < 2:
            fail(f"line {ins.line}: {ins.keyword} needs sources and a destination")
            continue
        out.append((ins.line, frm, rest[:-1], rest[-1]))
    return out


def final_user(stage):
    users = [ins for ins in stage["instructions"] if ins.keyword == "USER"]
    return users[-1] if users else None


# --------------------------------------------------------------------------
# .dockerignore


def dockerignore_patterns(repo):
    path = os.path.join(repo, ".dockerignore")
    if not os.path.isfile(path):
        return []
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                out.append(line.lstrip("/").rstrip("/"))
    return out


def ignored(path, patterns):
    """Whether .dockerignore PATTERNS exclude PATH (relative to the context), as
    Docker matches them: a pattern excludes a path it matches and everything
    below; ** matches any number of directories; !pattern re-includes."""
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    if not parts:
        return False
    result = False
    for pat in patterns:
        negate = pat.startswith("!")
        pat = pat[1:] if negate else pat
        regex = "^" + "/".join(
            ".*" if seg == "**" else fnmatch.translate(seg)[4:-3] for seg in pat.split("/")) + "$"
        regex = regex.replace("^.*/", "^(?:.*/)?")
        for i in range(1, len(parts) + 1):
            if re.match(regex, "/".join(parts[:i])):
                result = not negate
                break
    return result


# --------------------------------------------------------------------------
# Libraries and packages


def run(cmd):
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 1, str(e)
    return r.returncode, r.stdout + r.stderr


def linked_libraries(binary):
    """({soname: path or None}, {direct NEEDED sonames}) of BINARY."""
    rc, out = run(["ldd", binary])
    if rc != 0:
        fail(f"ldd {binary} failed: {out.strip()[:300]}")
        return {}, set()
    libs = {}
    for line in out.splitlines():
        m = re.match(r"\s*(\S+)\s+=>\s+(\S+)", line)
        if m:
            libs[m.group(1)] = m.group(2) if m.group(2).startswith("/") else None
    rc, out = run(["readelf", "-d", binary])
    needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)) if rc == 0 else set()
    return libs, needed


def lib_candidates(path):
    """The paths dpkg may know library PATH by: itself and its target, each with
    and without /usr (merged /usr: ldd says /lib, dpkg may say /usr/lib)."""
    real = os.path.realpath(path)
    out = []
    for p in (path, real):
        out += [p, "/usr" + p if not p.startswith("/usr/") else p[len("/usr"):]]
    return list(dict.fromkeys(out))


def owners(paths):
    """{library path: the Debian package holding it (through symlinks and the
    merged /usr)} for PATHS, with one dpkg -S call."""
    candidates = {p: lib_candidates(p) for p in paths}
    every = sorted({c for cs in candidates.values() for c in cs})
    _, out = run(["dpkg", "-S"] + every) if every else (0, "")
    by_path = {}
    for line in out.splitlines():
        if line.startswith(("diversion", "dpkg-query:")) or ": " not in line:
            continue
        pkgs, _, file = line.rpartition(": ")
        by_path.setdefault(file.strip(), pkgs.split(",")[0].split(":")[0].strip())
    result = {}
    for p, cs in candidates.items():
        result[p] = next((by_path[c] for c in cs if c in by_path), None)
    return result


def dependency_closure(packages):
    """Every installed package PACKAGES depend on (Depends, Pre-Depends),
    recursively; each alternative of an `a | b` counts."""
    _, out = run(["dpkg-query", "-W", "-f=${Package}\t${Depends}, ${Pre-Depends}\n"])
    deps = {}
    for line in out.splitlines():
        name, _, rest = line.partition("\t")
        deps.setdefault(name, set()).update(
            d.strip().split(" ")[0].split(":")[0] for d in re.split(r"[,|]", rest) if d.strip())
    seen, todo = set(), list(packages)
    while todo:
        p = todo.pop()
        if p not in seen:
            seen.add(p)
            todo.extend(deps.get(p, ()))
    return seen


def package_exists(p):
    rc, out = run(["dpkg-query", "-W", "-f=${Status}", p])
    if rc == 0 and "install ok installed" in out:
        return True
    rc, out = run(["apt-cache", "policy", p])
    return rc == 0 and re.search(r"Candidate: (?!\(none\))", out) is not None


def os_release():
    info = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                k, _, v = line.strip().partition("=")
                info[k] = v.strip('"')
    except OSError:
        pass
    return info


# --------------------------------------------------------------------------
# Checks


def cmake_targets(repo):
    """Names of the executables the CMake files define (epserve_executable / add_executable)."""
    names = set()
    for dirpath, dirnames, filenames in os.walk(repo):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "build"))]
        if "CMakeLists.txt" in filenames:
            with open(os.path.join(dirpath, "CMakeLists.txt"), encoding="utf-8") as f:
                names |= set(re.findall(r"(?:epserve_executable|add_executable)\(\s*([A-Za-z0-9_-]+)",
                                        f.read()))
    return names


def manifest_ids(repo):
    """{(runAsUser, runAsGroup)} of the pod templates in deploy/k8s/**."""
    ids = set()
    for dirpath, _, filenames in os.walk(os.path.join(repo, "deploy", "k8s")):
        for fn in filenames:
            if not fn.endswith(".yaml") or fn == "kustomization.yaml":
                continue
            try:
                docs = load_yaml_documents(os.path.join(dirpath, fn))
            except (YamlError, ValueError, OSError):
                continue  # check_manifests.py reports it

            def walk(node):
                if isinstance(node, dict):
                    sc = node.get("securityContext")
                    if isinstance(sc, dict) and "runAsUser" in sc and "containers" in node:
                        ids.add((sc.get("runAsUser"), sc.get("runAsGroup")))
                    for v in node.values():
                        walk(v)
                elif isinstance(node, list):
                    for v in node:
                        walk(v)
            for d in docs:
                walk(d)
    return ids


def check_common(name, stages, global_args, repo, patterns, targets):
    """USER, COPY sources, ninja targets: the checks both Dockerfiles share."""
    final = stages[-1]
    user = final_user(final)
    if user is None:
        fail(f"{name}: the final stage (line {final['line']}) has no USER: it would run as root")
    else:
        m = re.fullmatch(r"(\d+)(?::(\d+))?", user.text)
        if not m:
            fail(f"{name}:{user.line}: USER {user.text}: use a numeric uid:gid (Kubernetes' "
                 "runAsNonRoot can only verify a numeric user)")
        elif int(m.group(1)) == 0 or (m.group(2) is not None and int(m.group(2)) == 0):
            fail(f"{name}:{user.line}: USER {user.text} is root")
        else:
            uid = int(m.group(1))
            gid = int(m.group(2)) if m.group(2) else None
            for run_uid, run_gid in sorted(manifest_ids(repo), key=str):
                if run_uid != uid or (gid is not None and run_gid not in (None, gid)):
                    fail(f"{name}:{user.line}: USER {user.text} differs from the manifests' "
                         f"runAsUser/runAsGroup {run_uid}/{run_gid} (deploy/k8s)")
    built = set()
    for stage in stages:
        for ins in stage["instructions"]:
            if ins.keyword == "RUN":
                for m in re.finditer(r"ninja\s+(?:-\S+\s+\S+\s+)*((?:[A-Za-z0-9_-]+\s*)+)", ins.text):
                    built |= set(m.group(1).split())
    for n, stage in enumerate(stages):
        for line, frm, sources, _ in copies(stage):
            for src in sources:
                if frm:
                    if not any(s["name"] == frm for s in stages[:n]):
                        fail(f"{name}:{line}: COPY --from={frm}: no earlier stage of that name")
                    elif src.startswith("/build/bin/"):
                        target = src[len("/build/bin/"):]
                        if target not in built:
                            fail(f"{name}:{line}: COPY --from={frm} {src}: the build stage's ninja "
                                 f"does not build {target}")
                        if target not in targets:
                            fail(f"{name}:{line}: {target} is not an executable of the CMake files")
                    continue
                path = os.path.join(repo, src)
                if not os.path.exists(path):
                    fail(f"{name}:{line}: COPY source {src} does not exist in the repository")
                elif src not in (".", "./") and ignored(src, patterns):
                    fail(f"{name}:{line}: COPY source {src} is excluded by .dockerignore")
    copies_all = [s for stage in stages for _, frm, srcs, _ in copies(stage) if not frm for s in srcs]
    if "." in copies_all:
        for must in ("CMakeLists.txt", "cmake", "proto", "common", "kernels", "worker", "router",
                     "cli"):
            if ignored(must, patterns):
                fail(f"{name}: .dockerignore excludes {must}, which the build needs")


def check_cpu(repo, bin_dir, patterns, targets):
    name = "Dockerfile"
    stages, args = parse_dockerfile(os.path.join(repo, name))
    if len(stages) < 2:
        fail(f"{name}: expected a build stage and a runtime stage, found {len(stages)} stage(s)")
        return
    check_common(name, stages, args, repo, patterns, targets)
    release = os_release()
    codename = release.get("VERSION_CODENAME")
    for stage in stages:
        image = expand(stage["from"], args)
        if stage["from"] in [s["name"] for s in stages]:
            continue
        m = re.fullmatch(r"(?:docker\.io/)?(?:library/)?debian:([a-z]+)(-slim)?", image)
        if not m:
            fail(f"{name}:{stage['line']}: FROM {image}: the CPU image builds on Debian "
                 "(debian:RELEASE, debian:RELEASE-slim)")
        elif release.get("ID") == "debian" and m.group(1) != codename:
            fail(f"{name}:{stage['line']}: FROM {image}: Debian {m.group(1)}, but this machine "
                 f"(whose packages are checked) is {codename}: the package names may differ")
    build, runtime = stages[0], stages[-1]
    build_runs = " ".join(i.text for i in build["instructions"] if i.keyword == "RUN")
    if not re.search(r"\btools/setup\.sh\b", build_runs):
        fail(f"{name}:{build['line']}: the build stage must install its dependencies with "
             "tools/setup.sh (the one list of build packages)")
    for flag in ("-DEPSERVE_CUDA=OFF", "-DCMAKE_BUILD_TYPE=Release"):
        if flag not in build_runs:
            fail(f"{name}:{build['line']}: the build stage's cmake needs {flag}")
    installed = apt_installs(runtime)
    if not installed:
        fail(f"{name}:{runtime['line']}: the runtime stage installs no package (apt-get install)")
    listed = {}
    for line, p in installed:
        listed.setdefault(p, line)
        if p.endswith("-dev"):
            fail(f"{name}:{line}: the runtime stage installs {p}, a -dev package (build only)")
        elif not package_exists(p):
            fail(f"{name}:{line}: {p} is not a package of this Debian release")
    closure = dependency_closure(set(listed) | BASE_PACKAGES)
    used = set()
    found_any = False
    linked = {}  # binary -> ({soname: path}, {NEEDED})
    for b in BINARIES:
        path = os.path.join(bin_dir, b)
        if not os.path.exists(path):
            fail(f"{path}: not built (the check needs the binaries the Dockerfile copies)")
            continue
        found_any = True
        linked[b] = linked_libraries(path)
    paths = {lib for libs, _ in linked.values() for lib in libs.values()
             if lib and not CUDA_PATH.search(lib)}
    pkg_of = owners(paths)
    for b, (libs, needed) in linked.items():
        for soname, lib in sorted(libs.items()):
            if lib is None:
                if not re.match(r"lib(cuda|nccl|cublas|cudart)", soname):
                    fail(f"{os.path.join(bin_dir, b)}: {soname} is not found by ldd")
                continue
            if CUDA_PATH.search(lib):
                continue  # the CPU image is built without CUDA
            pkg = pkg_of.get(lib)
            if pkg is None:
                fail(f"{b}: {soname} ({lib}) belongs to no Debian package: the runtime stage "
                     "cannot install it")
                continue
            used.add(pkg)
            if pkg in listed or pkg in BASE_PACKAGES:
                continue
            if soname in needed:
                fail(f"{name}:{runtime['line']}: {b} links {soname} from Debian package {pkg}, "
                     "which the runtime stage does not install (add it to its apt-get install)")
            elif pkg not in closure:
                fail(f"{name}:{runtime['line']}: {b} loads {soname} from Debian package {pkg}, "
                     "which no package of the runtime stage depends on (add it)")
    if found_any:
        for p, line in listed.items():
            if p not in used:
                fail(f"{name}:{line}: the runtime stage installs {p}, which holds no library "
                     "the binaries link")


def check_cuda(repo, patterns, targets):
    name = "Dockerfile.cuda"
    path = os.path.join(repo, name)
    if not os.path.isfile(path):
        fail(f"{name}: missing (the CUDA image)")
        return
    stages, args = parse_dockerfile(path)
    if len(stages) < 2:
        fail(f"{name}: expected a build stage and a runtime stage, found {len(stages)} stage(s)")
        return
    check_common(name, stages, args, repo, patterns, targets)
    version = args.get("CUDA_VERSION", "")
    if not re.fullmatch(r"13\.\d+\.\d+", version):
        fail(f"{name}: ARG CUDA_VERSION={version!r}: expected a CUDA 13 release (13.x.y)")
    build, runtime = stages[0], stages[-1]
    want = {build["line"]: "devel", runtime["line"]: "runtime"}
    for stage in (build, runtime):
        image = expand(stage["from"], args)
        flavour = want[stage["line"]]
        if not re.fullmatch(rf"(?:docker\.io/|nvcr\.io/)?nvidia/cuda:{re.escape(version)}-{flavour}-"
                            r"ubuntu24\.04", image):
            fail(f"{name}:{stage['line']}: FROM {image}: expected nvidia/cuda:CUDA_VERSION-{flavour}-"
                 "ubuntu24.04 (one CUDA version for both stages)")
    build_runs = " ".join(i.text for i in build["instructions"] if i.keyword == "RUN")
    for needle, why in ((r"\btools/setup\.sh\b", "its dependencies with tools/setup.sh"),
                        (r"-DEPSERVE_CUDA=ON", "cmake -DEPSERVE_CUDA=ON"),
                        (r"-DCMAKE_BUILD_TYPE=Release", "cmake -DCMAKE_BUILD_TYPE=Release"),
                        (r"\blibnccl-dev\b", "NCCL's headers (libnccl-dev)"),
                        (r"dpkg -S", "the runtime package list derived with dpkg -S")):
        if not re.search(needle, build_runs):
            fail(f"{name}:{build['line']}: the build stage needs {why}")
    runtime_runs = " ".join(i.text for i in runtime["instructions"] if i.keyword == "RUN")
    if not re.search(r"\blibnccl2\b", runtime_runs):
        fail(f"{name}:{runtime['line']}: the runtime stage must provide NCCL (libnccl2)")
    for p in re.findall(r"\b(lib[a-z0-9.+-]+-dev)\b", runtime_runs):
        fail(f"{name}:{runtime['line']}: the runtime stage installs {p}, a -dev package")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repo", required=True)
    ap.add_argument("--bin-dir", required=True)
    opts = ap.parse_args()
    repo = os.path.abspath(opts.repo)
    patterns = dockerignore_patterns(repo)
    if not patterns:
        fail(".dockerignore: missing or empty (build trees and .git would enter the context)")
    for must in (".git", "build", ".cache"):
        if not ignored(must, patterns):
            fail(f".dockerignore: does not exclude {must}")
    targets = cmake_targets(repo)
    check_cpu(repo, os.path.abspath(opts.bin_dir), patterns, targets)
    check_cuda(repo, patterns, targets)
    for f in failures:
        print(f"FAIL: {f}")
    if failures:
        print(f"{len(failures)} problem(s) in Dockerfile / Dockerfile.cuda")
        return 1
    print("Dockerfile and Dockerfile.cuda check out: runtime packages cover every library the "
          f"binaries in {opts.bin_dir} link, non-root USER, COPY sources present")
    return 0


if __name__ == "__main__":
    sys.exit(main())
