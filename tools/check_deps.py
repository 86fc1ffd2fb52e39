#!/usr/bin/env python3
"""The dependency walls between epserve's folders, checked on a configured build.

  1. No router target reaches a worker target. Router targets are those
     defined under router/ (the epserve-router binary among them); worker
     targets those defined under worker/. The graph is the build's own: the
     link and target-order dependencies CMake wrote into build.ninja, followed
     transitively.
  2. The kernels core (the files directly in kernels/, except registry.cc)
     includes no backend folder (kernels/cpu/, kernels/cuda/, any subfolder
     of kernels/): the backends depend on the core, never the reverse.
     registry.cc is epserve_kernels_registry, the one place that names them.
  3. Outside kernels/, only the backend tests (BACKEND_TEST_DIRS) include a
     backend's headers; everything else reaches backends through
     kernels/registry.h.

Exit status: 0 when every wall holds; 1 naming each offending edge (with a
path from a router target) or include (file:line); 2 when the build graph
cannot be read. Python 3 standard library only.

  tools/check_deps.py --source-dir . --build-dir build
"""

import argparse
import collections
import os
import re
import sys

ROUTER_DIR = "router"
WORKER_DIR = "worker"
KERNELS_DIR = "kernels"
KERNELS_NOT_CORE = ("registry.cc",)
# Router targets by name, wherever they are defined (today also under router/).
EXTRA_ROUTER_TARGETS = ("epserve-router",)
# Tests of one backend against its own interface or another backend.
BACKEND_TEST_DIRS = ("tests/kernels", "tests/gpu")
# Single tests elsewhere that subclass a backend (a CPU backend refusing a
# weight format, to test the loader's refusal).
BACKEND_TEST_FILES = ("tests/weights/linear_formats_test.cc",)
SOURCE_EXTENSIONS = (".h", ".hpp", ".cc", ".cpp", ".cu", ".cuh")
# Top-level folders not scanned for includes (builds, caches, VCS data).
SKIP_TOP_LEVEL = re.compile(r"^(\..*|build.*|third_party)$")

LINK_HEADER = re.compile(r"^# Link build statements for (\w+) target (\S+)$")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')

Target = collections.namedtuple("Target", "name kind folder outputs dep_paths")


def split_ninja_paths(text):
    """Splits a ninja path list on unescaped spaces, undoing $ escapes."""
    paths, current, i = [], [], 0
    while i < len(text):
        c = text[i]
        if c == "$" and i + 1 < len(text):
            current.append(text[i + 1])
            i += 2
            continue
        if c == " ":
            if current:
                paths.append("".join(current))
                current = []
        else:
            current.append(c)
        i += 1
    if current:
        paths.append("".join(current))
    return paths


def logical_lines(text):
    """build.ninja lines with `$` line continuations joined."""
    pending = None
    for raw in text.splitlines():
        if pending is not None:
            raw = pending + raw.lstrip(" ")
        if raw.endswith("$") and not raw.endswith("$$"):
            pending = raw[:-1]
            continue
        yield raw
        pending = None
    if pending:
        yield pending


def target_folder(name, object_dir):
    """The source folder a target is defined in, from its OBJECT_DIR
    (<folder>/CMakeFiles/<name>.dir, relative to the build tree)."""
    suffix = "CMakeFiles/%s.dir" % name
    if not object_dir.endswith(suffix):
        return None
    return object_dir[: -len(suffix)].rstrip("/")


def parse_build_ninja(text):
    """Targets with a link step (libraries and executables) in build.ninja."""
    targets = []
    lines = list(logical_lines(text))
    i = 0
    while i < len(lines):
        header = LINK_HEADER.match(lines[i])
        i += 1
        if not header:
            continue
        kind, name = header.group(1), header.group(2)
        while i < len(lines) and not lines[i].startswith("build "):
            i += 1
        if i == len(lines):
            break
        build = lines[i][len("build "):]
        i += 1
        outputs_part, _, rest = build.partition(": ")
        outputs = [p for p in split_ninja_paths(outputs_part) if p != "|"]
        # rule explicit... | implicit... || order-only...
        dep_paths = [p for p in split_ninja_paths(rest)[1:] if p not in ("|", "||", "|@")]
        variables = {}
        while i < len(lines) and lines[i].startswith("  "):
            key, _, value = lines[i].strip().partition(" = ")
            variables[key] = value
            i += 1
        dep_paths += split_ninja_paths(variables.get("LINK_LIBRARIES", ""))
        if "TARGET_FILE" in variables:
            outputs.append(variables["TARGET_FILE"])
        folder = target_folder(name, variables.get("OBJECT_DIR", ""))
        targets.append(Target(name, kind, folder, outputs, dep_paths))
    return targets


def reachable(graph, start):
    seen, stack = set(), [start]
    while stack:
        for dep in graph.get(stack.pop(), []):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def transitive_reduction(graph):
    """Drops A -> C where another dependency B of A reaches C (and C does not
    reach B): build.ninja lists a library's whole closure, the reduced graph
    the declared links, so that a reported path names each hop."""
    reach = {n: reachable(graph, n) for n in graph}
    reduced = {}
    for a, deps in graph.items():
        reduced[a] = [c for c in deps
                      if not any(b != c and c in reach[b] and b not in reach.get(c, ())
                                 for b in deps)]
    return reduced


def target_graph(targets):
    """name -> sorted names of the targets it depends on."""
    by_output = {}
    for t in targets:
        for out in t.outputs:
            by_output[os.path.normpath(out)] = t.name
    graph = {}
    for t in targets:
        deps = {by_output.get(os.path.normpath(p)) for p in t.dep_paths}
        deps.discard(None)
        deps.discard(t.name)
        graph[t.name] = sorted(deps)
    return graph


def under(folder, top):
    return folder is not None and (folder == top or folder.startswith(top + "/"))


def check_router_reaches_worker(targets):
    """Error lines: one per edge from a router-side target into a worker
    target, with a path from a router target."""
    graph = transitive_reduction(target_graph(targets))
    folders = {t.name: t.folder for t in targets}
    kinds = {t.name: t.kind for t in targets}
    routers = [t.name for t in targets
               if under(t.folder, ROUTER_DIR) or t.name in EXTRA_ROUTER_TARGETS]
    # Libraries first: their paths name the library that makes the edge.
    routers.sort(key=lambda n: (kinds[n] == "EXECUTABLE", n))
    reported = {}
    for start in routers:
        parent = {start: None}
        queue = collections.deque([start])
        while queue:
            node = queue.popleft()
            for dep in graph.get(node, []):
                if dep in parent:
                    continue
                parent[dep] = node
                if under(folders.get(dep), WORKER_DIR):
                    if (node, dep) not in reported:
                        path = [dep]
                        while parent[path[-1]] is not None:
                            path.append(parent[path[-1]])
                        reported[(node, dep)] = list(reversed(path))
                    continue  # the wall is crossed here; don't walk the worker
                queue.append(dep)
    errors = []
    for (edge_from, dep), path in sorted(reported.items()):
        errors.append(
            "router target %s reaches worker target %s (%s/) through the edge %s -> %s "
            "(%s/ -> %s/): %s" % (path[0], dep, folders[dep], edge_from, dep,
                                  folders[edge_from], folders[dep], " -> ".join(path)))
    return errors


def source_files(folder):
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for f in sorted(files):
            if f.endswith(SOURCE_EXTENSIONS):
                yield os.path.join(root, f)


def includes(path):
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            m = INCLUDE.match(line)
            if m:
                yield number, m.group(1), m.group(2)


def backend_folders(source_dir):
    kernels = os.path.join(source_dir, KERNELS_DIR)
    return sorted(d for d in os.listdir(kernels) if os.path.isdir(os.path.join(kernels, d)))


def check_kernels_core(source_dir):
    """Error lines: core files of kernels/ that include a backend folder."""
    kernels = os.path.join(source_dir, KERNELS_DIR)
    backends = backend_folders(source_dir)
    errors = []
    for f in sorted(os.listdir(kernels)):
        path = os.path.join(kernels, f)
        if (not os.path.isfile(path) or not f.endswith(SOURCE_EXTENSIONS) or
                f in KERNELS_NOT_CORE):
            continue
        for number, delim, name in includes(path):
            first = name.split("/")[0]
            second = name.split("/")[1] if "/" in name else ""
            # "kernels/cpu/x.h" from the root, or "cpu/x.h" next to the file.
            if (first == KERNELS_DIR and second in backends) or (
                    delim == '"' and first in backends and "/" in name):
                errors.append("kernels core file %s/%s:%d includes the backend header %s"
                              % (KERNELS_DIR, f, number, name))
    return errors


def check_backend_includes(source_dir):
    """Error lines: files outside kernels/ and the backend tests that include
    a backend's headers."""
    backends = backend_folders(source_dir)
    errors = []
    for top in sorted(os.listdir(source_dir)):
        if top == KERNELS_DIR or SKIP_TOP_LEVEL.match(top):
            continue
        top_path = os.path.join(source_dir, top)
        if not os.path.isdir(top_path):
            continue
        for path in source_files(top_path):
            rel = os.path.relpath(path, source_dir).replace(os.sep, "/")
            if (any(under(os.path.dirname(rel), d) for d in BACKEND_TEST_DIRS)
                    or rel in BACKEND_TEST_FILES):
                continue
            for number, _, name in includes(path):
                parts = name.split("/")
                if len(parts) > 2 and parts[0] == KERNELS_DIR and parts[1] in backends:
                    errors.append("%s:%d includes the backend header %s (use kernels/registry.h)"
                                  % (rel, number, name))
    return errors


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source-dir", required=True, help="the epserve checkout")
    parser.add_argument("--build-dir", required=True, help="a CMake build dir (Ninja)")
    args = parser.parse_args(argv)

    ninja = os.path.join(args.build_dir, "build.ninja")
    try:
        with open(ninja, encoding="utf-8") as f:
            targets = parse_build_ninja(f.read())
    except OSError as e:
        print("check_deps: cannot read the build graph: %s (configure with -G Ninja)" % e)
        return 2
    unplaced = [t.name for t in targets if t.folder is None]
    if not targets or unplaced:
        print("check_deps: %s: no link statements found, or targets without a folder (%s); "
              "has CMake's build.ninja layout changed?" % (ninja, ", ".join(unplaced)))
        return 2
    if not any(under(t.folder, ROUTER_DIR) for t in targets):
        print("check_deps: %s: no target defined under %s/" % (ninja, ROUTER_DIR))
        return 2

    errors = (check_router_reaches_worker(targets) + check_kernels_core(args.source_dir) +
              check_backend_includes(args.source_dir))
    for e in errors:
        print("FAIL: " + e)
    if errors:
        return 1
    routers = sum(1 for t in targets if under(t.folder, ROUTER_DIR))
    print("check_deps: %d targets; %d router targets reach no worker target; kernels core "
          "includes no backend; backend headers only in kernels/ and %s"
          % (len(targets), routers, ", ".join(BACKEND_TEST_DIRS)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
