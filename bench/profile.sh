#!/usr/bin/env bash
# A perf profile of the daemon over one cold 1 GiB `dd bs=1M` through a fresh mount of an unshaped
# fake Hub; prints the top kernel and user symbols.
#
#   bench/profile.sh CACHE_SIZE [OUT]     e.g. bench/profile.sh 256MiB /tmp/perf.data
#
# As root with `perf` installed, after `cargo build --release --workspace` (or with HUBFS_BIN /
# FAKEHUB_BIN naming the binaries).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${1:?usage: bench/profile.sh CACHE_SIZE [OUT]}"
out="${2:-/tmp/hubfs-perf.data}"
# shellcheck source=bench/mount.sh
source bench/mount.sh
work="$(mktemp -d)"
trap 'stop_mount; rm -rf "$work"' EXIT
start_mount "$work" "$cache"
perf record -g -o "$out" -p "$hp" >/dev/null 2>&1 &
pp=$!
sleep 0.3
dd if="$file" of=/dev/null bs=1M status=none
kill -INT "$pp"
wait "$pp" || true
perf report -i "$out" --no-children --sort symbol 2>/dev/null | grep -v '^#' | grep '%' | head -30
