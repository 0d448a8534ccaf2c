#!/bin/sh
# Checks deploy/systemd/*.service with `systemd-analyze verify` (against this build's `fleet`,
# since /usr/bin/fleet is not installed here) and the settings the units promise. verify exits 0
# on an unknown key or a bad value and only prints a warning, so any output fails the test.
# Usage: systemd_units_test.sh SOURCE_DIR FLEET_BINARY. Exit 77 (skipped) without systemd-analyze.
set -eu
src=$1
fleet=$2
if ! command -v systemd-analyze >/dev/null 2>&1; then
  echo "skipped: systemd-analyze not installed (apt-get install systemd)"
  exit 77
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for unit in fleet-controller.service fleet-agent.service; do
  sed "s#/usr/bin/fleet #$fleet #" "$src/deploy/systemd/$unit" >"$tmp/$unit"
done
if ! out=$(systemd-analyze verify "$tmp"/*.service 2>&1) || [ -n "$out" ]; then
  echo "FAIL: systemd-analyze verify:"
  echo "$out"
  exit 1
fi

fail=0
# expect UNIT LINE: the unit has exactly this line.
expect() {
  if ! grep -qxF "$2" "$src/deploy/systemd/$1"; then
    echo "FAIL: $1 lacks the line: $2"
    fail=1
  fi
}
for unit in fleet-controller.service fleet-agent.service; do
  expect $unit "Restart=always"
  expect $unit "RestartSec=5s"
  expect $unit "StartLimitIntervalSec=0"
  expect $unit "Wants=network-online.target"
done
expect fleet-controller.service "StateDirectory=fleet"
expect fleet-controller.service "After=network-online.target"
expect fleet-agent.service "After=network-online.target docker.service"
expect fleet-agent.service "StateDirectory=fleet-agent"
expect fleet-agent.service "LimitMEMLOCK=infinity"
expect fleet-agent.service "KillMode=process"
expect fleet-agent.service "LoadCredential=join-token:/etc/fleet/join-token"
# The token reaches the agent as a file: no command line may carry a token itself.
if grep -E '^ExecStart=.*(--token|FLEET_JOIN_TOKEN)' "$src"/deploy/systemd/*.service; then
  echo "FAIL: a unit passes the join token on the command line"
  fail=1
fi
if ! grep -qE '^ExecStart=.*--join-file \$\{CREDENTIALS_DIRECTORY\}/join-token' \
  "$src/deploy/systemd/fleet-agent.service"; then
  echo "FAIL: fleet-agent.service does not read the token from its credential"
  fail=1
fi
[ $fail -eq 0 ] && echo "ok: both units verify"
exit $fail
