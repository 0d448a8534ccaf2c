#!/bin/sh
# Packs the GPU tests for the lent GPU machine: the test binaries and fleet-nccl-probe into
# DIST/bin, and every shared library they load that the GPU host's system does not provide
# (ldd walk; libc, libstdc++, libgcc, the loader and the NVIDIA driver libraries stay out) into
# DIST/lib. Usage: tests/gpu/make-dist.sh BUILD_DIR [DIST_DIR (default: dist)]
set -eu

build=${1:?usage: make-dist.sh BUILD_DIR [DIST_DIR]}
dist=${2:-dist}
rm -rf "$dist"
mkdir -p "$dist/bin" "$dist/lib"
cp "$build/tests/gpu/gpu_probe_test" "$build/cli/fleet-nccl-probe" "$dist/bin/"
for binary in "$dist"/bin/*; do
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
  case "${lib##*/}" in
    libc.so* | libm.so* | libstdc++.so* | libgcc_s.so* | ld-linux* | libdl.so* | \
      libpthread.so* | librt.so* | libcuda.so* | libnccl.so* | libnvidia-*) ;;
    *) cp -L "$lib" "$dist/lib/" ;;
  esac
done
du -sh "$dist"
