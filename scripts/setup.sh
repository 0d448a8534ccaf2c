#!/bin/sh
# Installs everything SparkFleet needs to build and test, from Debian 12's packages.
# Safe to run again: it installs only what is missing. Run as root.
set -eu

packages="
  build-essential cmake ninja-build pkg-config clang-format
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libyaml-cpp-dev libcli11-dev nlohmann-json3-dev libsqlite3-dev libssl-dev
  libgloo-dev libibverbs-dev
  libgtest-dev libgmock-dev
  clang libclang-rt-14-dev
  iproute2 busybox-static procps
  libcurl4-openssl-dev curl docker.io
  slurm-wlm
  lintian
  systemd
  libboost1.81-dev
  prometheus-cpp-dev prometheus iperf3 rsync
  haproxy
"

missing=""
for p in $packages; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing="$missing $p"
  fi
done

if [ -n "$missing" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing packages:$missing; run this script as root to install them" >&2
    exit 1
  fi
  echo "setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing
else
  echo "setup: all packages present"
fi

if [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA found in /usr/local/cuda"
else
  echo "setup: no CUDA in /usr/local/cuda; GPU features will report themselves unavailable"
fi
