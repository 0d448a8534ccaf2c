#!/bin/sh
# Runs what make-dist.sh packed on the GPU machine: the GPU probe tests, fleet-engine's GPU tests
# (NCCL collectives, the GPU model against the CPU model) and the decode benchmark, and prints a
# short table last. Logs go to $OUT (or /tmp). FLEET_EXPECT_NCCL_VERSION /
# FLEET_EXPECT_NCCL_LIBRARY, when set, are what the host's NCCL must be.
# Usage: tests/gpu/run-on-gpu-host.sh [DIST_DIR (default: dist/gpu)]
set -u

dist=$(cd "${1:-dist/gpu}" && pwd)
out=${OUT:-/tmp}
# cudart and cuBLAS are not packed: they come from the host's CUDA 13, NCCL from its system.
export LD_LIBRARY_PATH="$dist/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVLink multicast stays off for everything started here (the host sets it; keep it set).
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"

nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader \
  >"$out/nvidia-smi.txt" 2>&1
{
  echo "NCCL_NVLS_ENABLE=$NCCL_NVLS_ENABLE"
  ls -l /usr/local/cuda/lib64/libcublas.so.13* /usr/local/cuda/lib64/libcublasLt.so.13* \
    /usr/local/cuda/lib64/libcudart.so.13* 2>&1
  ldconfig -p | grep -E 'libnccl|libcublas\.so|libcudart\.so'
} >"$out/libraries.txt" 2>&1
# Anything the loader still cannot find is looked for under the CUDA and Python installs.
for binary in "$dist"/bin/*; do
  ldd "$binary" | awk '$2 == "=>" && $3 == "not" { print $1 }'
done | sort -u | while read -r missing; do
  found=$(find /usr/local/cuda* /usr/lib /opt -name "$missing" 2>/dev/null | head -n 1)
  echo "not found by the loader: $missing -> ${found:-nowhere}" >>"$out/libraries.txt"
  [ -n "$found" ] && dirname "$found" >>"$out/extra-lib-dirs.txt"
done
if [ -s "$out/extra-lib-dirs.txt" ]; then
  LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$(sort -u "$out/extra-lib-dirs.txt" | paste -sd:)"
  export LD_LIBRARY_PATH
fi
ldd "$dist/bin/native_gpu_test" >>"$out/libraries.txt" 2>&1

run() {  # NAME TIMEOUT_S COMMAND...: runs COMMAND, its log in $out/NAME.log; prints rc
  name=$1 limit=$2
  shift 2
  timeout "$limit" "$@" >"$out/$name.log" 2>&1
  echo $?
}

probe_rc=$(run gpu_probe_test 120 "$dist/bin/gpu_probe_test" --gtest_color=no)
native_rc=$(run native_gpu_test 300 "$dist/bin/native_gpu_test" --gtest_color=no \
  --gtest_filter=-*MissingPeer*)
# Alone, with a shorter limit: a communicator that failed to abort would hang here.
peer_rc=$(run native_gpu_test_peer 60 "$dist/bin/native_gpu_test" --gtest_color=no \
  --gtest_filter=*MissingPeer*)
[ "$native_rc" = 0 ] && native_rc=$peer_rc
cat "$out/native_gpu_test_peer.log" >>"$out/native_gpu_test.log"
bench_rc=$(run engine_decode_bench 300 "$dist/bin/engine_decode_bench")
cat "$out/gpu_probe_test.log" "$out/native_gpu_test.log" "$out/engine_decode_bench.log"

echo
echo "== GPU tests =="
printf '%-58s %s\n' "TEST" "RESULT"
cat "$out/gpu_probe_test.log" "$out/native_gpu_test.log" |
  grep -E '^\[ +(OK|FAILED|SKIPPED) +\] [A-Za-z]+Test\.[A-Za-z0-9]+' |
  sed -E 's/^\[ +([A-Z]+) +\] ([^ ]+).*/\2 \1/' | sort -u |
  while read -r name result; do printf '%-58s %s\n' "$name" "$result"; done
grep -hE '^(driver|GPU [0-9]+:|NCCL |nccl |gpu tp=|device-to-device|rank without|skipped:)' \
  "$out/gpu_probe_test.log" "$out/native_gpu_test.log" | sort -u
echo "nvidia-smi: $(tr '\n' ';' <"$out/nvidia-smi.txt")"
for lib in libcudart.so.13 libcublas.so.13 libcublasLt.so.13; do
  [ -e "/usr/local/cuda/lib64/$lib" ] && where=present || where=MISSING
  echo "/usr/local/cuda/lib64/$lib: $where"
done
grep -h 'not found by the loader' "$out/libraries.txt"
echo
grep -A 20 '^== decode step' "$out/engine_decode_bench.log" || tail -n 5 "$out/engine_decode_bench.log"
echo "exit status: gpu_probe_test $probe_rc, native_gpu_test $native_rc, engine_decode_bench $bench_rc"
[ "$probe_rc" = 0 ] && [ "$native_rc" = 0 ] && [ "$bench_rc" = 0 ]
