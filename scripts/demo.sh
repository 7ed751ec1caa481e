#!/usr/bin/env bash
# The Outpost demo, on embedded defaults: import the example image, run two
# instruments in real LXC containers, crash one and watch it come back,
# kill -9 outpostd and watch it re-adopt the running instruments; then put
# the beacon into an isolated segment, open a leak and watch the alert
# arrive, close it; then stop everything and leave the machine as it was.
# Called by `./run demo`.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")/.."

STATE=${OUTPOST_DEMO_STATE:-/var/tmp/outpost-demo}
OUTPOSTD=${OUTPOSTD:-$PWD/target/debug/outpostd}
CTL=$(dirname "$OUTPOSTD")/outpostctl
INIT=${OUTPOST_INIT:?set by ./run}
IMAGES=${OUTPOST_TEST_IMAGES:-$PWD/target/images}
export OUTPOST_STATE_DIR=$STATE

step() { printf '\n\033[1;36m### %s\033[0m\n' "$*"; }
run() { printf '\033[2m$ %s\033[0m\n' "$*" >&2; "$@"; }
pause() { sleep "${DEMO_PAUSE:-1}"; }

daemon_pid() { [ -s "$STATE/outpostd.lock" ] && cat "$STATE/outpostd.lock" || true; }

# The beacon's network: a segment bridge outpostd makes, a router
# namespace and an "outside" namespace where beacon-home answers.
SEG=opdemo-seg
ROUTER=opdemo-router
OUTSIDE=opdemo-outside
BEACON_KEY=${BEACON_KEY:-d3a0d3a0d3a0d3a0d3a0d3a0d3a0d3a0}
HOME_BIN=$(dirname "$OUTPOSTD")/beacon-home

# Leaves no container, cgroup, nats-server, daemon, namespace or interface
# behind, also on Ctrl-C or error.
cleanup() {
  if [ -s "$STATE/bus/pid" ]; then kill "$(cat "$STATE/bus/pid")" 2>/dev/null || true; fi
  if [ -s "$STATE/beacon-home.pid" ]; then kill "$(cat "$STATE/beacon-home.pid")" 2>/dev/null || true; fi
  ip netns del "$ROUTER" 2>/dev/null || true
  ip netns del "$OUTSIDE" 2>/dev/null || true
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
  ip link del "$SEG" 2>/dev/null || true
  # Each instrument's tree (idmapped image, tmpfs, storage) is mounted
  # under instances/; its loop device goes with the last mount.
  { grep -F " $STATE/instances/" /proc/self/mountinfo 2>/dev/null || true; } | awk '{print $5}' \
    | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
trap cleanup EXIT

# outpostctl talks to outpostd over D-Bus. This machine may have no system
# bus, and the demo must leave the host as it was: a private dbus-daemon
# with the system bus's defaults and the repository's policy file.
start_bus() {
  mkdir -p "$STATE/bus"; chmod 755 "$STATE/bus"
  sed -e "s|@SOCKET@|$STATE/bus/socket|" -e "s|@POLICY@|$PWD/platform/dbus/org.outpost.Sensor1.conf|" \
    platform/dbus/private-bus.conf.in >"$STATE/bus/bus.conf"
  dbus-daemon --config-file="$STATE/bus/bus.conf" --fork --print-pid=3 3>"$STATE/bus/pid" >/dev/null
  export OUTPOST_BUS="unix:path=$STATE/bus/socket"
}

start_daemon() {
  "$OUTPOSTD" run --sensor-file "$STATE/sensor.toml" --init "$INIT" --nats-port 0 \
    --dbus "$OUTPOST_BUS" "$@" \
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
    "$CTL" status --format json | python3 -c "
import json,sys; d=json.load(sys.stdin)
sys.exit(0 if any(i['name']=='$1' and i['state']=='$2' for i in d['instruments']) else 1)" && return 0
    sleep 0.1
  done
  echo "instrument $1 did not become $2" >&2
  return 1
}

wait_health() { # instrument health
  for _ in $(seq 1 100); do
    "$CTL" status --format json | python3 -c "
import json,sys; d=json.load(sys.stdin)
sys.exit(0 if any(i['name']=='$1' and i['health']=='$2' for i in d['instruments']) else 1)" && return 0
    sleep 0.1
  done
  echo "instrument $1 did not become $2" >&2
  return 1
}

init_pid() {
  "$CTL" status --format json | python3 -c "
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

step "Start outpostd: it stores the desired state and starts its nats-server; both instruments wait for their image"
start_bus
start_daemon
run "$CTL" status
pause

step "Import the example image with outpostctl (the sha256 is checked before anything is unpacked): both instruments start"
run "$CTL" image import "$IMAGES/example-0.1.0.tar.gz"
run "$CTL" image list
wait_health hello ok
wait_health quiet ok
run "$CTL" status
pause

step "Operate it with outpostctl (over D-Bus): change hello's config; it is checked first and versioned"
run "$CTL" config show hello
printf 'greeting = 42\n' >"$STATE/bad-config.toml"
run "$CTL" config set hello "$STATE/bad-config.toml" || echo "  (refused as a whole; nothing changed)"
printf 'greeting = "hello from outpostctl"\n' >"$STATE/hello-config.toml"
run "$CTL" config set hello "$STATE/hello-config.toml" --reason "demo: a friendlier greeting"
run "$CTL" config history hello
run "$CTL" config diff hello 1 2
run "$CTL" instruments

step "The bus: each instrument has its own identity; events land in the EVENTS stream"
run "$CTL" events

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

step "Unprivileged: root inside 'hello' is a host id of its own; what it writes is owned by that id"
HELLO=$(init_pid hello)
printf '  uid_map of its init (inside, host, count): %s\n' "$(tr -s ' ' < "/proc/$HELLO/uid_map")"
run lxc-attach -P "$STATE/containers" -n hello -- /bin/sh -c \
  'id -u; touch /var/lib/instrument/made-inside; unshare -U true 2>&1 || echo "  (no nested user namespace)"'
run ls -ln "$STATE/instances/hello/persist/made-inside"
run df -h "$STATE/instances/hello/persist"

step "Crash 'hello' (SIGKILL its process): on-failure restarts it after its back-off"
HELLO=$(init_pid hello)
ENTRY=$(cut -d' ' -f1 "/proc/$HELLO/task/$HELLO/children")
run kill -9 "$ENTRY"
sleep 0.5
run "$CTL" status
wait_state hello running
wait_health hello ok
run "$CTL" status
run tail -n 4 "$STATE/instances/hello/persist/boots.jsonl"

step "kill -9 outpostd: the instruments keep running"
BEFORE_HELLO=$(init_pid hello)
BEFORE_QUIET=$(init_pid quiet)
run kill -9 "$(daemon_pid)"
sleep 0.3
run ps -o pid,args -p "$BEFORE_HELLO,$BEFORE_QUIET"

step "Restart outpostd: it re-adopts them, same init pids, no restart"
start_daemon --stop-on-exit
run "$CTL" status
[ "$(init_pid hello)" = "$BEFORE_HELLO" ] && [ "$(init_pid quiet)" = "$BEFORE_QUIET" ] \
  && echo "  re-adopted: hello pid $BEFORE_HELLO, quiet pid $BEFORE_QUIET (unchanged)"
run grep -h 're-adopted' "$STATE/outpostd.log"

step "Health and config results are platform events too"
run "$CTL" events --instrument outpostd

step "The beacon: a segment that should be isolated, a router, and beacon-home outside"
ip netns add "$ROUTER"; ip netns add "$OUTSIDE"
ip -n "$ROUTER" link set lo up; ip -n "$OUTSIDE" link set lo up
ip -n "$ROUTER" link add eth1 type veth peer name eth0 netns "$OUTSIDE"
ip -n "$ROUTER" addr add 10.80.0.1/24 dev eth1; ip -n "$ROUTER" link set eth1 up
ip -n "$OUTSIDE" addr add 10.80.0.2/24 dev eth0; ip -n "$OUTSIDE" link set eth0 up
ip netns exec "$ROUTER" sysctl -qw net.ipv4.ip_forward=0
echo "  beacon 10.79.0.2 -- bridge $SEG -- router 10.79.0.1 | 10.80.0.1 -- outside 10.80.0.2 (beacon-home)"
ip netns exec "$OUTSIDE" "$HOME_BIN" --key "$BEACON_KEY" --log "$STATE/beacon-home.jsonl" \
  --tcp 10.80.0.2:7000 --udp 10.80.0.2:7001 --http 10.80.0.2:8080 --dns 10.80.0.2:5353 \
  --zone canary.demo >/dev/null 2>"$STATE/beacon-home.log" &
echo $! >"$STATE/beacon-home.pid"
run "$CTL" image import "$IMAGES/beacon-0.1.0.tar.gz"
cat >>"$STATE/sensor.toml" <<TOML

[[instrument]]
name = "beacon"
image = "beacon"
version = "0.1.0"

[instrument.interfaces.seg0]
type = "bridge"
bridge = "$SEG"
create = true
addresses = ["10.79.0.2/24"]
routes = [{ to = "0.0.0.0/0", via = "10.79.0.1" }]

[instrument.config]
window = "2s"
summary = "4s"

[instrument.config.probe]
interval = "1s"
timeout = "800ms"
key = "$BEACON_KEY"
tcp = ["10.80.0.2:7000"]
udp = ["10.80.0.2:7001"]
icmp = ["10.80.0.2"]
http = ["http://10.80.0.2:8080/canary"]
dns = [{ name = "canary.demo", resolvers = ["10.80.0.2:5353"] }]
TOML
run tail -n 26 "$STATE/sensor.toml"
run kill -HUP "$(daemon_pid)"
wait_state beacon running
# The router's leg on the segment, now that outpostd made the bridge.
ip link add opdemo-rt type veth peer name eth0 netns "$ROUTER"
ip -n "$ROUTER" addr add 10.79.0.1/24 dev eth0; ip -n "$ROUTER" link set eth0 up
ip link set opdemo-rt master "$SEG" up
wait_health beacon ok

beacon_targets() {
  "$CTL" status --format json | python3 -c '
import json, sys
d = json.load(sys.stdin)
b = next(i for i in d["instruments"] if i["name"] == "beacon")
print("  health:", b["health"], "-", b["health_message"])
for k, a in sorted(b["health_details"].get("targets", {}).items()):
    print("  %-36s %-8s %s" % (k, a["outcome"], a["evidence"]["detail"][:80]))'
}
escape_count() {
  "$CTL" events --format json --instrument beacon | python3 -c '
import json, sys
print(sum(1 for l in sys.stdin if json.loads(l)["envelope"]["kind"] == "escape"))'
}

step "Sealed: every attempt is blocked, and there is no alert"
sleep 3
beacon_targets
echo "  escape alerts: $(escape_count)"

step "Open a leak: the router forwards, and the outside routes back"
run ip -n "$OUTSIDE" route add 10.79.0.0/24 via 10.80.0.1
run ip netns exec "$ROUTER" sysctl -qw net.ipv4.ip_forward=1
for _ in $(seq 1 50); do [ "$(escape_count)" -gt 0 ] && break; sleep 0.2; done
sleep 1
"$CTL" events --format json --instrument beacon | python3 -c '
import json, sys
for l in sys.stdin:
    e = json.loads(l)["envelope"]
    if e["kind"] == "escape":
        p = e["payload"]
        print("  ALERT escape %-5s %-29s %-9s %s" % (p["channel"], p["target"], p["evidence"]["level"], p["evidence"]["detail"][:60]))'
echo "  what beacon-home recorded (the last 5):"
tail -n 5 "$STATE/beacon-home.jsonl" | sed 's/^/    /'
beacon_targets

step "Close the leak: the attempts are blocked again and the alerts stop"
run ip netns exec "$ROUTER" sysctl -qw net.ipv4.ip_forward=0
sleep 2
BEFORE=$(escape_count)
sleep 4
beacon_targets
echo "  escape alerts: $BEFORE two seconds after closing, $(escape_count) four seconds later"

step "Stop: SIGTERM to outpostd (started with --stop-on-exit) stops every instrument and its nats-server"
run kill -TERM "$(daemon_pid)"
for _ in $(seq 1 100); do [ -z "$(pgrep -f "outpostd run --sensor-file $STATE" || true)" ] && break; sleep 0.1; done
run "$CTL" status || echo "  (outpostd has exited: nothing answers outpostctl)"
run ls "$STATE/containers"
step "Done. State, logs and persistent data are under $STATE (delete it freely)."
