//! A pod of hosts behind one caching mirror, with rotating credentials (docs/fleet.md), tested
//! with the real things: Debian's nginx started on loopback with the shipped
//! `deploy/nginx/hubfs-mirror.conf.template` in front of the fake Hub, TLS with a CA made here,
//! Debian's tinyproxy as the forward proxy, and the `hubfs` binary for everything that reads the
//! environment. Every figure is taken from the fake Hub's own request log.
//!
//! Needs root, /dev/fuse, `nginx` and `tinyproxy`; each missing piece is a failure (a skip with
//! `HUBFS_ALLOW_SKIP=1` outside CI; `scripts/test` installs them).

mod support;

use std::collections::{BTreeSet, HashMap};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use fakehub::{FakeHub, FakeHubOptions, Fixtures, Listener, RepoType, RequestRecord, TOKEN_FULL};
use hubfs::fs::FsConfig;
use hubfs::stats::Stats;
use support::daemon::Daemon;
use support::{http_hub_at, mount, sha256_file};

/// The model the pod loads: 4 shards of 16 MiB (plus config and index).
const POD_MODEL: &str = "acme/pod-model";

// ---------------------------------------------------------------------------------------------
// Tools

/// The path of a system tool. A missing tool is a failure, or a skip (`None`) with
/// `HUBFS_ALLOW_SKIP=1` outside CI.
fn tool(name: &str, package: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let dirs = path
        .split(':')
        .map(str::to_owned)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(String::from));
    for d in dirs {
        let p = Path::new(&d).join(name);
        if p.is_file() {
            return Some(p);
        }
    }
    support::missing_prerequisite(&format!(
        "{name} is not installed (Debian package {package})"
    ));
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// A temp dir other users may enter (nginx's workers run as `nobody`).
fn open_tempdir(prefix: &str) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

fn wait_for_port(port: u16, child: &mut Child, what: &str, log: &Path) {
    let t = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(st)) = child.try_wait() {
            panic!(
                "{what} exited ({st}):\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "{what} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Ends a child we started, by its pid: SIGTERM, then SIGKILL after 5 s.
fn end_child(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let t = Instant::now();
        while let Ok(None) = child.try_wait() {
            if t.elapsed() > Duration::from_secs(5) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// nginx

/// A certificate and key for nginx to serve.
struct ServerCert {
    cert: PathBuf,
    key: PathBuf,
}

/// An nginx master started by the test in its own prefix; stopped on drop.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        end_child(&mut self.child);
    }
}

impl Nginx {
    /// Starts nginx with `site` (http-level configuration that listens on `port`) inside a
    /// minimal nginx.conf of its own, logging every request as `METHOD URI STATUS CACHE`.
    fn start(
        bin: &Path,
        dir: tempfile::TempDir,
        port: u16,
        site: &str,
        tls: Option<&ServerCert>,
    ) -> Nginx {
        let d = dir.path();
        std::fs::create_dir_all(d.join("tmp")).expect("tmp");
        std::fs::write(d.join("site.conf"), site).expect("site.conf");
        let ssl = tls.map_or(String::new(), |c| {
            format!(
                "ssl_certificate {}; ssl_certificate_key {};",
                c.cert.display(),
                c.key.display()
            )
        });
        let p = d.display();
        let conf = format!(
            "worker_processes 1;\nerror_log {p}/error.log info;\npid {p}/nginx.pid;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n\
               log_format hubfs_test '$request_method $request_uri $status $upstream_cache_status';\n\
               access_log {p}/access.log hubfs_test;\n\
               client_body_temp_path {p}/tmp/body; proxy_temp_path {p}/tmp/proxy;\n\
               fastcgi_temp_path {p}/tmp/fastcgi; uwsgi_temp_path {p}/tmp/uwsgi;\n\
               scgi_temp_path {p}/tmp/scgi;\n\
               {ssl}\n\
               include {p}/site.conf;\n\
             }}\n"
        );
        std::fs::write(d.join("nginx.conf"), conf).expect("nginx.conf");
        let mut child = Command::new(bin)
            .arg("-p")
            .arg(d)
            .arg("-c")
            .arg(d.join("nginx.conf"))
            .args(["-g", "daemon off;"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nginx");
        wait_for_port(port, &mut child, "nginx", &d.join("error.log"));
        Nginx { child, dir, port }
    }

    /// The access log: one `METHOD URI STATUS CACHE` line per request from a client.
    fn access_log(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("access.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// The shipped template with its variables filled in, as `envsubst` would.
fn render_mirror(vars: &[(&str, String)]) -> String {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/nginx/hubfs-mirror.conf.template"),
    )
    .expect("the shipped template");
    let mut out = template;
    for (k, v) in vars {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    assert!(
        !out.contains("${HUBFS_"),
        "a template variable was left unset:\n{out}"
    );
    out
}

/// nginx with the shipped mirror config in front of `hub`, listening on loopback (`tls`: on
/// https), with a cold cache. `ca` is any PEM file (the upstream CA setting must name one).
fn start_mirror(nginx: &Path, hub: &FakeHub, tls: Option<&ServerCert>, ca: &Path) -> Nginx {
    start_mirror_with(nginx, hub, tls, ca, None)
}

/// [`start_mirror`]; with `shared_token`, the two credential maps edited as docs/fleet.md says
/// for a pod that shares one credential.
fn start_mirror_with(
    nginx: &Path,
    hub: &FakeHub,
    tls: Option<&ServerCert>,
    ca: &Path,
    shared_token: Option<&str>,
) -> Nginx {
    let dir = open_tempdir("hubfs-mirror-");
    let port = free_port();
    let cache = dir.path().join("cache");
    std::fs::create_dir_all(&cache).expect("cache dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o755))
            .expect("chmod cache");
    }
    let cdn_host = hub
        .cdn_endpoint()
        .trim_start_matches("http://")
        .replace('.', "\\.");
    let listen = match tls {
        Some(_) => format!("127.0.0.1:{port} ssl"),
        None => format!("127.0.0.1:{port}"),
    };
    let site = render_mirror(&[
        ("HUBFS_MIRROR_LISTEN", listen),
        ("HUBFS_MIRROR_UPSTREAM", hub.endpoint()),
        ("HUBFS_MIRROR_CDN_HOSTS", cdn_host),
        ("HUBFS_MIRROR_RESOLVER", "127.0.0.1".into()),
        ("HUBFS_MIRROR_CACHE", cache.display().to_string()),
        ("HUBFS_MIRROR_CACHE_SIZE", "2g".into()),
        ("HUBFS_MIRROR_API_TTL", "60s".into()),
        ("HUBFS_MIRROR_UPSTREAM_CA", ca.display().to_string()),
    ]);
    let site = match shared_token {
        None => site,
        Some(t) => {
            let edit = |site: String, map: &str, value: &str| {
                let from =
                    format!("map $http_authorization ${map} {{\n    default $http_authorization;");
                assert!(site.contains(&from), "the template has the {map} map");
                site.replace(
                    &from,
                    &format!("map $http_authorization ${map} {{\n    default {value};"),
                )
            };
            let site = edit(
                site,
                "hubfs_upstream_authorization",
                &format!("\"Bearer {t}\""),
            );
            edit(site, "hubfs_uncached", "\"\"")
        }
    };
    Nginx::start(nginx, dir, port, &site, tls)
}

/// nginx as a plain reverse proxy in front of the Hub: no caching, no header rewriting.
fn start_plain_proxy(nginx: &Path, hub: &FakeHub) -> Nginx {
    let dir = open_tempdir("hubfs-proxy-");
    let port = free_port();
    let site = format!(
        "server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass {}; \
         proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}\n",
        hub.endpoint()
    );
    Nginx::start(nginx, dir, port, &site, None)
}

// ---------------------------------------------------------------------------------------------
// Certificates (a CA made by the test)

struct TestCa {
    dir: tempfile::TempDir,
    ca: PathBuf,
    other_ca: PathBuf,
    server: ServerCert,
}

/// A CA, a server certificate it signs for `localhost` and 127.0.0.1, and a second, unrelated
/// CA (the "wrong" one).
fn make_ca() -> TestCa {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let dir = open_tempdir("hubfs-ca-");
    let ca_params = |name: &str| {
        let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p
    };
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params("hubfs test CA").self_signed(&ca_key).expect("CA");
    let other_key = KeyPair::generate().expect("key");
    let other = ca_params("some other CA")
        .self_signed(&other_key)
        .expect("other CA");
    let leaf_key = KeyPair::generate().expect("key");
    let mut leaf = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("leaf params");
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    let leaf = leaf.signed_by(&leaf_key, &ca, &ca_key).expect("leaf");
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write pem");
        p
    };
    TestCa {
        ca: write("ca.pem", ca.pem()),
        other_ca: write("other-ca.pem", other.pem()),
        server: ServerCert {
            cert: write("server.pem", leaf.pem()),
            key: write("server-key.pem", leaf_key.serialize_pem()),
        },
        dir,
    }
}

// ---------------------------------------------------------------------------------------------
// tinyproxy

struct Tinyproxy {
    child: Child,
    _dir: tempfile::TempDir,
    port: u16,
    log: PathBuf,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        end_child(&mut self.child);
    }
}

impl Tinyproxy {
    fn start(bin: &Path) -> Tinyproxy {
        let dir = open_tempdir("hubfs-tinyproxy-");
        let port = free_port();
        let log = dir.path().join("tinyproxy.log");
        // No ConnectPort line: CONNECT to any port (the TLS mirror is not on 443).
        let conf = format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 60\nMaxClients 200\nAllow 127.0.0.1\n\
             LogLevel Info\nLogFile \"{}\"\n",
            log.display()
        );
        let conf_path = dir.path().join("tinyproxy.conf");
        std::fs::write(&conf_path, conf).expect("tinyproxy.conf");
        let mut child = Command::new(bin)
            .arg("-d")
            .arg("-c")
            .arg(&conf_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start tinyproxy");
        wait_for_port(port, &mut child, "tinyproxy", &log);
        Tinyproxy {
            child,
            _dir: dir,
            port,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The requests the proxy received (`GET http://...` and `CONNECT host:port`), in order.
    fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once("]: Request (file descriptor "))
            .filter_map(|(_, r)| r.split_once("): ").map(|(_, req)| req.to_owned()))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Loads and figures

/// Every file of a repo at main: (path, sha256).
fn repo_files(fx: &Fixtures, t: RepoType, id: &str) -> Vec<(String, String, u64)> {
    fx.commit(t, id, "main")
        .expect("repo")
        .files
        .iter()
        .map(|(p, d)| (p.clone(), d.sha256_hex(), d.len()))
        .collect()
}

/// Reads every file of `repo_dir` under `root` through the mount and checks its sha256.
fn load(root: &Path, repo_dir: &str, files: &[(String, String, u64)]) {
    for (path, sha, _) in files {
        let p = root.join(repo_dir).join(path);
        assert_eq!(
            sha256_file(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display())),
            *sha,
            "{}",
            p.display()
        );
    }
}

/// Bytes the CDN sent: a 206 sends its range (cut at the object's end), a 200 the object.
fn cdn_bytes(reqs: &[RequestRecord], sizes: &HashMap<String, u64>) -> u64 {
    reqs.iter()
        .filter(|r| r.listener == Listener::Cdn && r.method == "GET")
        .map(|r| {
            let sha = r
                .path
                .trim_start_matches("/cdn/")
                .split('?')
                .next()
                .unwrap_or_default();
            let size = *sizes
                .get(sha)
                .unwrap_or_else(|| panic!("unknown CDN object {}", r.path));
            match r.status {
                200 => size,
                206 => {
                    let spec = r.range.as_deref().and_then(|s| s.strip_prefix("bytes="));
                    let (a, b) = spec.and_then(|s| s.split_once('-')).expect("a ranged 206");
                    let a: u64 = a.parse().expect("range start");
                    let b: u64 = b.parse().map_or(size - 1, |b: u64| b.min(size - 1));
                    b + 1 - a
                }
                _ => 0,
            }
        })
        .sum()
}

fn sha_sizes(fx: &Fixtures) -> HashMap<String, u64> {
    fx.repos
        .iter()
        .flat_map(|r| r.commits.iter())
        .flat_map(|c| c.files.values())
        .map(|d| (d.sha256_hex(), d.len()))
        .collect()
}

/// Bytes of the regular files under `dir` (an nginx cache: what it takes on disk).
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.filter_map(Result::ok)
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

fn hub_calls(reqs: &[RequestRecord]) -> usize {
    reqs.iter().filter(|r| r.listener == Listener::Hub).count()
}

fn fs_cfg() -> FsConfig {
    FsConfig {
        cache_bytes: 64 << 20,
        ..FsConfig::default()
    }
}

fn ready() -> bool {
    support::fuse_available()
}

/// nginx, when FUSE and nginx are both here (see [`tool`]).
fn nginx_ready() -> Option<PathBuf> {
    if !ready() {
        return None;
    }
    tool("nginx", "nginx")
}

/// An in-process mount of `endpoint` (the fake Hub or a mirror in front of it).
fn mount_at(endpoint: &str, token: Option<&str>) -> support::Mounted<hubfs::hub::http::HttpHub> {
    mount(
        http_hub_at(
            endpoint,
            token,
            Duration::from_secs(30),
            Arc::new(Stats::default()),
        ),
        fs_cfg(),
    )
}

// ---------------------------------------------------------------------------------------------
// Tests

#[test]
fn eight_mounts_behind_the_shipped_mirror_cost_the_origin_one_model_and_no_more_api_calls_than_one_mount(
) {
    let Some(nginx) = nginx_ready() else {
        return;
    };
    let fx = Fixtures::standard().with_sharded_model(POD_MODEL, 4, 16 << 20);
    let hub = FakeHub::start(fx.clone(), FakeHubOptions::default()).expect("fake hub");
    let files = repo_files(&fx, RepoType::Model, POD_MODEL);
    let model_bytes: u64 = files.iter().map(|f| f.2).sum();
    let shard_bytes: u64 = files
        .iter()
        .filter(|f| f.0.ends_with(".safetensors"))
        .map(|f| f.2)
        .sum();
    let sizes = sha_sizes(&fx);
    let repo_dir = format!("{POD_MODEL}@main");
    let ca = make_ca();

    // One host alone, straight to the Hub: the baseline.
    {
        let m = mount_at(&hub.endpoint(), None);
        load(&m.path(), &repo_dir, &files);
    }
    let alone = hub.requests();
    let (alone_calls, alone_cdn) = (hub_calls(&alone), cdn_bytes(&alone, &sizes));
    hub.clear_requests();

    // Eight hosts at the same moment, through the mirror (cold cache).
    let mirror = start_mirror(&nginx, &hub, None, &ca.ca);
    let endpoint = format!("http://127.0.0.1:{}", mirror.port);
    let mounts: Vec<_> = (0..8).map(|_| mount_at(&endpoint, None)).collect();
    let start = Barrier::new(mounts.len());
    let t = Instant::now();
    std::thread::scope(|s| {
        for m in &mounts {
            let (start, files, repo_dir) = (&start, &files, &repo_dir);
            s.spawn(move || {
                start.wait();
                load(&m.path(), repo_dir, files);
            });
        }
    });
    let pod_secs = t.elapsed().as_secs_f64();
    drop(mounts);
    let pod = hub.requests();
    let (pod_calls, pod_cdn) = (hub_calls(&pod), cdn_bytes(&pod, &sizes));
    let served = mirror.access_log().len();
    let cache = mirror.dir.path().join("cache");
    let (cache_bytes, cache_meta) = (
        dir_bytes(&cache.join("bytes")),
        dir_bytes(&cache.join("meta")),
    );
    hub.clear_requests();

    // A ninth host, later: what one more host costs the origin.
    {
        let m = mount_at(&endpoint, None);
        load(&m.path(), &repo_dir, &files);
    }
    let late = hub.requests();
    let (late_calls, late_cdn) = (hub_calls(&late), cdn_bytes(&late, &sizes));

    eprintln!(
        "pod figures: model {model_bytes} B ({shard_bytes} B in LFS shards); one mount alone: \
         {alone_calls} Hub requests, {alone_cdn} CDN bytes; 8 mounts via the mirror in \
         {pod_secs:.1} s: {pod_calls} Hub requests, {pod_cdn} CDN bytes ({:.3}x the model), \
         {served} requests served by the mirror; mirror cache on disk: {cache_bytes} B of bytes \
         ({:.4}x the model) + {cache_meta} B of metadata; a 9th mount later: {late_calls} Hub \
         requests, {late_cdn} CDN bytes",
        pod_cdn as f64 / model_bytes as f64,
        cache_bytes as f64 / model_bytes as f64
    );
    assert!(
        pod_cdn as f64 <= 1.05 * model_bytes as f64,
        "8 mounts cost the CDN {pod_cdn} bytes for a {model_bytes}-byte model"
    );
    assert!(
        pod_cdn as f64 <= 1.05 * shard_bytes as f64,
        "the CDN served {pod_cdn} bytes for {shard_bytes} bytes of LFS shards"
    );
    assert!(
        pod_calls <= alone_calls,
        "8 mounts made {pod_calls} Hub requests, one alone {alone_calls}"
    );
    assert!(
        served >= 8 * files.len(),
        "the mounts went through the mirror"
    );
    assert_eq!(
        late_cdn, 0,
        "a later host is served from the mirror's cache"
    );
    assert!(
        late_calls <= 1,
        "a later host made {late_calls} Hub requests"
    );
    assert!(
        pod.iter().chain(&late).all(|r| r.authorization.is_none()),
        "no token was configured, none may appear"
    );
}

#[test]
fn folders_of_1200_entries_list_completely_through_a_reverse_proxy_and_the_token_stays_on_the_endpoint(
) {
    let Some(nginx) = nginx_ready() else {
        return;
    };
    let fx = Fixtures::standard();
    let opts = FakeHubOptions {
        page_size: 100,
        ..FakeHubOptions::default()
    };
    let hub = FakeHub::start(fx.clone(), opts).expect("fake hub");
    let ca = make_ca();
    let want: BTreeSet<String> = fx
        .commit(RepoType::Dataset, "acme/corpus", "main")
        .expect("corpus")
        .files
        .keys()
        .filter_map(|p| p.strip_prefix("many/").map(str::to_owned))
        .collect();
    assert_eq!(want.len(), 1200);
    let private = repo_files(&fx, RepoType::Model, "acme/private-model");
    let bearer = format!("Bearer {TOKEN_FULL}");
    for (kind, proxy) in [
        ("plain reverse proxy", start_plain_proxy(&nginx, &hub)),
        ("shipped mirror", start_mirror(&nginx, &hub, None, &ca.ca)),
    ] {
        hub.clear_requests();
        let endpoint = format!("http://127.0.0.1:{}", proxy.port);
        let m = mount_at(&endpoint, Some(TOKEN_FULL));
        let got: BTreeSet<String> = std::fs::read_dir(m.join("datasets/acme/corpus@main/many"))
            .unwrap_or_else(|e| panic!("{kind}: listing failed: {e}"))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(got, want, "{kind}: the listing is complete");
        load(&m.path(), "acme/private-model@main", &private);
        drop(m);

        let reqs = hub.requests();
        let via_proxy: BTreeSet<String> = proxy
            .access_log()
            .iter()
            .filter_map(|l| l.split(' ').nth(1).map(str::to_owned))
            .collect();
        let pages = reqs
            .iter()
            .filter(|r| {
                r.listener == Listener::Hub && r.path.contains("/tree/") && r.path.contains("/many")
            })
            .count();
        let cdn_with_token = reqs
            .iter()
            .filter(|r| r.listener == Listener::Cdn && r.authorization.is_some())
            .count();
        eprintln!(
            "listing figures ({kind}): {} entries, {pages} tree pages at the Hub, {} Hub requests (all seen by the endpoint), {} CDN requests, {cdn_with_token} of them with a token",
            got.len(),
            reqs.iter().filter(|r| r.listener == Listener::Hub).count(),
            reqs.iter().filter(|r| r.listener == Listener::Cdn).count()
        );
        assert_eq!(pages, 12, "{kind}: 1200 entries in pages of 100");
        for r in reqs.iter().filter(|r| r.listener == Listener::Hub) {
            assert!(
                via_proxy.contains(&r.path),
                "{kind}: {} reached the Hub without going through the endpoint",
                r.path
            );
            assert_eq!(
                r.authorization.as_deref(),
                Some(bearer.as_str()),
                "{kind}: {} came from hubfs through the endpoint with the token",
                r.path
            );
        }
        let cdn: Vec<_> = reqs
            .iter()
            .filter(|r| r.listener == Listener::Cdn)
            .collect();
        assert!(!cdn.is_empty(), "{kind}: the LFS file came from the CDN");
        assert!(
            cdn.iter().all(|r| r.authorization.is_none()),
            "{kind}: the CDN never sees the token"
        );
    }
}

#[test]
fn a_pod_sharing_the_mirrors_credential_reads_private_repos_with_metadata_and_lfs_bytes_fetched_once(
) {
    let Some(nginx) = nginx_ready() else {
        return;
    };
    let (hub, fx) = support::standard_hub();
    let ca = make_ca();
    let mirror = start_mirror_with(&nginx, &hub, None, &ca.ca, Some(TOKEN_FULL));
    let endpoint = format!("http://127.0.0.1:{}", mirror.port);
    let private = repo_files(&fx, RepoType::Model, "acme/private-model");
    let mounts: Vec<_> = (0..4).map(|_| mount_at(&endpoint, None)).collect();
    std::thread::scope(|s| {
        for m in &mounts {
            let private = &private;
            s.spawn(move || load(&m.path(), "acme/private-model@main", private));
        }
    });
    drop(mounts);
    let reqs = hub.requests();
    let bearer = format!("Bearer {TOKEN_FULL}");
    let mut seen = BTreeSet::new();
    let mut paths_info = std::collections::BTreeMap::new();
    for r in reqs.iter().filter(|r| r.listener == Listener::Hub) {
        assert_eq!(
            r.authorization.as_deref(),
            Some(bearer.as_str()),
            "{}",
            r.path
        );
        // Metadata and the LFS redirect are cached for every host; a small file the Hub answers
        // itself (a private config.json) is not (docs/fleet.md, "Limits"). Paths-info shares
        // one URL for every name asked (the names are in the POST body, which the mirror keys
        // on): counted below.
        if r.path.contains("/paths-info/") {
            *paths_info.entry(r.path.clone()).or_insert(0usize) += 1;
        } else if r.path.starts_with("/api/") || r.path.ends_with(".safetensors") {
            assert!(
                seen.insert(r.path.clone()),
                "{} reached the Hub twice",
                r.path
            );
        }
    }
    // Each name is asked once for the pod, so no more paths-info requests than names; four
    // hosts not sharing the mirror's cache would ask each name four times.
    for (path, n) in &paths_info {
        assert!(
            *n <= private.len(),
            "{path} reached the Hub {n} times for {} files",
            private.len()
        );
    }
    assert!(seen.iter().any(|p| p.ends_with("model.safetensors")));
    assert!(seen.iter().any(|p| p.contains("/revision/main")));
    let sizes = sha_sizes(&fx);
    let lfs: u64 = private
        .iter()
        .filter(|f| f.0.ends_with(".safetensors"))
        .map(|f| f.2)
        .sum();
    assert_eq!(
        cdn_bytes(&reqs, &sizes),
        lfs,
        "the CDN served the LFS file once"
    );
    assert!(reqs
        .iter()
        .filter(|r| r.listener == Listener::Cdn)
        .all(|r| r.authorization.is_none()));
}

#[test]
fn a_resolve_that_answers_bytes_directly_reads_right_without_the_cdn() {
    if !ready() {
        return;
    }
    let fx = Fixtures::standard();
    let opts = FakeHubOptions {
        resolve_direct: true,
        ..FakeHubOptions::default()
    };
    let hub = FakeHub::start(fx.clone(), opts).expect("fake hub");
    let m = mount_at(&hub.endpoint(), None);
    load(
        &m.path(),
        "acme/sharded@main",
        &repo_files(&fx, RepoType::Model, "acme/sharded"),
    );
    let reqs = hub.requests();
    assert!(reqs.iter().all(|r| r.listener == Listener::Hub));
    assert!(
        reqs.iter().any(|r| r.path.contains("/resolve/")
            && r.path.ends_with(".safetensors")
            && r.status == 206),
        "the shards were answered by /resolve itself"
    );
}

/// Starts the binary for `endpoint` with `args`/`env`, waiting for the mount.
fn daemon(mnt: &Path, endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Daemon {
    let mut all = vec!["--endpoint", endpoint, "--cache-size", "64MiB"];
    all.extend_from_slice(args);
    let d = support::daemon::spawn(mnt, &all, env);
    d.wait_mounted();
    d
}

/// Stops a daemon with SIGTERM and returns its log.
fn stop(mut d: Daemon) -> String {
    support::sigterm(&d.child);
    let t = Instant::now();
    while let Ok(None) = d.child.try_wait() {
        assert!(t.elapsed() < Duration::from_secs(15), "hubfs did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(100));
    d.mountpoint = None;
    d.log()
}

#[test]
fn a_tls_mirror_with_a_test_ca_is_trusted_through_ssl_cert_file_or_ca_bundle_and_a_wrong_ca_fails_clearly(
) {
    let Some(nginx) = nginx_ready() else {
        return;
    };
    let (hub, fx) = support::standard_hub();
    let ca = make_ca();
    let mirror = start_mirror(&nginx, &hub, Some(&ca.server), &ca.ca);
    let endpoint = format!("https://localhost:{}", mirror.port);
    let sharded = repo_files(&fx, RepoType::Model, "acme/sharded");
    let ca_path = ca.ca.display().to_string();
    let other = ca.other_ca.display().to_string();

    for (how, args, env) in [
        (
            "SSL_CERT_FILE",
            vec![],
            vec![("SSL_CERT_FILE", ca_path.as_str())],
        ),
        ("--ca-bundle", vec!["--ca-bundle", ca_path.as_str()], vec![]),
        (
            "REQUESTS_CA_BUNDLE",
            vec![],
            vec![("REQUESTS_CA_BUNDLE", ca_path.as_str())],
        ),
    ] {
        let mnt = tempfile::tempdir().expect("mnt");
        let d = daemon(mnt.path(), &endpoint, &args, &env);
        load(mnt.path(), "acme/sharded@main", &sharded);
        let n = std::fs::read_dir(mnt.path().join("datasets/acme/corpus@main/many"))
            .expect("listing over TLS")
            .count();
        assert_eq!(n, 1200, "{how}");
        stop(d);
    }

    for (how, args) in [
        ("a wrong CA", vec!["--ca-bundle", other.as_str()]),
        ("no CA at all", vec![]),
    ] {
        let mnt = tempfile::tempdir().expect("mnt");
        let d = daemon(mnt.path(), &endpoint, &args, &[]);
        let e = std::fs::read_dir(mnt.path().join("acme/sharded@main"))
            .expect_err("an untrusted certificate must not be used");
        assert_eq!(support::errno(&e), libc::EIO, "{how}: {e}");
        let log = stop(d);
        assert!(
            log.contains("UnknownIssuer") && log.contains("--ca-bundle") && log.contains("TLS"),
            "{how}: the log says what failed and what to do:\n{log}"
        );
    }

    // A bundle that cannot be used stops the mount at once, naming the file.
    let mnt = tempfile::tempdir().expect("mnt");
    let missing = ca.dir.path().join("missing.pem");
    let mut d = support::daemon::spawn(
        mnt.path(),
        &[
            "--endpoint",
            &endpoint,
            "--ca-bundle",
            &missing.display().to_string(),
        ],
        &[],
    );
    let t = Instant::now();
    let status = loop {
        if let Ok(Some(st)) = d.child.try_wait() {
            break st;
        }
        assert!(t.elapsed() < Duration::from_secs(15), "hubfs did not exit");
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(100));
    d.mountpoint = None;
    assert!(!status.success());
    let log = d.log();
    assert!(
        log.contains("cannot read the CA bundle") && log.contains("missing.pem"),
        "{log}"
    );
}

#[test]
fn https_proxy_and_http_proxy_carry_the_traffic_and_no_proxy_hosts_and_host_ports_go_direct() {
    if !ready() {
        return;
    }
    let (Some(nginx), Some(tinyproxy)) = (tool("nginx", "nginx"), tool("tinyproxy", "tinyproxy"))
    else {
        return;
    };
    let (hub, fx) = support::standard_hub();
    let ca = make_ca();
    let mirror = start_mirror(&nginx, &hub, Some(&ca.server), &ca.ca);
    let proxy = Tinyproxy::start(&tinyproxy);
    let proxy_url = proxy.url();
    let sharded = repo_files(&fx, RepoType::Model, "acme/sharded");
    let ca_path = ca.ca.display().to_string();
    let tls_endpoint = format!("https://localhost:{}", mirror.port);
    let hub_port = hub.endpoint().rsplit(':').next().expect("port").to_owned();
    let cdn_hostport = hub.cdn_endpoint().trim_start_matches("http://").to_owned();
    let hub_hostport = format!("127.0.0.1:{hub_port}");
    let localhost_hub = format!("http://localhost:{hub_port}");
    let tls_hostport = format!("localhost:{}", mirror.port);

    // (name, endpoint, env) and what the proxy must and must not have seen.
    struct Case<'a> {
        name: &'a str,
        endpoint: &'a str,
        env: Vec<(&'a str, &'a str)>,
        through: Vec<String>,
        not_through: Vec<String>,
    }
    let cases = [
        Case {
            name: "HTTPS_PROXY to a TLS mirror",
            endpoint: &tls_endpoint,
            env: vec![("HTTPS_PROXY", &proxy_url)],
            through: vec![format!("CONNECT {tls_hostport} ")],
            not_through: vec![],
        },
        Case {
            name: "HTTPS_PROXY with NO_PROXY=host:port",
            endpoint: &tls_endpoint,
            env: vec![("HTTPS_PROXY", &proxy_url), ("NO_PROXY", &tls_hostport)],
            through: vec![],
            not_through: vec![format!("CONNECT {tls_hostport} ")],
        },
        Case {
            name: "HTTP_PROXY to the Hub and the CDN",
            endpoint: &hub.endpoint(),
            env: vec![("http_proxy", &proxy_url)],
            through: vec![
                format!("GET http://{hub_hostport}/api/"),
                format!("GET http://{cdn_hostport}/cdn/"),
            ],
            not_through: vec![],
        },
        Case {
            name: "HTTP_PROXY with NO_PROXY=the CDN's host:port",
            endpoint: &hub.endpoint(),
            env: vec![("HTTP_PROXY", &proxy_url), ("NO_PROXY", &cdn_hostport)],
            through: vec![format!("GET http://{hub_hostport}/api/")],
            not_through: vec![format!("http://{cdn_hostport}/")],
        },
        Case {
            name: "HTTP_PROXY with NO_PROXY=a host",
            endpoint: &localhost_hub,
            env: vec![("HTTP_PROXY", &proxy_url), ("no_proxy", "localhost")],
            through: vec![format!("GET http://{cdn_hostport}/cdn/")],
            not_through: vec!["http://localhost:".to_string()],
        },
    ];
    for c in cases {
        let before = proxy.requests().len();
        hub.clear_requests();
        let mut env = c.env.clone();
        env.push(("SSL_CERT_FILE", &ca_path));
        let mnt = tempfile::tempdir().expect("mnt");
        let d = daemon(mnt.path(), c.endpoint, &[], &env);
        load(mnt.path(), "acme/sharded@main", &sharded);
        let log = stop(d);
        let seen = proxy.requests().split_off(before);
        for want in &c.through {
            assert!(
                seen.iter().any(|r| r.starts_with(want.as_str())),
                "{}: the proxy did not see {want:?}; it saw {seen:?}\n{log}",
                c.name
            );
        }
        for never in &c.not_through {
            assert!(
                !seen.iter().any(|r| r.contains(never.as_str())),
                "{}: {never:?} went through the proxy: {seen:?}",
                c.name
            );
        }
        if c.endpoint != tls_endpoint {
            assert!(
                hub.requests().iter().any(|r| r.listener == Listener::Cdn),
                "{}: the shards came from the CDN",
                c.name
            );
        }
    }
}

/// Adds a commit on main of the private repo with one new file; returns (sha, path, sha256).
fn push_private_commit(hub: &FakeHub, n: u32) -> (String, String, String) {
    let path = format!("rotation-{n}.json");
    let data = fakehub::FileData::from_bytes(format!("{{\"rotation\": {n}}}\n").into_bytes());
    let sha256 = data.sha256_hex();
    let sha = hub.with_fixtures(|fx| {
        let r = fx
            .repo_mut(RepoType::Model, "acme/private-model")
            .expect("private repo");
        let mut files = r.resolve("main").expect("main").files.clone();
        files.insert(path.clone(), data);
        let sha = r.commit(&format!("rotation {n}"), files);
        r.set_ref("main", &sha);
        sha
    });
    (sha, path, sha256)
}

fn write_token(path: &Path, token: &str) {
    use std::os::unix::fs::PermissionsExt;
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, format!("{token}\n")).expect("write token");
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    std::fs::rename(&tmp, path).expect("rename token");
}

#[test]
fn a_rotated_token_file_is_used_without_a_remount_and_the_old_token_is_not_sent_after_the_change() {
    if !ready() {
        return;
    }
    let (hub, fx) = support::standard_hub();
    let token_b = "hf_fake_rotated_token_b_0123456789";
    let token_c = "hf_fake_rotated_token_c_0123456789";
    hub.add_token(token_b);
    hub.add_token(token_c);
    let dir = tempfile::tempdir().expect("dir");
    let token_file = dir.path().join("token");
    write_token(&token_file, TOKEN_FULL);
    let mnt = tempfile::tempdir().expect("mnt");
    let d = daemon(
        mnt.path(),
        &hub.endpoint(),
        &["--token-file", &token_file.display().to_string()],
        &[],
    );
    let bearer = |t: &str| format!("Bearer {t}");
    load(
        mnt.path(),
        "acme/private-model@main",
        &repo_files(&fx, RepoType::Model, "acme/private-model"),
    );
    assert!(hub
        .requests()
        .iter()
        .any(|r| r.authorization.as_deref() == Some(bearer(TOKEN_FULL).as_str())));

    // Rotation 1: the file says B and A is revoked at once; the first request with A gets 401,
    // the token file is read again, and the request is sent again with B.
    let mark = hub.requests().len();
    write_token(&token_file, token_b);
    hub.revoke_token(TOKEN_FULL);
    let (sha1, path1, want1) = push_private_commit(&hub, 1);
    let p1 = mnt
        .path()
        .join(format!("acme/private-model@{sha1}/{path1}"));
    assert_eq!(sha256_file(&p1).expect("read after rotation 1"), want1);
    let after: Vec<RequestRecord> = hub.requests().split_off(mark);
    let first_b = after
        .iter()
        .position(|r| r.authorization.as_deref() == Some(bearer(token_b).as_str()))
        .expect("token B was used");
    let with_a: Vec<_> = after
        .iter()
        .filter(|r| r.authorization.as_deref() == Some(bearer(TOKEN_FULL).as_str()))
        .collect();
    eprintln!(
        "rotation figures: after A -> B (A revoked): {} requests, {} with A ({} answered 401), the first with B at #{first_b}",
        after.len(),
        with_a.len(),
        with_a.iter().filter(|r| r.status == 401).count()
    );
    assert!(
        with_a.len() <= 1,
        "A was sent {} times after the change",
        with_a.len()
    );
    assert!(with_a.iter().all(|r| r.status == 401));
    assert!(
        after[first_b..]
            .iter()
            .all(|r| r.authorization.as_deref() != Some(bearer(TOKEN_FULL).as_str())),
        "the old token is not sent after the change is seen"
    );

    // Rotation 2: the file says C while B still works: the periodic check (every 5 s) finds it,
    // with no 401 at all.
    write_token(&token_file, token_c);
    std::thread::sleep(Duration::from_secs(6));
    let mark = hub.requests().len();
    let (sha2, path2, want2) = push_private_commit(&hub, 2);
    let p2 = mnt
        .path()
        .join(format!("acme/private-model@{sha2}/{path2}"));
    assert_eq!(sha256_file(&p2).expect("read after rotation 2"), want2);
    let after: Vec<RequestRecord> = hub.requests().split_off(mark);
    let hub_reqs: Vec<_> = after
        .iter()
        .filter(|r| r.listener == Listener::Hub)
        .collect();
    eprintln!(
        "rotation figures: after B -> C (B still valid, 6 s later): {} Hub requests, {} with C, {} answered 401",
        hub_reqs.len(),
        hub_reqs
            .iter()
            .filter(|r| r.authorization.as_deref() == Some(bearer(token_c).as_str()))
            .count(),
        hub_reqs.iter().filter(|r| r.status == 401).count()
    );
    assert!(!hub_reqs.is_empty());
    for r in &hub_reqs {
        assert_eq!(
            r.authorization.as_deref(),
            Some(bearer(token_c).as_str()),
            "{}",
            r.path
        );
        assert_ne!(r.status, 401, "{}", r.path);
    }
    let log = stop(d);
    assert!(log.matches("token file changed").count() >= 2, "{log}");
    for t in [TOKEN_FULL, token_b, token_c] {
        assert!(!log.contains(t), "a token appears in the log");
    }
}
