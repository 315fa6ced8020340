#!/usr/bin/env bash
# Two gossipmesh daemons in namespaces on a bridge (scripts/netns-mesh.sh):
# one TCP stream through the overlay, ping RTT, daemon CPU seconds per GB,
# and optionally a py-spy profile of both daemons. The quick before/after
# check for data-plane changes; benchmarks/throughput is the full comparison.
#
#   benchmarks/dataplane.sh                 # 10 s, 1 stream
#   T=5 P=4 benchmarks/dataplane.sh         # 4 streams
#   UDP=1 benchmarks/dataplane.sh           # iperf3 -u -b 0 (reports loss)
#   PROFILE=/tmp/prof benchmarks/dataplane.sh  # py-spy raw profiles (sender/receiver)
#   LOSS=10 benchmarks/dataplane.sh         # drop 10/1000 underlay packets at the receiver
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export PATH=$ROOT/.venv/bin:$PATH
MESH_TAG=gmdp$$
source "$ROOT/scripts/netns-mesh.sh"
IPERF_PID=
cleanup() {
    if [ -n "$IPERF_PID" ]; then kill "$IPERF_PID" 2>/dev/null || true; fi
    mesh_teardown
}
trap cleanup EXIT
T=${T:-10}
P=${P:-1}

mesh_switch_up
mesh_node_add a 1
mesh_node_add b 2
head -c 32 /dev/urandom | base64 >"$MESH_DIR/secret"
chmod 600 "$MESH_DIR/secret"
mesh_daemon_start a --network-secret "$MESH_DIR/secret" --interface gm0 --log-level warning
status_ipv4() {
    ip netns exec "$(mesh_ns "$1")" gossipmesh status --json --state-dir "$MESH_DIR/$1/state" |
        python3 -c "import json,sys; print(json.load(sys.stdin)['ipv4'])"
}
# b's first bootstrap datagram must find a listening: start b once a answers.
mesh_wait 30 status_ipv4 a || { echo "node a never answered status" >&2; exit 1; }
mesh_daemon_start b --network-secret "$MESH_DIR/secret" --interface gm0 \
    --bootstrap 192.0.2.1:51821 --log-level warning
mesh_wait 30 status_ipv4 b || { echo "node b never answered status" >&2; exit 1; }
B4=$(status_ipv4 b)
mesh_wait 60 ip netns exec "$(mesh_ns a)" ping -c 1 -W 1 "$B4" || { echo "no ping a->b" >&2; exit 1; }
# Before any bulk traffic no stream link exists: this RTT is the UDP path's.
RTT_FIRST=$(ip netns exec "$(mesh_ns a)" ping -c 20 -i 0.05 "$B4" | tail -1)
if [ "${LOSS:-0}" != 0 ]; then
    ip netns exec "$(mesh_ns b)" nft -f - <<EOF
table inet gmloss {
    chain input {
        type filter hook input priority 0;
        udp dport 51821 numgen random mod 1000 < $LOSS drop
    }
}
EOF
fi
ip netns exec "$(mesh_ns b)" iperf3 -s -1 >/dev/null 2>&1 &
IPERF_PID=$!
sleep 0.5

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
A0=$(cpu_ticks "${MESH_PIDS[0]}")
B0=$(cpu_ticks "${MESH_PIDS[1]}")
if [ -n "${PROFILE:-}" ]; then
    (sleep 1; py-spy record -d $((T - 2)) -r 200 -p "${MESH_PIDS[0]}" -o "$PROFILE.sender.txt" \
        --format raw --nonblocking --threads >/dev/null 2>&1) &
    SPY1=$!
    (sleep 1; py-spy record -d $((T - 2)) -r 200 -p "${MESH_PIDS[1]}" -o "$PROFILE.receiver.txt" \
        --format raw --nonblocking --threads >/dev/null 2>&1) &
    SPY2=$!
fi
if [ "${UDP:-0}" = 1 ]; then
    MODE=(-u -b 0 -l 1280)
else
    MODE=()
fi
ip netns exec "$(mesh_ns a)" iperf3 -c "$B4" -t "$T" -P "$P" "${MODE[@]}" -J >"$MESH_DIR/iperf.json"
A1=$(cpu_ticks "${MESH_PIDS[0]}")
B1=$(cpu_ticks "${MESH_PIDS[1]}")
if [ -n "${PROFILE:-}" ]; then wait "$SPY1" "$SPY2" || true; fi
RTT=$(ip netns exec "$(mesh_ns a)" ping -c 20 -i 0.05 "$B4" | tail -1)
python3 - "$MESH_DIR/iperf.json" "$((A1 - A0))" "$((B1 - B0))" "$(getconf CLK_TCK)" "$RTT" \
    "$RTT_FIRST" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
end = report["end"]
summary = end.get("sum_received") or end["sum"]
received_bytes = summary["bytes"]
gb = received_bytes / 1e9
tck = int(sys.argv[4])
sender_s, receiver_s = int(sys.argv[2]) / tck, int(sys.argv[3]) / tck
print(f"throughput_mbit {summary['bits_per_second'] / 1e6:.0f}")
if "lost_percent" in summary:
    print(f"udp_lost_percent {summary['lost_percent']:.2f}")
if "retransmits" in end.get("sum_sent", {}):
    print(f"retransmits {end['sum_sent']['retransmits']}")
print(f"cpu_s_per_gb sender {sender_s / gb:.2f} receiver {receiver_s / gb:.2f}")
print(f"rtt before bulk traffic (UDP) {sys.argv[6]}")
print(f"rtt after bulk traffic (a stream link, if on) {sys.argv[5]}")
EOF
