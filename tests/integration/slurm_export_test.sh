#!/bin/bash
# `fleet export --format slurm` against a real Slurm (Debian's slurm-wlm): a slurmctld and a
# slurmd started here on a generated configuration run an exported one-rank group of
# recipes/local-demo.yaml (fleet-engine on CPUs) and its endpoint answers; a multi-node export
# is checked with `sbatch --test-only` against nodes the configuration declares.
# Usage: slurm_export_test.sh SOURCE_DIR FLEET_BINARY. Exit 77 (skipped) without Slurm.
# Every daemon it starts is stopped on exit; every wait is bounded.
set -euo pipefail
src=$1
fleet=$2
for tool in slurmctld slurmd sbatch scancel sinfo squeue curl python3; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "skipped: $tool not installed (apt-get install slurm-wlm curl python3)"
    exit 77
  fi
done
if [ "$(id -u)" -ne 0 ]; then
  echo "skipped: slurmd must run as root to start jobs"
  exit 77
fi

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*"
  for log in "$tmp"/*.log "$tmp"/job.out; do
    [ -f "$log" ] && { echo "--- $log"; tail -n 30 "$log"; }
  done
  exit 1
}

# A free TCP port on this host: bind to port 0 and read the one given.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("", 0)); print(s.getsockname()[1])'
}

host=$(hostname -s)
ctld_port=$(free_port)
slurmd_port=$(free_port)
engine_port=$(free_port)
mkdir -p "$tmp/state" "$tmp/spool"
# auth/none and cred/none: one machine, no munge key to create (Slurm 22.05 still ships both).
# proctrack/linuxproc and task/none: no cgroup hierarchy needed inside a container.
cat >"$tmp/slurm.conf" <<CONF
ClusterName=fleettest
SlurmctldHost=$host
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
AuthType=auth/none
CredType=cred/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$tmp/state
SlurmdSpoolDir=$tmp/spool
SlurmctldPidFile=$tmp/slurmctld.pid
SlurmdPidFile=$tmp/slurmd.pid
SlurmctldLogFile=$tmp/slurmctld.log
SlurmdLogFile=$tmp/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
GresTypes=gpu
NodeName=$host CPUs=$(nproc) State=UNKNOWN
# Four Sparks that never run slurmd: enough for sbatch --test-only to place a multi-node job.
NodeName=spark-[1-4] CPUs=20 Gres=gpu:1 NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=sparks Nodes=spark-[1-4] MaxTime=INFINITE State=UP
CONF
export SLURM_CONF=$tmp/slurm.conf

slurmctld -D -i -f "$SLURM_CONF" >"$tmp/slurmctld.stdout.log" 2>&1 &
pids+=($!)
slurmd -D -f "$SLURM_CONF" -N "$host" >"$tmp/slurmd.stdout.log" 2>&1 &
pids+=($!)

deadline=$((SECONDS + 20))
until [ "$(sinfo -h -p local -o %T 2>/dev/null)" = "idle" ]; do
  [ $SECONDS -lt $deadline ] || fail "node $host not idle in Slurm after 20 s: $(sinfo 2>&1)"
  sleep 0.2
done

# The demo recipe has 2 ranks of fleet-engine, which rendezvous through the SparkFleet
# controller; an export runs one rank (--nodes 1), which serves alone.
"$fleet" export "$src/recipes/local-demo.yaml" --format slurm --nodes 1 --gpus-per-node 0 \
  -o "port=$engine_port" >"$tmp/demo.sbatch" 2>"$tmp/export.log" || fail "export failed"
# fleet-engine is built beside fleet; the job inherits this PATH (sbatch exports the
# environment).
PATH=$(dirname "$fleet"):$PATH
job=$(sbatch --parsable --output="$tmp/job.out" "$tmp/demo.sbatch") || fail "sbatch failed"

deadline=$((SECONDS + 30))
until curl -fsS "http://127.0.0.1:$engine_port/health" >/dev/null 2>&1; do
  state=$(squeue -h -j "$job" -o %T 2>/dev/null || true)
  [ -n "$state" ] || fail "job $job ended before its endpoint answered"
  [ $SECONDS -lt $deadline ] || fail "job $job ($state): no answer on port $engine_port in 30 s"
  sleep 0.2
done
models=$(curl -fsS "http://127.0.0.1:$engine_port/v1/models") || fail "/v1/models failed"
echo "$models" | grep -q '"object"' || fail "/v1/models answered: $models"
grep -q "endpoint http://" "$tmp/job.out" || fail "the job did not print its endpoint"
echo "ok: job $job serves on port $engine_port: $models"

scancel "$job"
deadline=$((SECONDS + 15))
while [ -n "$(squeue -h -j "$job" -o %T 2>/dev/null || true)" ]; do
  [ $SECONDS -lt $deadline ] || fail "job $job still listed 15 s after scancel"
  sleep 0.2
done
if curl -fsS "http://127.0.0.1:$engine_port/health" >/dev/null 2>&1; then
  fail "the engine still answers after its job was cancelled"
fi

# Multi-node: a 2-rank vLLM group and a 4-rank one fit the declared Sparks.
for recipe in deepseek-v4-flash-2x deepseek-v4-flash-4x; do
  "$fleet" export "$src/recipes/$recipe.yaml" --format slurm --partition sparks \
    --fabric-interface enp1s0f1np1 >"$tmp/$recipe.sbatch" 2>>"$tmp/export.log" ||
    fail "export of $recipe failed"
  out=$(sbatch --test-only "$tmp/$recipe.sbatch" 2>&1) || fail "sbatch --test-only $recipe: $out"
  echo "$out" | grep -q "to start at" || fail "sbatch --test-only $recipe: $out"
  echo "ok: $recipe: $out"
done
# And one more rank than the cluster has is refused, so the check above can fail.
"$fleet" export "$src/recipes/deepseek-v4-flash-4x.yaml" --format slurm --partition sparks \
  --nodes 5 >"$tmp/five.sbatch" 2>>"$tmp/export.log" || fail "export of 5 ranks failed"
if out=$(sbatch --test-only "$tmp/five.sbatch" 2>&1); then
  fail "sbatch --test-only accepted 5 nodes of 4: $out"
fi
echo "ok: 5 ranks on 4 Sparks refused: $out"
