#!/usr/bin/env bash
# The daemon's CPU seconds for one cold 1 GiB `dd bs=1M` through a fresh mount of an unshaped fake
# Hub (utime + stime of all its threads, from /proc/<pid>/stat, before and after the read).
#
#   bench/cpu-per-gib.sh CACHE_SIZE [RUNS]     e.g. bench/cpu-per-gib.sh 256MiB 3
#
# As root, after `cargo build --release --workspace` (or with HUBFS_BIN / FAKEHUB_BIN naming the
# binaries, for A/B runs of two builds). Prints one line per run. The huge-page A/B
# in docs/benchmarks.md alternates runs with /sys/kernel/mm/transparent_hugepage/enabled set to
# `never` and `madvise` on a build whose pool asks for MADV_HUGEPAGE.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cache="${1:?usage: bench/cpu-per-gib.sh CACHE_SIZE [RUNS]}"
runs="${2:-1}"
bin=target/release
hubfs_bin="${HUBFS_BIN:-$bin/hubfs}"
fakehub_bin="${FAKEHUB_BIN:-$bin/fakehub}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
hz="$(getconf CLK_TCK)"
for run in $(seq 1 "$runs"); do
    mnt="$work/mnt$run"
    mkdir -p "$mnt"
    "$fakehub_bin" serve --large-file bench/large --large-file-mb 1024 >"$work/fh.out" 2>&1 &
    fh=$!
    ep=""
    for _ in $(seq 1 100); do ep="$(sed -n 's/^HUB //p' "$work/fh.out")"; [ -n "$ep" ] && break; sleep 0.1; done
    "$hubfs_bin" mount --foreground "$mnt" --endpoint "$ep" --cache-size "$cache" >"$work/hubfs.log" 2>&1 &
    hp=$!
    for _ in $(seq 1 100); do [ -e "$mnt/.hubfs/stats" ] && break; sleep 0.1; done
    stat "$mnt/bench/large@main/large.bin" >/dev/null
    t0="$(awk '{print $14 + $15}' "/proc/$hp/stat")"
    start="$(date +%s.%N)"
    dd if="$mnt/bench/large@main/large.bin" of=/dev/null bs=1M status=none
    end="$(date +%s.%N)"
    t1="$(awk '{print $14 + $15}' "/proc/$hp/stat")"
    awk -v c="$cache" -v r="$run" -v a="$t0" -v b="$t1" -v hz="$hz" -v s="$start" -v e="$end" \
        'BEGIN { printf "cache %s run %d: daemon %.2f CPU s/GiB, %.0f MB/s\n", c, r, (b - a) / hz, 1073.741824 / (e - s) }'
    # curl's receive cost for the same bytes from the same server, in the same run.
    curl_cpu="$(bash -c 'curl -sfL -o /dev/null "$1"; times' _ "$ep/bench/large/resolve/main/large.bin" | tail -1 \
        | awk '{ split($1, u, "m"); split($2, s, "m"); printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }')"
    echo "cache $cache run $run: curl -o /dev/null of the same file: $curl_cpu CPU s/GiB"
    kill -TERM "$hp"; wait "$hp" || true
    kill -TERM "$fh"; wait "$fh" 2>/dev/null || true
done
