#!/usr/bin/env bash
# The Outpost demo, on embedded defaults: import the example image, run two
# instruments in real LXC containers, crash one and watch it come back,
# kill -9 outpostd and watch it re-adopt the running instruments, then stop
# everything and leave the machine as it was. Called by `./run demo`.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

STATE=${OUTPOST_DEMO_STATE:-/var/tmp/outpost-demo}
OUTPOSTD=${OUTPOSTD:-$PWD/target/debug/outpostd}
INIT=${OUTPOST_INIT:?set by ./run}
IMAGES=${OUTPOST_TEST_IMAGES:-$PWD/target/images}
export OUTPOST_STATE_DIR=$STATE

step() { printf '\n\033[1;36m### %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*" >&2; "$@"; }
pause() { sleep "${DEMO_PAUSE:-1}"; }

daemon_pid() { [ -s "$STATE/outpostd.lock" ] && cat "$STATE/outpostd.lock" || true; }

# Leaves no container, cgroup, nats-server or daemon behind, also on
# Ctrl-C or error.
cleanup() {
  local pid
  pid=$(daemon_pid)
  [ -n "$pid" ] && kill -9 "$pid" 2>/dev/null || true
  if [ -s "$STATE/nats/nats-server.pid" ]; then
    kill -9 "$(cat "$STATE/nats/nats-server.pid")" 2>/dev/null || true
  fi
  if [ -d "$STATE/containers" ]; then
    for c in "$STATE"/containers/*/; do
      [ -d "$c" ] || continue
      n=$(basename "$c")
      lxc-stop -P "$STATE/containers" -n "$n" -k >/dev/null 2>&1 || true
      for d in /sys/fs/cgroup/*/lxc.monitor."$n" /sys/fs/cgroup/*/lxc.payload."$n"; do
        [ -d "$d" ] && rmdir "$d" 2>/dev/null || true
      done
    done
  fi
}
trap cleanup EXIT

start_daemon() {
  "$OUTPOSTD" run --sensor-file "$STATE/sensor.toml" --init "$INIT" --nats-port 0 "$@" \
    >>"$STATE/outpostd.log" 2>&1 &
  disown
  local want=$(( $(grep -c 'outpostd ready' "$STATE/outpostd.log" 2>/dev/null || true) + 1 ))
  for _ in $(seq 1 100); do
    [ "$(grep -c 'outpostd ready' "$STATE/outpostd.log" 2>/dev/null || true)" -ge "$want" ] && return 0
    sleep 0.1
  done
  tail -20 "$STATE/outpostd.log"; exit 1
}

wait_state() { # instrument state
  for _ in $(seq 1 100); do
    "$OUTPOSTD" status --json | python3 -c "
import json,sys; d=json.load(sys.stdin)
sys.exit(0 if any(i['name']=='$1' and i['state']=='$2' for i in d['instruments']) else 1)" && return 0
    sleep 0.1
  done
  echo "instrument $1 did not become $2" >&2
  return 1
}

wait_health() { # instrument health
  for _ in $(seq 1 100); do
    "$OUTPOSTD" status --json | python3 -c "
import json,sys; d=json.load(sys.stdin)
sys.exit(0 if any(i['name']=='$1' and i['health']=='$2' for i in d['instruments']) else 1)" && return 0
    sleep 0.1
  done
  echo "instrument $1 did not become $2" >&2
  return 1
}

init_pid() {
  "$OUTPOSTD" status --json | python3 -c "
import json,sys; d=json.load(sys.stdin)
print(next(i['init_pid'] for i in d['instruments'] if i['name']=='$1'))"
}

step "A fresh state directory: $STATE"
cleanup
rm -rf "$STATE"
mkdir -p "$STATE"
cat >"$STATE/sensor.toml" <<'EOF'
# The desired state of this sensor (the README documents every field).
[sensor]
name = "demo-sensor"

[[instrument]]
name = "hello"
image = "example"
version = "0.1.0"
restart = "on-failure"
backoff = { initial = "2s" }
config = { greeting = "hello from the demo" }

[[instrument]]
name = "quiet"
image = "example"
version = "0.1.0"
limits = { memory = "32MiB", cpu = 0.25 }
EOF
run cat "$STATE/sensor.toml"

step "Import the example image (the sha256 is checked before anything is unpacked)"
run "$OUTPOSTD" image import "$IMAGES/example-0.1.0.tar.gz"
run "$OUTPOSTD" image list

step "Start outpostd: it stores the desired state, starts its nats-server and both instruments"
start_daemon
wait_health hello ok
wait_health quiet ok
run "$OUTPOSTD" status
pause

step "The bus: each instrument has its own identity; events land in the EVENTS stream"
run "$OUTPOSTD" events

step "Inside 'hello': only the capabilities, limits and mounts its manifest asks for"
run lxc-attach -P "$STATE/containers" -n hello -- /usr/bin/outpost-probe \
  | python3 -c '
import json, sys
r = json.load(sys.stdin)
p = r["processes"]["entrypoint"]
print("  entrypoint:   ", " ".join(p["cmdline"]))
print("  CapEff:       ", p["CapEff"], "(kill + net_raw)")
print("  no_new_privs: ", p["NoNewPrivs"], " seccomp:", p["Seccomp"])
print("  memory limit: ", r["cgroup"]["memory"], " pids:", r["cgroup"]["pids"], " cpu:", r["cgroup"]["cpu"])
print("  interfaces:   ", r["interfaces"])
for m in r["mounts"]:
    if m["target"] in ("/", "/var/lib/instrument", "/run/instrument"):
        print("  mount %-20s %s" % (m["target"], m["fstype"]))'

step "Crash 'hello' (SIGKILL its process): on-failure restarts it after its back-off"
HELLO=$(init_pid hello)
ENTRY=$(cut -d' ' -f1 "/proc/$HELLO/task/$HELLO/children")
run kill -9 "$ENTRY"
sleep 0.5
run "$OUTPOSTD" status
wait_state hello running
wait_health hello ok
run "$OUTPOSTD" status
run tail -n 4 "$STATE/persist/hello/boots.jsonl"

step "kill -9 outpostd: the instruments keep running"
BEFORE_HELLO=$(init_pid hello)
BEFORE_QUIET=$(init_pid quiet)
run kill -9 "$(daemon_pid)"
sleep 0.3
run ps -o pid,args -p "$BEFORE_HELLO,$BEFORE_QUIET"

step "Restart outpostd: it re-adopts them, same init pids, no restart"
start_daemon --stop-on-exit
run "$OUTPOSTD" status
[ "$(init_pid hello)" = "$BEFORE_HELLO" ] && [ "$(init_pid quiet)" = "$BEFORE_QUIET" ] \
  && echo "  re-adopted: hello pid $BEFORE_HELLO, quiet pid $BEFORE_QUIET (unchanged)"
run grep -h 're-adopted' "$STATE/outpostd.log"

step "Health and config results are platform events too"
run "$OUTPOSTD" events --instrument outpostd

step "Stop: SIGTERM to outpostd (started with --stop-on-exit) stops every instrument and its nats-server"
run kill -TERM "$(daemon_pid)"
for _ in $(seq 1 100); do [ -z "$(pgrep -f "outpostd run --sensor-file $STATE" || true)" ] && break; sleep 0.1; done
run "$OUTPOSTD" status
run ls "$STATE/containers"
step "Done. State, logs and persistent data are under $STATE (delete it freely)."
