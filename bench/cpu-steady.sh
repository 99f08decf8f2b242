#!/usr/bin/env bash
# The daemon's CPU seconds per GiB for the same cold 1 GiB `dd bs=1M` three times on one daemon,
# the page cache dropped before each: the first read touches the block pool for the first time,
# the later ones find it touched (a long-running daemon's steady state).
#
#   bench/cpu-steady.sh CACHE_SIZE      e.g. bench/cpu-steady.sh 256MiB
#
# As root, after `cargo build --release --workspace` (or with HUBFS_BIN / FAKEHUB_BIN naming the
# binaries to use). Drops the machine's page cache (echo 3 > /proc/sys/vm/drop_caches).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${1:?usage: bench/cpu-steady.sh CACHE_SIZE}"
# shellcheck source=bench/mount.sh
source bench/mount.sh
work="$(mktemp -d)"
trap 'stop_mount; rm -rf "$work"' EXIT
start_mount "$work" "$cache"
for r in 1 2 3; do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    timed_read "cache $cache read $r"
done
