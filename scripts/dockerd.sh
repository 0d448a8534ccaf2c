#!/bin/sh
# Makes sure a Docker engine answers on this machine, for the docker runtime's integration
# tests: starts `dockerd --iptables=false --bridge=none` in the background when `docker info`
# fails, and waits up to 30 s for it. Idempotent. Usage: scripts/dockerd.sh [LOG_DIR]
set -eu

log_dir=${1:-/tmp}
docker=${DOCKER:-docker}

if "$docker" info >/dev/null 2>&1; then
  echo "dockerd: already running"
  exit 0
fi
if ! command -v dockerd >/dev/null 2>&1; then
  echo "dockerd: not installed; install the Debian package docker.io (apt-get install docker.io)" >&2
  exit 1
fi
mkdir -p "$log_dir"
log="$log_dir/dockerd.log"
# No iptables and no bridge: containers of shards use the host network, and a test machine
# may not allow netfilter changes.
nohup dockerd --iptables=false --bridge=none >"$log" 2>&1 &
echo "dockerd: started (pid $!), log in $log"
i=0
while [ "$i" -lt 300 ]; do
  if "$docker" info >/dev/null 2>&1; then
    echo "dockerd: answering after $((i / 10)).$((i % 10)) s"
    exit 0
  fi
  sleep 0.1
  i=$((i + 1))
done
echo "dockerd: no answer within 30 s; last lines of $log:" >&2
tail -n 20 "$log" >&2
exit 1
