#!/usr/bin/env bash
# Installs every build and test dependency of epserve from Debian packages.
# Idempotent: installs only what is missing, and does nothing when all is
# there. Needs root (or sudo) only when something is missing.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config python3 clang
  # lint (tools/lint.sh)
  clang-format clang-tidy
  # RPC and serialization
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler libabsl-dev
  # metrics, collectives, math, text
  prometheus-cpp-dev libgloo-dev libopenblas-dev nlohmann-json3-dev libpcre2-dev libicu-dev
  # logging
  libspdlog-dev libfmt-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # `ip`, for the network namespaces of tests/netns
  iproute2
  # the Python client example (tools/examples) and its test
  python3-grpcio python3-grpc-tools
  python3-jsonschema  # tests/deploy: the manifests against the Kubernetes schemas
  # tokenizer vocabularies for the reference tests come from the npm registry
  npm
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
# npm may come with a Node.js that was not installed from Debian packages.
if [[ " ${missing[*]} " == *" npm "* ]] && command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm}")
fi
read -r -a missing <<< "${missing[*]}"

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all ${#PACKAGES[@]} packages present"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
