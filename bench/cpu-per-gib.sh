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
# shellcheck source=bench/mount.sh
source bench/mount.sh
work="$(mktemp -d)"
trap 'stop_mount; rm -rf "$work"' EXIT
for run in $(seq 1 "$runs"); do
    mkdir -p "$work/$run"
    # shellcheck disable=SC2086 # HUBFS_ARGS is a list of flags
    start_mount "$work/$run" "$cache" ${HUBFS_ARGS:-}
    timed_read "cache $cache run $run"
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
    stop_mount
done
