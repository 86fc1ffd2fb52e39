# syntax=docker/dockerfile:1
# epserve, CPU image: epserve-router, epserve-worker, epserve and epserve-run in
# /usr/local/bin, built without CUDA (-DEPSERVE_CUDA=OFF). GPU image:
# Dockerfile.cuda. docs/deployment.md describes building, pushing and running both.
#
#   docker build -t epserve:cpu .
#   docker run --rm epserve:cpu epserve-run generate \
#     --model /usr/share/epserve/models/tiny-random-qwen3-moe --prompt Hello --max-tokens 8
#
# tests/deploy/check_dockerfile.py checks this file offline against the binaries of
# build/ (every library they link comes from a package of the runtime stage, and so on).

# The Debian release of the build and runtime stages: the one tools/setup.sh and
# the package names of the runtime stage are written for.
ARG DEBIAN_RELEASE=bookworm

# ---- build ------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src
# tools/setup.sh is the one list of build dependencies (Debian packages); its
# layer stays cached until the script changes.
COPY tools/setup.sh tools/setup.sh
RUN bash tools/setup.sh && rm -rf /var/lib/apt/lists/*
COPY . .
# Release binaries only (no tests, no benchmarks). EPSERVE_WERROR=OFF: a warning
# is not a reason to fail an image build.
RUN --mount=type=cache,target=/root/.cache/ccache \
    cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DEPSERVE_CUDA=OFF \
      -DEPSERVE_BUILD_TESTS=OFF -DEPSERVE_BUILD_BENCHMARKS=OFF -DEPSERVE_WERROR=OFF \
 && ninja -C /build epserve-router epserve-worker epserve epserve-run

# ---- runtime ----------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
ENV DEBIAN_FRONTEND=noninteractive
# The packages of the shared libraries the binaries link (`ldd build/bin/epserve-*`;
# what these pull in as dependencies, apt installs with them): the runtime
# packages of the -dev packages tools/setup.sh installs. libc6, libstdc++6,
# libgcc-s1 and zlib1g are in the base image. One package a line:
# tests/deploy/check_dockerfile.py checks this list against the binaries.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libabsl20220623 \
      libcivetweb1 \
      libfmt9 \
      libgloo0 \
      libgomp1 \
      libgrpc++1.51 \
      libgrpc29 \
      libicu72 \
      libopenblas0-pthread \
      libpcre2-8-0 \
      libprometheus-cpp-core1.0 \
      libprometheus-cpp-pull1.0 \
      libprotobuf32 \
      libspdlog1.10 \
 && rm -rf /var/lib/apt/lists/*
# A fixed non-root user (numeric, so that Kubernetes' runAsNonRoot can verify
# it); the manifests run as the same ids.
RUN groupadd --system --gid 65532 epserve \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin epserve
COPY --from=build /build/bin/epserve-router /build/bin/epserve-worker /build/bin/epserve \
     /build/bin/epserve-run /usr/local/bin/
# The bundled tiny model (random weights) for smoke tests of the image.
COPY checkpoints/tiny-random-qwen3-moe /usr/share/epserve/models/tiny-random-qwen3-moe
COPY LICENSE NOTICE /usr/share/doc/epserve/
# Fail the build if a library is missing from the list above.
RUN for b in epserve-router epserve-worker epserve epserve-run; do \
      if ldd "/usr/local/bin/$b" | grep -F "not found"; then \
        echo "runtime stage: $b links a library no installed package provides" >&2; exit 1; \
      fi; \
    done
# Nothing is written outside /tmp (Kubernetes mounts an emptyDir there and keeps
# the root filesystem read-only).
ENV HOME=/tmp
WORKDIR /tmp
USER 65532:65532
# Client gRPC, control plane, OpenAI HTTP API, router metrics, worker metrics.
EXPOSE 50051 50052 8000 9400 9401
CMD ["epserve-router", "--help"]
