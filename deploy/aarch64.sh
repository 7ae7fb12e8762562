#!/usr/bin/env bash
# The Raspberry Pi build: cross-builds wardlink-edge for aarch64-unknown-linux-gnu (release),
# checks the stripped binary against the size budget, and runs it under qemu-aarch64-static
# against an x86-64 hub (tests/tests/aarch64_edge.rs): a device publishes, a dashboard receives
# the alarm. Needs Debian's gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static
# (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."

target=aarch64-unknown-linux-gnu
budget=$((15 * 1024 * 1024))

for tool in aarch64-linux-gnu-gcc aarch64-linux-gnu-strip qemu-aarch64-static; do
    if ! command -v "$tool" >/dev/null; then
        echo "aarch64.sh: $tool is missing; install gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static" >&2
        exit 1
    fi
done
rustup target add "$target" >/dev/null

export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo build --release --target "$target" -p wardlink-edge

binary="target/$target/release/wardlink-edge"
# The release profile strips symbols already; strip again so the figure is the stripped size
# whatever the profile says.
aarch64-linux-gnu-strip -o "$binary.stripped" "$binary"
size=$(stat -c %s "$binary.stripped")
awk -v t="$target" -v s="$size" -v b="$budget" 'BEGIN {
    printf "wardlink-edge for %s, stripped: %d bytes (%.2f MiB), budget %.0f MiB\n", t, s, s / 1048576, b / 1048576
}'
if [ "$size" -gt "$budget" ]; then
    echo "aarch64.sh: the stripped edge binary is over its budget" >&2
    exit 1
fi

# --workspace, as in the test suite, so cargo reuses its build (same features) instead of
# building the test crate's dependencies again.
WARDLINK_AARCH64_EDGE="$PWD/$binary.stripped" \
    cargo test --workspace --test aarch64_edge -- --ignored
