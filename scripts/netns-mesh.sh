# Shared by scripts/demo and benchmarks: build N gossipmesh nodes in network
# namespaces joined by a bridge that lives in its own namespace, so nothing
# is added to the host's network. Underlay addresses are 192.0.2.0/24
# (TEST-NET-1, never routed anywhere). Source this file; call mesh_teardown
# from an EXIT trap.

MESH_TAG=${MESH_TAG:-gm$$}
MESH_DIR=${MESH_DIR:-$(mktemp -d)}
MESH_SWITCH="${MESH_TAG}-sw"
MESH_NODES=()
MESH_PIDS=()

mesh_ns() { echo "${MESH_TAG}-$1"; }

mesh_switch_up() {
    ip netns add "$MESH_SWITCH"
    ip -n "$MESH_SWITCH" link add br0 type bridge
    ip -n "$MESH_SWITCH" link set br0 up
    ip -n "$MESH_SWITCH" link set lo up
}

# mesh_node_add NAME INDEX: namespace NAME with 192.0.2.INDEX on the bridge.
mesh_node_add() {
    local name=$1 index=$2 ns
    ns=$(mesh_ns "$name")
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    ip link add "${MESH_TAG}${index}a" type veth peer name "${MESH_TAG}${index}b"
    ip link set "${MESH_TAG}${index}a" netns "$ns"
    ip link set "${MESH_TAG}${index}b" netns "$MESH_SWITCH"
    ip -n "$ns" link set "${MESH_TAG}${index}a" name eth0
    ip -n "$ns" addr add "192.0.2.${index}/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$MESH_SWITCH" link set "${MESH_TAG}${index}b" master br0 up
    MESH_NODES+=("$name")
}

# mesh_daemon_start NAME [gossipmesh up flags...]: runs `gossipmesh up` in NAME's namespace.
mesh_daemon_start() {
    local name=$1 ns
    shift
    ns=$(mesh_ns "$name")
    mkdir -p "$MESH_DIR/$name"
    ip netns exec "$ns" gossipmesh up --key "$MESH_DIR/$name/node.key" \
        --state-dir "$MESH_DIR/$name/state" --name "$name" --dns off "$@" \
        >"$MESH_DIR/$name/log" 2>&1 &
    MESH_PIDS+=($!)
}

# mesh_wait SECONDS COMMAND...: retry COMMAND until it succeeds or the deadline passes.
mesh_wait() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        if [ $SECONDS -ge $deadline ]; then
            return 1
        fi
        sleep 0.2
    done
}

mesh_teardown() {
    local pid ns
    for pid in "${MESH_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${MESH_PIDS[@]}"; do
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    for name in "${MESH_NODES[@]}"; do
        ns=$(mesh_ns "$name")
        ip netns del "$ns" 2>/dev/null || true
    done
    ip netns del "$MESH_SWITCH" 2>/dev/null || true
    rm -rf "$MESH_DIR"
}
