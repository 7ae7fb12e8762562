#!/usr/bin/env bash
# Fuzzes every decoder of outside bytes with cargo-fuzz (libFuzzer, nightly, AddressSanitizer):
# the gate's MQTT parser, the same parser against rumqttc's codec as an oracle, the QUIC frame
# decoder, the device JSON payload decoder and the dashboards' client messages
# (fuzz/fuzz_targets/).
#
#   deploy/fuzz.sh                 # a short run of each target (CI: 20 s each)
#   FUZZ_RUNS=10000000 deploy/fuzz.sh    # 10 million executions each (the recorded runs)
#
# Installs cargo-fuzz from crates.io when missing. Needs a nightly toolchain.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

if ! rustup toolchain list | grep -q '^nightly'; then
    echo "fuzz.sh: no nightly toolchain (rustup toolchain install nightly); fuzzing needs it" >&2
    exit 1
fi
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz >/dev/null

if [ -n "${FUZZ_RUNS:-}" ]; then
    limit=(-runs="$FUZZ_RUNS")
else
    limit=(-max_total_time="${FUZZ_SECONDS:-20}")
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for target in mqtt_packet mqtt_oracle wire_frame json_payload client_message; do
    # The corpus grows under fuzz/corpus/ (not committed); a crash lands in fuzz/artifacts/
    # and fails the run.
    if ! cargo +nightly fuzz run -O "$target" -- "${limit[@]}" -max_len=4096 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $target failed" >&2
        exit 1
    fi
    echo "fuzz.sh: $target: $(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1)"
done
