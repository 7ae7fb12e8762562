#!/usr/bin/env bash
# Installs what `wardlink-bench` measures Wardlink against: Debian's Mosquitto broker (apt) and
# Node-RED (npm, into target/bench-peers/, where the benchmark looks for it), and Debian's
# python3-websockets for the Python dashboard of `steady`. Not needed for the tests or the demo.
set -euo pipefail
cd "$(dirname "$0")/.."

if { ! command -v mosquitto >/dev/null && [ ! -x /usr/sbin/mosquitto ]; } \
    || ! /usr/bin/python3 -c 'import websockets' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mosquitto python3-websockets >/dev/null
fi
# Debian starts a system broker on 1883 when the package is installed; the benchmark starts
# its own on a free port and does not need it.
mkdir -p target/bench-peers
if [ ! -f target/bench-peers/node_modules/node-red/red.js ]; then
    (cd target/bench-peers && npm install --no-audit --no-fund node-red@4 >/dev/null)
fi
echo "mosquitto: $( (mosquitto -h 2>/dev/null || /usr/sbin/mosquitto -h 2>/dev/null || true) | head -1)"
echo "node-red: $(node -p "require('./target/bench-peers/node_modules/node-red/package.json').version")"
echo "python3-websockets: $(/usr/bin/python3 -c 'import websockets; print(websockets.__version__)')"
