#!/usr/bin/env bash
# The daemon's CPU seconds for one cold 1 GiB `dd bs=1M` through a fresh mount of an unshaped fake
# Hub (utime + stime of all its threads, from /proc/<pid>/stat, before and after the read).
#
#   bench/cpu-per-gib.sh CACHE_SIZE [RUNS]     e.g. bench/cpu-per-gib.sh 256MiB 3
#
# Also prints curl's CPU for the same bytes into /dev/null (one receive copy into a reused buffer)
# and into a tmpfs file (one receive copy plus one copy into the page cache: the copy limit a FUSE
# daemon can approach). As root, after `cargo build --release --workspace`; HUBFS_BIN / FAKEHUB_BIN
# name other binaries (A/B runs of two builds), HUBFS_ARGS adds mount flags (`--fuse-threads 1`).
# Prints one line per run. The huge-page A/B in docs/benchmarks.md alternates runs with
# /sys/kernel/mm/transparent_hugepage/enabled set to `never` and `madvise` on a build whose pool
# asks for MADV_HUGEPAGE.
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
    "$hubfs_bin" mount --foreground "$mnt" --endpoint "$ep" --cache-size "$cache" ${HUBFS_ARGS:-} >"$work/hubfs.log" 2>&1 &
    hp=$!
    for _ in $(seq 1 100); do [ -e "$mnt/.hubfs/stats" ] && break; sleep 0.1; done
    stat "$mnt/bench/large@main/large.bin" >/dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$hp/stat")
    start="$(date +%s.%N)"
    dd if="$mnt/bench/large@main/large.bin" of=/dev/null bs=1M status=none
    end="$(date +%s.%N)"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$hp/stat")
    awk -v c="$cache" -v r="$run" -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v hz="$hz" -v s="$start" -v e="$end" \
        'BEGIN { printf "cache %s run %d: daemon %.2f CPU s/GiB (user %.2f, system %.2f), %.0f MB/s\n", c, r, (u1 - u0 + s1 - s0) / hz, (u1 - u0) / hz, (s1 - s0) / hz, 1073.741824 / (e - s) }'
    # curl's receive cost for the same bytes from the same server, in the same run.
    curl_cpu="$(bash -c 'curl -sfL -o /dev/null "$1"; times' _ "$ep/bench/large/resolve/main/large.bin" | tail -1 \
        | awk '{ split($1, u, "m"); split($2, s, "m"); printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }')"
    echo "cache $cache run $run: curl -o /dev/null of the same file: $curl_cpu CPU s/GiB"
    # The copy limit: one receive copy plus one copy into the page cache (curl into tmpfs).
    shm="$(mktemp -p /dev/shm hubfs-copy-limit.XXXXXX)"
    tmpfs_cpu="$(bash -c 'curl -sfL -o "$2" "$1"; times' _ "$ep/bench/large/resolve/main/large.bin" "$shm" | tail -1 \
        | awk '{ split($1, u, "m"); split($2, s, "m"); printf "%.2f", u[1] * 60 + u[2] + s[1] * 60 + s[2] }')"
    rm -f "$shm"
    echo "cache $cache run $run: curl -o tmpfs of the same file (the copy limit): $tmpfs_cpu CPU s/GiB"
    kill -TERM "$hp"; wait "$hp" || true
    kill -TERM "$fh"; wait "$fh" 2>/dev/null || true
done
