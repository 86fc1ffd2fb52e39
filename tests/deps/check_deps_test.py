#!/usr/bin/env python3
"""tools/check_deps.py against made-up builds: a build.ninja written here in
the layout CMake's Ninja generator writes, and a small source tree. Each wall
is broken once (the script must fail and name the edge or include) and kept
once (it must pass). Python 3 standard library only."""

import os
import subprocess
import sys
import tempfile
import textwrap
import unittest

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                      "check_deps.py")


def link_statement(kind, name, folder, deps):
    """One target's link statement; `deps` are other targets' names."""
    lib = "%s/lib%s.a" % (folder, name)
    out = "bin/%s" % name if kind == "EXECUTABLE" else lib
    dep_files = " ".join("%s/lib%s.a" % (f, n) for f, n in deps)
    lines = [
        "# Link build statements for %s target %s" % (kind, name),
        "",
        "",
        "#############################################",
        "# Link the target %s" % out,
        "",
        "build %s: CXX_LINKER__%s_RelWithDebInfo %s/CMakeFiles/%s.dir/a.cc.o || %s"
        % (out, name, folder, name, dep_files),
        "  OBJECT_DIR = %s/CMakeFiles/%s.dir" % (folder, name),
        "  TARGET_FILE = %s" % out,
    ]
    if kind == "EXECUTABLE":
        lines.append("  LINK_LIBRARIES = " + dep_files)
    return "\n".join(lines) + "\n\n"


# router/engine -> common/tokenizer -> common; worker/step -> common.
CLEAN = [
    ("STATIC_LIBRARY", "epserve_common", "common", []),
    ("STATIC_LIBRARY", "epserve_tokenizer", "common/tokenizer", [("common", "epserve_common")]),
    ("STATIC_LIBRARY", "epserve_engine", "router/engine",
     [("common/tokenizer", "epserve_tokenizer"), ("common", "epserve_common")]),
    ("STATIC_LIBRARY", "epserve_step", "worker/step", [("common", "epserve_common")]),
    ("EXECUTABLE", "epserve-router", "router",
     [("router/engine", "epserve_engine"), ("common/tokenizer", "epserve_tokenizer"),
      ("common", "epserve_common")]),
]


class CheckDepsTest(unittest.TestCase):

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.src = os.path.join(self.tmp.name, "src")
        self.build = os.path.join(self.tmp.name, "build")
        os.makedirs(self.build)
        self.write("kernels/ops.h", '#include "kernels/tensor.h"\n')
        self.write("kernels/ops.cc", '#include "kernels/ops.h"\n#include "common/status.h"\n')
        self.write("kernels/registry.cc", '#include "kernels/cpu/cpu_backend.h"\n')
        self.write("kernels/cpu/cpu_backend.h", '#include "kernels/ops.h"\n')
        self.write("kernels/cuda/cuda_backend.h", '#include "kernels/ops.h"\n')
        self.write("worker/worker.cc", '#include "kernels/registry.h"\n')
        self.write("tests/kernels/matmul_test.cc", '#include "kernels/cpu/cpu_backend.h"\n')

    def tearDown(self):
        self.tmp.cleanup()

    def write(self, rel, text):
        path = os.path.join(self.src, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(text)

    def write_ninja(self, targets):
        with open(os.path.join(self.build, "build.ninja"), "w") as f:
            f.write("# CMAKE generated file: DO NOT EDIT!\n\n")
            for t in targets:
                f.write(link_statement(*t))

    def run_script(self):
        r = subprocess.run(
            [sys.executable, SCRIPT, "--source-dir", self.src, "--build-dir", self.build],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
        return r.returncode, r.stdout

    def test_clean_build_passes(self):
        self.write_ninja(CLEAN)
        rc, out = self.run_script()
        self.assertEqual(rc, 0, out)
        self.assertIn("2 router targets reach no worker target", out)

    def test_router_linking_a_worker_library_fails_naming_edge_and_path(self):
        bad = list(CLEAN)
        # common/tokenizer now links worker/step: the router reaches it through it.
        bad[1] = ("STATIC_LIBRARY", "epserve_tokenizer", "common/tokenizer",
                  [("common", "epserve_common"), ("worker/step", "epserve_step")])
        bad[2] = ("STATIC_LIBRARY", "epserve_engine", "router/engine",
                  [("common/tokenizer", "epserve_tokenizer"), ("common", "epserve_common"),
                   ("worker/step", "epserve_step")])
        self.write_ninja(bad)
        rc, out = self.run_script()
        self.assertEqual(rc, 1, out)
        self.assertIn("through the edge epserve_tokenizer -> epserve_step "
                      "(common/tokenizer/ -> worker/step/)", out)
        self.assertIn("epserve_engine -> epserve_tokenizer -> epserve_step", out)

    def test_router_binary_linking_a_worker_library_fails(self):
        bad = list(CLEAN)
        bad[4] = ("EXECUTABLE", "epserve-router", "router",
                  [("router/engine", "epserve_engine"), ("worker/step", "epserve_step")])
        self.write_ninja(bad)
        rc, out = self.run_script()
        self.assertEqual(rc, 1, out)
        self.assertIn("router target epserve-router reaches worker target epserve_step", out)

    def test_kernels_core_including_a_backend_fails(self):
        self.write_ninja(CLEAN)
        self.write("kernels/device.cc", '#include "kernels/device.h"\n\n#if WITH_CUDA\n'
                   '#include "kernels/cuda/cuda_device.h"\n#endif\n')
        self.write("kernels/tensor.h", '#pragma once\n#include "cpu/cpu_backend.h"\n')
        rc, out = self.run_script()
        self.assertEqual(rc, 1, out)
        self.assertIn("kernels/device.cc:4 includes the backend header kernels/cuda/cuda_device.h",
                      out)
        self.assertIn("kernels/tensor.h:2 includes the backend header cpu/cpu_backend.h", out)

    def test_backend_header_outside_kernels_and_backend_tests_fails(self):
        self.write_ninja(CLEAN)
        self.write("worker/step/step.cc", '#include "kernels/cpu/cpu_backend.h"\n')
        rc, out = self.run_script()
        self.assertEqual(rc, 1, out)
        self.assertIn("worker/step/step.cc:1 includes the backend header "
                      "kernels/cpu/cpu_backend.h", out)
        self.assertNotIn("tests/kernels/matmul_test.cc", out)

    def test_unreadable_graph_is_an_error_not_a_pass(self):
        with open(os.path.join(self.build, "build.ninja"), "w") as f:
            f.write(textwrap.dedent("""\
                # CMAKE generated file: DO NOT EDIT!
                rule CXX_COMPILER
                  command = c++ $in
                """))
        rc, out = self.run_script()
        self.assertEqual(rc, 2, out)
        os.remove(os.path.join(self.build, "build.ninja"))
        rc, out = self.run_script()
        self.assertEqual(rc, 2, out)
        self.assertIn("cannot read the build graph", out)


if __name__ == "__main__":
    unittest.main()
