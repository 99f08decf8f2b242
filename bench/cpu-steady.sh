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
hubfs_bin="${HUBFS_BIN:-target/release/hubfs}"
fakehub_bin="${FAKEHUB_BIN:-target/release/fakehub}"
work="$(mktemp -d)"
mnt="$work/mnt"
mkdir -p "$mnt"
"$fakehub_bin" serve --large-file bench/large --large-file-mb 1024 >"$work/fh.out" 2>&1 &
fh=$!
ep=""
for _ in $(seq 1 100); do ep="$(sed -n 's/^HUB //p' "$work/fh.out")"; [ -n "$ep" ] && break; sleep 0.1; done
"$hubfs_bin" mount --foreground "$mnt" --endpoint "$ep" --cache-size "$cache" >"$work/hubfs.log" 2>&1 &
hp=$!
trap 'kill -TERM "$hp" 2>/dev/null; wait "$hp" 2>/dev/null; kill "$fh" 2>/dev/null; wait "$fh" 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do [ -e "$mnt/.hubfs/stats" ] && break; sleep 0.1; done
stat "$mnt/bench/large@main/large.bin" >/dev/null
hz="$(getconf CLK_TCK)"
for r in 1 2 3; do
    sync
    echo 3 >/proc/sys/vm/drop_caches
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$hp/stat")
    t0="$(date +%s.%N)"
    dd if="$mnt/bench/large@main/large.bin" of=/dev/null bs=1M status=none
    t1="$(date +%s.%N)"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$hp/stat")
    awk -v c="$cache" -v r="$r" -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v hz="$hz" -v a="$t0" -v b="$t1" \
        'BEGIN { printf "cache %s read %d: daemon %.2f CPU s/GiB (user %.2f, system %.2f), %.0f MB/s\n", c, r, (u1 - u0 + s1 - s0) / hz, (u1 - u0) / hz, (s1 - s0) / hz, 1073.741824 / (b - a) }'
done
