#!/bin/sh
# Builds SparkFleet with warnings as errors and runs every test: unit, integration (network
# namespaces when root, else 127.0.0.x with the skipped tests named). GPU tests (label `gpu`)
# run only where a GPU is present and say so otherwise.
set -eu
cd "$(dirname "$0")/.."
build="${FLEET_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFLEET_WERROR=ON
cmake --build "$build"
# The docker runtime's tests need a Docker engine; without one they skip and say why.
./scripts/dockerd.sh "$build" || echo "test: no Docker engine; the docker runtime tests will skip"
ctest --test-dir "$build" --output-on-failure -j2 "$@"
