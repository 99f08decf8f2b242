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
perf record -g -o "$out" -p "$hp" >/dev/null 2>&1 &
pp=$!
sleep 0.3
dd if="$mnt/bench/large@main/large.bin" of=/dev/null bs=1M status=none
kill -INT "$pp"
wait "$pp" || true
perf report -i "$out" --no-children --sort symbol 2>/dev/null | grep -v '^#' | grep '%' | head -30
