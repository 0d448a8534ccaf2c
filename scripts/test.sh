#!/bin/sh
# Builds SparkFleet with warnings as errors and runs every test case as its own ctest entry:
# unit, local, integration (network namespaces when root, else 127.0.0.x), docker and fuzz.
# GPU cases (label `gpu`) run only where a GPU is present. Every skipped case is named at the
# end with the reason it gave (no namespaces, no Docker engine, no GPU, ...).
set -eu
cd "$(dirname "$0")/.."
build="${FLEET_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLEET_WERROR=ON
cmake --build "$build"
# The docker runtime's tests need a Docker engine; without one they skip and say why.
./scripts/dockerd.sh "$build" || echo "test: no Docker engine; the docker tests will skip"
status=0
ctest --test-dir "$build" --output-on-failure -j2 "$@" || status=$?
# ctest lists skipped cases without their reasons; GoogleTest printed each one on the line after
# "FILE:LINE: Skipped".
awk '
  /: Skipped$/ { want = 1; next }
  want { reason = $0; want = 0; next }
  /^\[  SKIPPED \] [^ ]+ \([0-9]+ ms\)$/ { printf "skipped: %s: %s\n", $4, reason; reason = "" }
' "$build/Testing/Temporary/LastTest.log" 2>/dev/null || true
exit "$status"
