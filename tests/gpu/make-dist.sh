#!/bin/sh
# Packs the GPU tests for the lent GPU machine: gpu_probe_test, fleet-nccl-probe, fleet and
# fleet-engine, and where the build has CUDA also native_gpu_test and engine_decode_bench, into
# DIST/bin (without debug information), and every shared
# library they load that the GPU host does not provide (ldd walk) into DIST/lib. Left out: libc,
# libstdc++, libgcc, the loader, the NVIDIA driver's libraries, and CUDA's own cudart, cuBLAS and
# NCCL (hundreds of MB; the GPU host has CUDA 13 in /usr/local/cuda and NCCL in the system, which
# run-on-gpu-host.sh puts on the library path). DIST must stay under the device tool's 64 MiB.
# DIST is emptied first, so it defaults to a folder of its own beside other packs in dist/.
# engine_decode_bench (and stage_bench) are built by name (benchmarks are not part of `all`):
# ninja -C BUILD_DIR all engine_decode_bench stage_bench.
# Usage: tests/gpu/make-dist.sh BUILD_DIR [DIST_DIR (default: dist/gpu)]
set -eu

build=${1:?usage: make-dist.sh BUILD_DIR [DIST_DIR]}
dist=${2:-dist/gpu}
rm -rf "$dist"
mkdir -p "$dist/bin" "$dist/lib"
# fleet (controller, agent, CLI) and fleet-engine for run-native-group.sh's scripted group.
cp "$build/tests/gpu/gpu_probe_test" "$build/cli/fleet-nccl-probe" "$build/cli/fleet" \
  "$build/cli/fleet-engine" "$dist/bin/"
for optional in tests/gpu/native_gpu_test tests/bench/engine_decode_bench; do
  if [ -x "$build/$optional" ]; then
    cp "$build/$optional" "$dist/bin/"
  else
    echo "make-dist: $build/$optional not built (no CUDA in this build?); left out" >&2
  fi
done
# stage_bench, when built by name, measures staging on the GPU host's many cores (loopback
# nodes there); it runs iperf3 and rsync, which that host lacks, so they travel with it.
if [ -x "$build/tests/bench/stage_bench" ]; then
  cp "$build/tests/bench/stage_bench" "$(command -v iperf3)" "$(command -v rsync)" "$dist/bin/"
fi
# Debug information is most of each binary's size and is not needed there.
strip --strip-debug "$dist"/bin/*
for binary in "$dist"/bin/*; do
  ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 }'
done | sort -u | while read -r lib; do
  case "${lib##*/}" in
    libc.so* | libm.so* | libstdc++.so* | libgcc_s.so* | ld-linux* | libdl.so* | \
      libpthread.so* | librt.so* | libcuda.so* | libnccl.so* | libnvidia-* | \
      libcudart.so* | libcublas.so* | libcublasLt.so*) ;;
    *) cp -L "$lib" "$dist/lib/" ;;
  esac
done
du -sh "$dist"
