#!/bin/sh
# Runs the GPU tests packed by make-dist.sh on the GPU machine and prints a short table last.
# Logs go to $OUT (or /tmp). FLEET_EXPECT_NCCL_VERSION / FLEET_EXPECT_NCCL_LIBRARY, when set,
# are what the host's NCCL must be. Usage: tests/gpu/run-on-gpu-host.sh [DIST_DIR (default: dist)]
set -u

dist=$(cd "${1:-dist}" && pwd)
out=${OUT:-/tmp}
log="$out/gpu_probe_test.log"
export LD_LIBRARY_PATH="$dist/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

nvidia-smi --query-gpu=index,name,driver_version --format=csv,noheader >"$out/nvidia-smi.txt" 2>&1
"$dist/bin/gpu_probe_test" --gtest_color=no >"$log" 2>&1
rc=$?
cat "$log"

echo
echo "== GPU probe summary =="
printf '%-45s %s\n' "TEST" "RESULT"
grep -E '^\[ +(OK|FAILED|SKIPPED) +\] GpuProbeTest\.[A-Za-z]+ ' "$log" |
  sed -E 's/^\[ +([A-Z]+) +\] ([^ ]+).*/\2 \1/' | sort -u |
  while read -r name result; do printf '%-45s %s\n' "$name" "$result"; done
grep -E '^(driver|GPU [0-9]+:|NCCL) ' "$log" | sort -u
echo "nvidia-smi: $(tr '\n' ';' <"$out/nvidia-smi.txt")"
echo "exit status: $rc"
exit "$rc"
