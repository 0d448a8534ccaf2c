#!/bin/sh
# One scripted run of a fleet-engine group on the GPU machine, through the whole system: a local
# cluster of N agents on 127.0.0.x (one per GPU; rank r uses GPU r), `fleet apply` of a `native`
# recipe with --device cuda (tensor parallel over N ranks, experts split across them), the
# group's own reference check against a single-rank model (N > 1), completions whole and
# streamed, a burst of concurrent requests batched into shared steps, `fleet health` while it
# serves, `fleet stop` leaving no fleet-engine process, `fleet fabric --tests nccl` over the N
# nodes, and the collective benchmark over the N GPUs. Prints a short table last.
# Needs the pack of make-dist.sh (fleet, fleet-engine and their libraries).
# Usage: tests/gpu/run-native-group.sh [DIST_DIR (default: dist/gpu)] [GPUS (default: all)]
set -u

dist=$(cd "${1:-dist/gpu}" && pwd)
out=${OUT:-/tmp}
export LD_LIBRARY_PATH="$dist/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# NVLink multicast stays off; the agents pass it on to every rank they start.
export NCCL_NVLS_ENABLE="${NCCL_NVLS_ENABLE:-0}"
gpus=${2:-$(nvidia-smi -L | grep -c '^GPU')}
fleet="$dist/bin/fleet"
work=$(mktemp -d /tmp/fleet-gpu-group.XXXXXX)
export FLEET_CONFIG="$work/cluster/config.yaml"
endpoint=http://127.0.0.2:8000
failures=0

note() { echo "$*" | tee -a "$out/summary.txt"; }
check() {  # NAME RC
  if [ "$2" = 0 ]; then note "PASS $1"; else note "FAIL $1 (exit $2)"; failures=$((failures + 1)); fi
}
# HTTP through curl, or python3 where the machine has no curl; both without the packed
# libraries, whose libcurl is older than the host's curl wants.
post() {  # PATH BODY: POSTs JSON to the group's endpoint, prints the answer
  if command -v curl >/dev/null; then
    env -u LD_LIBRARY_PATH curl -sS --noproxy '*' -m 120 -H 'Content-Type: application/json' -d "$2" "$endpoint$1"
  else
    env -u LD_LIBRARY_PATH python3 -c 'import sys, urllib.request as u
r = u.Request(sys.argv[1], data=sys.argv[2].encode(), headers={"Content-Type": "application/json"})
sys.stdout.write(u.urlopen(r, timeout=120).read().decode())' "$endpoint$1" "$2"
  fi
}
get() {  # PATH: GETs from the group's endpoint, prints the answer
  if command -v curl >/dev/null; then
    env -u LD_LIBRARY_PATH curl -sS --noproxy '*' -m 10 "$endpoint$1"
  else
    env -u LD_LIBRARY_PATH python3 -c 'import sys, urllib.request as u
sys.stdout.write(u.urlopen(sys.argv[1], timeout=10).read().decode())' "$endpoint$1"
  fi
}

: >"$out/summary.txt"
note "GPUs: $gpus ($(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1))"
"$fleet" up --nodes "$gpus" --dir "$work/cluster" --no-recipe --detach --timeout 60s \
  >"$work/up.log" 2>&1
check "fleet up: $gpus agents Ready" $?

cat >"$work/gpu-group.yaml" <<RECIPE
recipe_version: "2"
name: gpu-group
engine: native
runtime: process
nodes: $gpus
defaults:
  port: 8000
health:
  start_timeout: 5m
command: >-
  fleet-engine serve --device cuda --port {port} --hidden-size 4096 --num-layers 4
  --num-heads 32 --num-experts 64 --experts-per-token 6 --expert-ffn-size 1536
  --vocab-size 32768 --max-seq-len 1024 --max-num-seqs 8 --verify-steps 4
RECIPE
# NCCL 2.28 at 4 or more ranks is what preflight refuses (it wedges long generations): the run
# goes on with --force so the group is still measured, and the table says so.
force=""
[ "$gpus" -ge 4 ] && force="--force"
start=$(date +%s.%N)
"$fleet" apply "$work/gpu-group.yaml" --timeout 5m $force >"$out/apply.log" 2>&1
apply_rc=$?
end=$(date +%s.%N)
check "fleet apply of $gpus rank(s), Ready in $(awk "BEGIN { printf \"%.2f\", $end - $start }") s" $apply_rc
"$fleet" preflight "$work/gpu-group.yaml" >"$work/preflight.log" 2>&1

post /v1/completions '{"prompt": "Hello from SparkFleet", "max_tokens": 32}' >"$work/completion.json"
grep -q '"completion_tokens":32' "$work/completion.json"
check "completion: $(sed -E 's/.*"text":"([^"]*)".*/\1/' "$work/completion.json")" $?
post /v1/chat/completions \
  '{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "stream": true}' \
  >"$work/stream.txt"
grep -q 'data: \[DONE\]' "$work/stream.txt"
check "streamed chat completion, $(grep -c '"content"' "$work/stream.txt") chunks" $?
get /engine >"$out/engine.json"
note "engine: $(cat "$out/engine.json")"

# Eight requests at once: batched into shared steps, not run one after another.
for i in 1 2 3 4 5 6 7 8; do
  post /v1/completions "{\"prompt\": \"request $i\", \"max_tokens\": 64}" >"$work/burst-$i.json" &
done
wait
get /metrics >"$out/metrics.txt"
grep -E '^(vllm:generation_tokens_total|fleet_engine:step_seconds_(sum|count))' \
  "$out/metrics.txt" | tee -a "$out/summary.txt"

# `fleet health` while the group serves: the agents' fresh looks (GPU temperature and clock, ECC
# and XID errors) and the group's live figures from its head's /metrics.
"$fleet" health -o json >"$out/health.json" 2>&1
grep -Eq '"tokens_per_second": [0-9]' "$out/health.json" &&
  grep -Eq '"gpu": "[0-9]+ x [^"]*, [0-9]+ C, [0-9]+ MHz' "$out/health.json"
check "fleet health: live GPU figures and the group's tokens/s" $?
grep -E '"(gpu|gpu_errors|tokens_per_second|kv_cache_usage)"' "$out/health.json" | sort | uniq -c |
  head -n 8 | tee -a "$out/summary.txt"

"$fleet" logs gpu-group --rank 0 >"$out/rank0.log" 2>&1
grep -E 'reference check|rank 0 of' "$out/rank0.log" | tee -a "$out/summary.txt"
"$fleet" stop gpu-group >"$work/stop.log" 2>&1
check "fleet stop" $?
# The ranks exit a moment after `fleet stop` returns: poll for up to 10 s.
for _ in $(seq 100); do
  left=$(pgrep -c -f 'fleet-engine serve' || true)
  [ "$left" = 0 ] && break
  sleep 0.1
done
[ "$left" = 0 ]
check "no fleet-engine process left after stop ($left)" $?
# `fleet fabric --tests nccl`: fleet-engine's collective benchmark as a group over every node
# (one GPU each). One rank has no bus to measure: its result says the sums were right.
"$fleet" fabric --tests nccl -o json >"$out/fabric-nccl.json" 2>&1
if [ "$gpus" = 1 ]; then
  grep -q 'every result correct' "$out/fabric-nccl.json"
else
  grep -Eq '"bandwidth_gbps": [0-9]' "$out/fabric-nccl.json"
fi
check "fleet fabric --tests nccl over $gpus node(s)" $?
grep -E '"(device|bandwidth_gbps|verdict|reason)"' "$out/fabric-nccl.json" | tee -a "$out/summary.txt"
"$fleet" down --dir "$work/cluster" >"$work/down.log" 2>&1

"$dist/bin/fleet-engine" bench-collectives --device cuda --local-ranks "$gpus" -b 8 -e 1G -f 4 \
  >"$out/bench-collectives.log" 2>&1
check "bench-collectives over $gpus GPU(s)" $?

cat "$out/apply.log" "$out/rank0.log" "$out/bench-collectives.log"
echo
echo "== fleet-engine group on GPUs =="
cat "$out/summary.txt"
[ "$failures" = 0 ]
