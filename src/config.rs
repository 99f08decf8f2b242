//! Settings: parsing of sizes and durations given on the command line, and the endpoint choice.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::hub::auth::Env;
use crate::hub::proxy::ProxyConfig;

/// The Hub used when neither `--endpoint` nor `HF_ENDPOINT` is given.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Parses a byte size: `512MiB`, `1GiB`, `256M`, `1G`, `4096`, `64k` (K/M/G/T, with or without
/// `i`/`B`, all powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| {
        format!("invalid size {s:?}: expected a number with an optional unit like 512MiB")
    })?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "invalid size unit in {s:?}: use K, M, G or T (powers of 1024)"
            ))
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: `60s`, `5m`, `500ms`, `1h`, or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?}: expected e.g. 60s, 5m, 500ms"))?;
    Ok(match unit {
        "" | "s" => Duration::from_secs(n),
        "ms" => Duration::from_millis(n),
        "m" | "min" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("invalid duration unit in {s:?}: use ms, s, m or h")),
    })
}

/// The endpoint: the flag, else env `HF_ENDPOINT`, else the public Hub. A trailing `/` is removed.
pub fn choose_endpoint(flag: Option<&str>, env: Option<&str>) -> String {
    flag.or(env)
        .filter(|s| !s.trim().is_empty())
        .unwrap_or(DEFAULT_ENDPOINT)
        .trim()
        .trim_end_matches('/')
        .to_owned()
}

/// The CA bundles to trust beyond the built-in and system roots, in this order: `--ca-bundle`,
/// env `SSL_CERT_FILE`, env `REQUESTS_CA_BUNDLE` (each that is set; the same file once).
pub fn ca_bundles(flag: Option<&Path>, env: &dyn Env) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = Vec::new();
    let candidates = flag.map(Path::to_owned).into_iter().chain(
        ["SSL_CERT_FILE", "REQUESTS_CA_BUNDLE"]
            .iter()
            .filter_map(|k| env.var(k).map(PathBuf::from)),
    );
    for p in candidates {
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// The network settings of the Hub client from flags and the environment: the extra CA bundles
/// ([`ca_bundles`]) and the proxies ([`ProxyConfig::from_env`]). Fails on a proxy variable that
/// is not an http(s) URL.
pub fn network_settings(
    ca_flag: Option<&Path>,
    env: &dyn Env,
) -> Result<(Vec<PathBuf>, ProxyConfig), String> {
    Ok((ca_bundles(ca_flag, env), ProxyConfig::from_env(env)?))
}

/// Parses permission bits given in octal (`0444`, `444`, `0o550`): read and execute bits only,
/// since hubfs is read-only (write bits, setuid, setgid and sticky are refused).
pub fn parse_mode(s: &str) -> Result<u16, String> {
    let t = s.trim();
    let digits = t.strip_prefix("0o").unwrap_or(t);
    let m = u16::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| format!("invalid mode {s:?}: expected octal permission bits like 0444"))?;
    if m & 0o222 != 0 {
        return Err(format!(
            "mode {s} has write bits ({:#o}): hubfs is read-only; use read and execute bits only, e.g. {:04o}",
            m & 0o222,
            m & 0o555
        ));
    }
    if m & 0o7000 != 0 {
        return Err(format!(
            "mode {s} has setuid, setgid or sticky bits: only read and execute bits are accepted"
        ));
    }
    Ok(m)
}

/// mount(8)'s generic options (and FUSE's `default_permissions`, always on), which hubfs accepts
/// and ignores in `-o`: the mount is always `ro,nosuid,nodev,noatime,default_permissions`.
const GENERIC_OPTIONS: &[&str] = &[
    "ro",
    "defaults",
    "auto",
    "noauto",
    "user",
    "nouser",
    "users",
    "_netdev",
    "nofail",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "async",
    "sync",
    "default_permissions",
];

/// Replaces each `-o OPTS` / `-oOPTS` of a `hubfs mount` command line (`argv[1] == "mount"`,
/// before any `--`) with the flags the options stand for ([`option_flags`]); other command
/// lines are returned as they are.
pub fn expand_mount_options(argv: &[String]) -> Result<Vec<String>, String> {
    if argv.get(1).map(String::as_str) != Some("mount") {
        return Ok(argv.to_vec());
    }
    let mut out = argv[..2].to_vec();
    let mut opts = Vec::new();
    let mut it = argv[2..].iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--" => {
                out.push(a.clone());
                out.extend(it.by_ref().cloned());
            }
            "-o" => opts.extend(
                it.next()
                    .ok_or("-o needs options, e.g. -o ro,allow_other")?
                    .split(',')
                    .map(str::to_owned),
            ),
            s if s.starts_with("-o") => opts.extend(s[2..].split(',').map(str::to_owned)),
            _ => out.push(a.clone()),
        }
    }
    out.extend(option_flags(&opts)?);
    Ok(out)
}

/// Turns a mount helper's arguments (`SOURCE MOUNTPOINT [-o OPTS] [-f] [-n] [-s] [-v]`, as
/// mount(8) passes them for an fstab line of type `fuse.hubfs`) into `hubfs mount` arguments.
/// SOURCE `hubfs` (or `none`) mounts the whole Hub; any other SOURCE is a repo id, as `--repo`
/// takes it (`acme/m@main`, `datasets/acme/corpus`). Options as [`option_flags`] reads them.
/// Returns (foreground, argv); `-f` also adds `--foreground`.
pub fn helper_args(args: &[String]) -> Result<(bool, Vec<String>), String> {
    let mut positional = Vec::new();
    let mut opts: Vec<String> = Vec::new();
    let mut foreground = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-o" => opts.extend(
                it.next()
                    .ok_or("-o needs options")?
                    .split(',')
                    .map(str::to_owned),
            ),
            s if s.starts_with("-o") => opts.extend(s[2..].split(',').map(str::to_owned)),
            "-f" => foreground = true,
            "-n" | "-s" | "-v" => {}
            "-t" | "-N" => {
                it.next();
            }
            s if s.starts_with('-') => return Err(format!("unknown argument {s}")),
            s => positional.push(s.to_owned()),
        }
    }
    let [source, mountpoint] = positional.as_slice() else {
        return Err("usage: mount.fuse.hubfs SOURCE MOUNTPOINT [-o OPTIONS]".into());
    };
    let mut argv = vec!["hubfs".to_owned(), "mount".to_owned(), mountpoint.clone()];
    if !matches!(source.as_str(), "hubfs" | "none" | "") {
        argv.push("--repo".into());
        argv.push(source.clone());
    }
    if foreground {
        argv.push("--foreground".into());
    }
    argv.extend(option_flags(&opts)?);
    Ok((foreground, argv))
}

/// The `hubfs mount` flags that mount options stand for: each flag named with `_`
/// (`cache_size=1GiB`, `allow_other`, `debug`); mount(8)'s generic ones, `default_permissions`
/// and `x-*` (`x-systemd.*`) are ignored; `rw` is ignored with a warning on stderr (hubfs is
/// read-only). Anything else is an error naming the option.
pub fn option_flags(opts: &[String]) -> Result<Vec<String>, String> {
    let mut argv = Vec::new();
    for o in opts.iter().map(|o| o.trim()).filter(|o| !o.is_empty()) {
        if GENERIC_OPTIONS.contains(&o) || o.starts_with("x-systemd.") || o.starts_with("x-") {
            continue;
        }
        if o == "rw" {
            eprintln!(
                "hubfs: warning: option rw ignored: hubfs is read-only (writes fail with EROFS)"
            );
            continue;
        }
        let (k, v) = match o.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (o, None),
        };
        let known_value = [
            "endpoint",
            "token_file",
            "ca_bundle",
            "cache_size",
            "metadata_size",
            "revision_ttl",
            "bucket_ttl",
            "read_timeout",
            "max_connections",
            "uid",
            "gid",
            "fuse_threads",
            "metrics_addr",
            "bucket",
            "repo",
            "repo_type",
            "subfolder",
            "file_mode",
            "dir_mode",
            "log_file",
        ];
        match (k, v) {
            ("allow_other", None) => argv.push("--allow-other".into()),
            ("debug", None) => argv.push("--debug".into()),
            ("allow_root", None) => {
                return Err("mount option allow_root is not supported: use allow_other".into())
            }
            (k, Some(v)) if known_value.contains(&k) => {
                argv.push(format!("--{}", k.replace('_', "-")));
                argv.push(v.to_owned());
            }
            _ => {
                return Err(format!(
                    "unknown mount option {o:?} (see: hubfs mount --help)"
                ))
            }
        }
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fstab_options_become_flags() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (fg, argv) = helper_args(&a(&[
            "hubfs",
            "/mnt/hf",
            "-o",
            "ro,allow_other,_netdev,cache_size=1GiB,x-systemd.automount,endpoint=http://h:1",
        ]))
        .unwrap();
        assert!(!fg);
        assert_eq!(
            argv,
            a(&[
                "hubfs",
                "mount",
                "/mnt/hf",
                "--allow-other",
                "--cache-size",
                "1GiB",
                "--endpoint",
                "http://h:1"
            ])
        );
        assert!(helper_args(&a(&["hubfs", "/m", "-o", "bogus=1"])).is_err());
        assert!(helper_args(&a(&["/m"])).is_err());
        assert!(helper_args(&a(&["hubfs", "/m", "-f"])).unwrap().0);
    }

    #[test]
    fn an_fstab_source_other_than_hubfs_is_the_repo_to_mount() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (fg, argv) = helper_args(&a(&[
            "datasets/acme/corpus@main",
            "/data",
            "-f",
            "-o",
            "ro,subfolder=data/train,file_mode=0440",
        ]))
        .unwrap();
        assert!(fg);
        assert_eq!(
            argv,
            a(&[
                "hubfs",
                "mount",
                "/data",
                "--repo",
                "datasets/acme/corpus@main",
                "--foreground",
                "--subfolder",
                "data/train",
                "--file-mode",
                "0440"
            ])
        );
        let (_, argv) = helper_args(&a(&["none", "/m"])).unwrap();
        assert_eq!(argv, a(&["hubfs", "mount", "/m"]));
    }

    #[test]
    fn dash_o_on_hubfs_mount_becomes_flags_and_unknown_options_are_refused() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            expand_mount_options(&a(&[
                "hubfs",
                "mount",
                "-o",
                "ro,nodev,nosuid,noatime,_netdev,default_permissions,allow_other,uid=7",
                "/m",
                "-odebug,cache_size=64MiB",
                "--foreground"
            ]))
            .unwrap(),
            a(&[
                "hubfs",
                "mount",
                "/m",
                "--foreground",
                "--allow-other",
                "--uid",
                "7",
                "--debug",
                "--cache-size",
                "64MiB"
            ])
        );
        // rw is ignored (with a warning): the mount stays read-only.
        assert_eq!(
            expand_mount_options(&a(&["hubfs", "mount", "/m", "-o", "rw"])).unwrap(),
            a(&["hubfs", "mount", "/m"])
        );
        let e = expand_mount_options(&a(&["hubfs", "mount", "/m", "-o", "ro,bogus"])).unwrap_err();
        assert!(e.contains("unknown mount option \"bogus\""), "{e}");
        assert!(
            expand_mount_options(&a(&["hubfs", "mount", "/m", "-o", "allow_root"]))
                .unwrap_err()
                .contains("allow_other")
        );
        assert!(expand_mount_options(&a(&["hubfs", "mount", "/m", "-o"])).is_err());
        // Other commands are left alone.
        let st = a(&["hubfs", "status", "-o"]);
        assert_eq!(expand_mount_options(&st).unwrap(), st);
    }

    #[test]
    fn modes_take_read_and_execute_bits_only() {
        assert_eq!(parse_mode("0444"), Ok(0o444));
        assert_eq!(parse_mode("550"), Ok(0o550));
        assert_eq!(parse_mode("0o400"), Ok(0o400));
        let e = parse_mode("0644").unwrap_err();
        assert!(e.contains("read-only") && e.contains("0444"), "{e}");
        assert!(parse_mode("4555").is_err());
        assert!(parse_mode("0999").is_err());
        assert!(parse_mode("rw").is_err());
        assert!(parse_mode("17777").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1.5G").is_err());
        assert!(parse_size("12X").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("60"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn ca_bundles_come_from_the_flag_then_ssl_cert_file_then_requests_ca_bundle() {
        use crate::hub::auth::MapEnv;
        let env = MapEnv::of(&[
            ("SSL_CERT_FILE", "/etc/ca/corp.pem"),
            ("REQUESTS_CA_BUNDLE", "/etc/ca/corp.pem"),
        ]);
        assert_eq!(
            ca_bundles(Some(Path::new("/m/ca.pem")), &env),
            [
                PathBuf::from("/m/ca.pem"),
                PathBuf::from("/etc/ca/corp.pem")
            ]
        );
        assert!(ca_bundles(None, &MapEnv::of::<&str, &str>(&[])).is_empty());
        let (_, proxy) = network_settings(None, &MapEnv::of(&[("HTTPS_PROXY", "http://p:3128")]))
            .expect("valid proxy");
        assert!(!proxy.is_direct());
        assert!(network_settings(None, &MapEnv::of(&[("HTTPS_PROXY", "ftp://p")])).is_err());
    }

    #[test]
    fn endpoint_precedence() {
        assert_eq!(
            choose_endpoint(Some("http://a/"), Some("http://b")),
            "http://a"
        );
        assert_eq!(choose_endpoint(None, Some("http://b/")), "http://b");
        assert_eq!(choose_endpoint(None, None), DEFAULT_ENDPOINT);
        assert_eq!(choose_endpoint(None, Some("")), DEFAULT_ENDPOINT);
    }
}
