#!/usr/bin/env bash
# Wardlink demo: builds (release), creates a scratch hub and one ward edge, simulates a ward of
# patients (a few deteriorating), and shows the live feed a dashboard receives.
# Ctrl-C stops everything cleanly.
#
# Ports (override with the environment): HTTP 8080, QUIC 4433 (UDP), MQTT 1883, edge admin 9180.
# DEMO_PATIENTS (24), DEMO_DETERIORATE (3), DEMO_INTERVAL (3s), DEMO_QUIET=1 shows alerts only.
set -euo pipefail

cd "$(dirname "$0")/.."
HTTP_PORT=${DEMO_HTTP_PORT:-8080}
QUIC_PORT=${DEMO_QUIC_PORT:-4433}
MQTT_PORT=${DEMO_MQTT_PORT:-1883}
MQTT_TLS_PORT=${DEMO_MQTT_TLS_PORT:-8883}
ADMIN_PORT=${DEMO_ADMIN_PORT:-9180}
WARD_PORT=${DEMO_WARD_PORT:-8090}
PATIENTS=${DEMO_PATIENTS:-24}
DETERIORATE=${DEMO_DETERIORATE:-3}
INTERVAL=${DEMO_INTERVAL:-3s}

say() { printf '\033[1m== %s\033[0m\n' "$*" >&2; }

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

healthy() {
    local port=$1 status
    exec 3<>"/dev/tcp/127.0.0.1/$port" || return 1
    printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
    read -r _ status _ <&3 || true
    exec 3<&-
    [ "$status" = "200" ]
}

wait_healthy() {
    local name=$1 port=$2 pid=$3 tries=0
    until healthy "$port" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            say "$name failed to start; its log:"
            cat "$WORK/$name.log" >&2
            exit 1
        fi
        tries=$((tries + 1))
        if [ "$tries" -gt 600 ]; then
            say "$name did not become healthy"
            exit 1
        fi
        sleep 0.05
    done
}

if ! command -v cargo >/dev/null; then
    say "cargo not found: install Rust from https://rustup.rs first"
    exit 1
fi
for p in "$HTTP_PORT" "$MQTT_PORT" "$ADMIN_PORT" "$WARD_PORT"; do
    if port_busy "$p"; then
        say "port $p is in use; set DEMO_HTTP_PORT / DEMO_MQTT_PORT / DEMO_ADMIN_PORT / DEMO_WARD_PORT"
        exit 1
    fi
done

say "building (release)"
cargo build --release --bins --quiet
BIN=$PWD/target/release

WORK=$(mktemp -d -t wardlink-demo.XXXXXX)
PIDS=()
cleanup() {
    trap - INT TERM EXIT
    say "stopping"
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    say "logs and data kept in $WORK"
}
trap cleanup INT TERM EXIT

say "scratch directory: $WORK"
"$BIN/wardlink-cloud" init "$WORK/hub" --http-listen "127.0.0.1:$HTTP_PORT" --quic-listen "127.0.0.1:$QUIC_PORT"
"$BIN/wardlink-cloud" enroll "$WORK/hub" --edge edge-ward7 --ward ward-7 --out "$WORK/edge"

export RUST_LOG=${RUST_LOG:-info,rumqttd=off}
"$BIN/wardlink-cloud" serve --config "$WORK/hub/cloud.toml" >"$WORK/hub.log" 2>&1 &
PIDS+=($!)
wait_healthy hub "$HTTP_PORT" "$!"
say "hub ready on http://127.0.0.1:$HTTP_PORT (QUIC udp/$QUIC_PORT)"

WARDLINK_MQTT_LISTEN="127.0.0.1:$MQTT_PORT" WARDLINK_MQTT_TLS_LISTEN="127.0.0.1:$MQTT_TLS_PORT" \
    WARDLINK_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" WARDLINK_WARD_LISTEN="127.0.0.1:$WARD_PORT" \
    "$BIN/wardlink-edge" run --config "$WORK/edge/edge.toml" >"$WORK/edge.log" 2>&1 &
PIDS+=($!)
wait_healthy edge "$ADMIN_PORT" "$!"
say "edge ready: MQTT 127.0.0.1:$MQTT_PORT, MQTT over TLS 127.0.0.1:$MQTT_TLS_PORT (CA: $WORK/edge/ca.pem), metrics http://127.0.0.1:$ADMIN_PORT/metrics"

WARDLINK_MQTT_LISTEN="127.0.0.1:$MQTT_PORT" \
    "$BIN/wardlink-edge" simulate --config "$WORK/edge/edge.toml" \
    --patients "$PATIENTS" --interval "$INTERVAL" --deteriorate "$DETERIORATE" >"$WORK/simulate.log" 2>&1 &
PIDS+=($!)
say "simulating $PATIENTS patients every $INTERVAL; $DETERIORATE of them deteriorate (first alarms after about a minute)"

TOKEN=$("$BIN/wardlink-cloud" token "$WORK/hub" --user demo-nurse --role nurse --ward ward-7 --ttl 12h)
say "web dashboard: http://127.0.0.1:$HTTP_PORT/?token=$TOKEN"
say "the same page from the edge (the ward view; works with the hub stopped): http://127.0.0.1:$WARD_PORT/?token=$TOKEN"
say "dashboard feed (a nurse token for ward-7); Ctrl-C to stop"
VITALS=(--vitals)
[ "${DEMO_QUIET:-0}" = "1" ] && VITALS=()
"$BIN/wardlink-cloud" watch --url "ws://127.0.0.1:$HTTP_PORT/ws?since=0" --token "$TOKEN" "${VITALS[@]}" || true
