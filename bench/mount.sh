# Sourced by the bench scripts: starts an unshaped fake Hub serving a 1 GiB bench/large file and a
# hubfs mount of it in the foreground, and sets `ep` (the fake Hub's URL), `fh` and `hp` (their
# pids) and `file` (the file's path in the mount).
#
#   start_mount WORK_DIR CACHE_SIZE [MOUNT FLAGS...]
#
# HUBFS_BIN / FAKEHUB_BIN name the binaries (default: this checkout's release build).
start_mount() {
    local work="$1" cache="$2"
    shift 2
    local mnt="$work/mnt"
    mkdir -p "$mnt"
    "${FAKEHUB_BIN:-target/release/fakehub}" serve --large-file bench/large --large-file-mb 1024 >"$work/fh.out" 2>&1 &
    fh=$!
    ep=""
    for _ in $(seq 1 100); do ep="$(sed -n 's/^HUB //p' "$work/fh.out")"; [ -n "$ep" ] && break; sleep 0.1; done
    "${HUBFS_BIN:-target/release/hubfs}" mount --foreground "$mnt" --endpoint "$ep" --cache-size "$cache" "$@" >"$work/hubfs.log" 2>&1 &
    hp=$!
    for _ in $(seq 1 100); do [ -e "$mnt/.hubfs/stats" ] && break; sleep 0.1; done
    file="$mnt/bench/large@main/large.bin"
    stat "$file" >/dev/null
}

# Stops what start_mount started.
stop_mount() {
    kill -TERM "$hp" 2>/dev/null || true
    wait "$hp" 2>/dev/null || true
    kill -TERM "$fh" 2>/dev/null || true
    wait "$fh" 2>/dev/null || true
}

# One cold `dd bs=1M` of the mounted file, printed as "LABEL: daemon X CPU s/GiB (user U, system S),
# M MB/s, peak RSS R MiB" from the daemon's utime and stime (/proc/<pid>/stat) before and after,
# and its VmHWM (/proc/<pid>/status).
timed_read() {
    local label="$1" u0 s0 u1 s1 t0 t1
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$hp/stat")
    t0="$(date +%s.%N)"
    dd if="$file" of=/dev/null bs=1M status=none
    t1="$(date +%s.%N)"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$hp/stat")
    local hwm
    hwm="$(awk '/^VmHWM/ {print $2}' "/proc/$hp/status")"
    awk -v l="$label" -v hwm="$hwm" -v u0="$u0" -v s0="$s0" -v u1="$u1" -v s1="$s1" -v hz="$(getconf CLK_TCK)" -v a="$t0" -v b="$t1" \
        'BEGIN { printf "%s: daemon %.2f CPU s/GiB (user %.2f, system %.2f), %.0f MB/s, peak RSS %.0f MiB\n", l, (u1 - u0 + s1 - s0) / hz, (u1 - u0) / hz, (s1 - s0) / hz, 1073.741824 / (b - a), hwm / 1024 }'
}
