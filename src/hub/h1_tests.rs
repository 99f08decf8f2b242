use parking_lot::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use super::*;
use crate::cache::pool::BufferPool;
use crate::hub::http::pieces::Pieces;
use crate::hub::http::{HttpConfig, HttpHub};
use crate::hub::{FileRef, HubClient, PieceBuffer, PieceSink, RepoId, RepoType};

/// What the test server does after writing an answer.
#[derive(Clone, Copy, Debug, PartialEq)]
enum After {
    /// Waits for the next request on the connection.
    KeepAlive,
    /// Closes the connection (without saying so in the head).
    Close,
    /// Holds the connection open and sends nothing more.
    Stall,
}

/// One answer: head lines (without the status line's `\r\n\r\n`), body, and what follows.
struct Reply {
    head: String,
    body: Vec<u8>,
    after: After,
}

/// The ranges of the requests a test server saw, in order.
type Ranges = Arc<Mutex<Vec<Option<(u64, u64)>>>>;

type Script = dyn Fn(usize, Option<(u64, u64)>) -> Reply + Send + Sync;

/// A tiny HTTP/1.1 server on 127.0.0.1: `script(n, range)` answers the `n`th request (from 0).
/// Counts connections and records each request's range.
struct Server {
    url: String,
    connections: Arc<AtomicUsize>,
    ranges: Ranges,
}

async fn serve(script: Arc<Script>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let connections = Arc::new(AtomicUsize::new(0));
    let ranges: Ranges = Arc::default();
    let (c, r) = (connections.clone(), ranges.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            c.fetch_add(1, Ordering::SeqCst);
            let (script, ranges) = (script.clone(), r.clone());
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                loop {
                    let mut range = None;
                    let mut line = String::new();
                    let mut any = false;
                    loop {
                        line.clear();
                        match stream.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        if line == "\r\n" && any {
                            break;
                        }
                        any = true;
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("range: bytes=") {
                            let (a, b) = v.trim().split_once('-').expect("range");
                            range = Some((a.parse().expect("a"), b.parse().expect("b")));
                        }
                    }
                    let n = {
                        let mut r = ranges.lock();
                        r.push(range);
                        r.len() - 1
                    };
                    let reply = script(n, range);
                    let s = stream.get_mut();
                    let head = format!("{}\r\n\r\n", reply.head);
                    if s.write_all(head.as_bytes()).await.is_err()
                        || s.write_all(&reply.body).await.is_err()
                    {
                        return;
                    }
                    match reply.after {
                        After::KeepAlive => {}
                        After::Close => return,
                        After::Stall => {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                            return;
                        }
                    }
                }
            });
        }
    });
    Server {
        url,
        connections,
        ranges,
    }
}

fn data(n: usize) -> Arc<Vec<u8>> {
    Arc::new((0..n).map(|i| (i % 251) as u8).collect())
}

/// A 206 for `range` of `data`, with `after` after it; `body` may cut it.
fn partial(data: &[u8], range: Option<(u64, u64)>, after: After, cut: Option<usize>) -> Reply {
    let (a, b) = range.expect("a range");
    let body = &data[a as usize..=b as usize];
    let body = &body[..cut.unwrap_or(body.len()).min(body.len())];
    Reply {
        head: format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{}\r\nContent-Length: {}",
            data.len(),
            b - a + 1
        ),
        body: body.to_vec(),
        after,
    }
}

fn client() -> H1Client {
    H1Client::new(Duration::from_secs(5), Vec::new(), 4)
}

async fn get(
    c: &H1Client,
    url: &str,
    offset: u64,
    len: u64,
    size: u64,
    acc: &mut Pieces<'_>,
) -> Result<Outcome, HubError> {
    let url = Url::parse(url).expect("url");
    c.range(&url, offset, offset + len - 1, size, acc, &Stats::default())
        .await
}

#[test]
fn heads_are_parsed_for_status_length_range_and_keep_alive() {
    let raw = b"HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 0-9/100\r\ncontent-length: 10\r\n\r\nbody";
    let Ok(Parsed::Complete(h)) = parse_head(raw) else {
        panic!("complete head");
    };
    assert_eq!(
        h,
        Head {
            len: raw.len() - 4,
            status: 206,
            content_length: Some(10),
            content_range: Some("bytes 0-9/100".into()),
            keep_alive: true,
            unusual: None,
        }
    );
    assert_eq!(parse_head(&raw[..20]), Ok(Parsed::Partial));
    let close = b"HTTP/1.1 206 x\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n";
    assert!(matches!(
        parse_head(close),
        Ok(Parsed::Complete(Head {
            keep_alive: false,
            ..
        }))
    ));
    let old = b"HTTP/1.0 206 x\r\nContent-Length: 1\r\n\r\n";
    assert!(matches!(
        parse_head(old),
        Ok(Parsed::Complete(Head {
            keep_alive: false,
            ..
        }))
    ));
}

#[test]
fn heads_of_bodies_not_plainly_delimited_are_marked_unusual_or_refused() {
    for raw in [
        &b"HTTP/1.1 206 x\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
        b"HTTP/1.1 206 x\r\nContent-Length: 5\r\nContent-Encoding: gzip\r\n\r\n",
        b"HTTP/1.1 206 x\r\nContent-Range: bytes 0-4/5\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\n\r\n",
    ] {
        let Ok(Parsed::Complete(h)) = parse_head(raw) else {
            panic!("complete head");
        };
        assert!(h.unusual.is_some(), "{}", String::from_utf8_lossy(raw));
    }
    let twice = b"HTTP/1.1 206 x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n";
    assert!(parse_head(twice).is_err(), "conflicting lengths");
    let same_twice = b"HTTP/1.1 206 x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n";
    assert!(matches!(parse_head(same_twice), Ok(Parsed::Complete(_))));
    assert!(parse_head(b"HTTP/1.1 206 x\r\nContent-Length: -1\r\n\r\n").is_err());
    assert!(parse_head(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
}

#[test]
fn requests_carry_the_range_and_no_token() {
    let url = Url::parse("https://cdn.example:8443/a/b%20c?X-Sig=s&Expires=9").unwrap();
    let req = String::from_utf8(request(&url, 5, 9).unwrap()).unwrap();
    assert!(req.starts_with("GET /a/b%20c?X-Sig=s&Expires=9 HTTP/1.1\r\nHost: cdn.example:8443\r\nRange: bytes=5-9\r\n"), "{req}");
    assert!(req.ends_with("\r\n\r\n"));
    assert!(!req.to_ascii_lowercase().contains("authorization"));
    let default_port = Url::parse("https://cdn.example/x").unwrap();
    let req = String::from_utf8(request(&default_port, 0, 0).unwrap()).unwrap();
    assert!(req.contains("\r\nHost: cdn.example\r\n"), "{req}");
    let with_user = Url::parse("https://u:p@cdn.example/x").unwrap();
    assert_eq!(request(&with_user, 0, 0), None, "left to reqwest");
}

#[tokio::test]
async fn bodies_arrive_whole_and_connections_are_kept_alive() {
    let d = data(50_000);
    let dd = d.clone();
    let s = serve(Arc::new(move |_, r| {
        partial(&dd, r, After::KeepAlive, None)
    }))
    .await;
    let c = client();
    for (offset, len) in [(1000u64, 30_000u64), (0, 50_000), (49_999, 1)] {
        let mut acc = Pieces::new(len, 4096);
        let out = get(&c, &s.url, offset, len, 50_000, &mut acc).await;
        assert_eq!(out.expect("ok"), Outcome::Done);
        let pieces = acc.finish().expect("every byte");
        assert_eq!(
            pieces.concat(),
            &d[offset as usize..(offset + len) as usize]
        );
        assert!(pieces.iter().all(|p| p.len() <= 4096));
    }
    assert_eq!(
        s.connections.load(Ordering::SeqCst),
        1,
        "one connection reused"
    );
    assert_eq!(c.idle_count(&Url::parse(&s.url).unwrap()), 1);
}

/// A sink receiving into pool buffers, as the cache's does; records what it got.
struct PoolSink {
    pool: Arc<BufferPool>,
    got: Mutex<Vec<(usize, Bytes)>>,
}

impl PieceSink for PoolSink {
    fn buffer(&self, len: usize) -> Box<dyn PieceBuffer> {
        self.pool.buffer(len)
    }

    fn deliver(&self, index: usize, piece: Bytes) {
        self.got.lock().push((index, piece));
    }
}

/// A buffer that takes `put` only (no spare room).
struct PutOnly(Vec<u8>);

impl PieceBuffer for PutOnly {
    fn put(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }

    fn freeze(self: Box<Self>) -> Bytes {
        Bytes::from(self.0)
    }
}

struct PutOnlySink(Mutex<Vec<Bytes>>);

impl PieceSink for PutOnlySink {
    fn buffer(&self, len: usize) -> Box<dyn PieceBuffer> {
        Box::new(PutOnly(Vec::with_capacity(len)))
    }

    fn deliver(&self, _: usize, piece: Bytes) {
        self.0.lock().push(piece);
    }
}

#[tokio::test]
async fn pool_buffers_are_filled_in_place_and_put_only_buffers_still_work() {
    let d = data(300_000);
    let dd = d.clone();
    let s = serve(Arc::new(move |_, r| {
        partial(&dd, r, After::KeepAlive, None)
    }))
    .await;
    let c = client();
    let pool = BufferPool::new(8, 65_536).expect("pool");
    let sink = PoolSink {
        pool: pool.clone(),
        got: Mutex::default(),
    };
    let mut acc = Pieces::streaming(200_000, 65_536, &sink);
    let out = get(&c, &s.url, 7, 200_000, 300_000, &mut acc).await;
    assert_eq!(out.expect("ok"), Outcome::Done);
    let got = sink.got.into_inner();
    assert_eq!(
        got.iter().map(|(i, _)| *i).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let bytes: Vec<u8> = got.iter().flat_map(|(_, b)| b.to_vec()).collect();
    assert_eq!(bytes, &d[7..200_007]);
    assert_eq!(
        (pool.in_use(), pool.misses()),
        (4, 0),
        "all four in pool buffers"
    );

    let put_only = PutOnlySink(Mutex::default());
    let mut acc = Pieces::streaming(100_000, 30_000, &put_only);
    let out = get(&c, &s.url, 0, 100_000, 300_000, &mut acc).await;
    assert_eq!(out.expect("ok"), Outcome::Done);
    assert_eq!(put_only.0.into_inner().concat(), &d[..100_000]);
}

#[tokio::test]
async fn a_cut_body_keeps_what_arrived_and_the_connection_is_dropped() {
    let d = data(10_000);
    let dd = d.clone();
    let s = serve(Arc::new(move |_, r| {
        partial(&dd, r, After::Close, Some(3000))
    }))
    .await;
    let c = client();
    let mut acc = Pieces::new(5000, 1024);
    let err = get(&c, &s.url, 100, 5000, 10_000, &mut acc)
        .await
        .expect_err("cut");
    assert!(matches!(err, HubError::Network { .. }), "{err:?}");
    assert!(
        err.to_string().contains("body cut after 3000 bytes"),
        "{err}"
    );
    assert_eq!((acc.got(), acc.missing()), (3000, 2000));
    assert_eq!(c.idle_count(&Url::parse(&s.url).unwrap()), 0);
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let d = data(10_000);
    let dd = d.clone();
    let s = serve(Arc::new(move |_, r| {
        partial(&dd, r, After::Stall, Some(100))
    }))
    .await;
    let c = H1Client::new(Duration::from_millis(300), Vec::new(), 4);
    let mut acc = Pieces::new(5000, 1024);
    let started = Instant::now();
    let err = get(&c, &s.url, 0, 5000, 10_000, &mut acc)
        .await
        .expect_err("stall");
    assert!(matches!(err, HubError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(acc.got(), 100);
}

#[tokio::test]
async fn a_silent_server_times_out_before_the_head() {
    // The status line comes, the rest of the head never does.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = stream.write_all(b"HTTP/1.1 206 Partial").await;
        tokio::time::sleep(Duration::from_secs(3600)).await;
    });
    let c = H1Client::new(Duration::from_millis(300), Vec::new(), 4);
    let mut acc = Pieces::new(10, 10);
    let err = get(&c, &url, 0, 10, 10, &mut acc).await.expect_err("stall");
    assert!(matches!(err, HubError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn a_length_or_range_other_than_asked_is_an_error() {
    let d = data(10_000);
    let (d1, d2) = (d.clone(), d.clone());
    let long = serve(Arc::new(move |_, r| {
        let mut reply = partial(&d1, r, After::KeepAlive, None);
        reply.head = reply.head.replace(
            &format!("Content-Length: {}", reply.body.len()),
            &format!("Content-Length: {}", reply.body.len() + 1),
        );
        reply
    }))
    .await;
    let shifted = serve(Arc::new(move |_, r| {
        let (a, b) = r.expect("range");
        partial(&d2, Some((a + 1, b + 1)), After::KeepAlive, None)
    }))
    .await;
    let c = client();
    for url in [&long.url, &shifted.url] {
        let mut acc = Pieces::new(1000, 1000);
        let err = get(&c, url, 10, 1000, 10_000, &mut acc)
            .await
            .expect_err("wrong");
        assert!(matches!(err, HubError::Protocol { .. }), "{err:?}");
        assert_eq!(acc.got(), 0, "no byte taken");
    }
}

#[tokio::test]
async fn answers_it_does_not_take_are_passed_on_untouched() {
    let s = serve(Arc::new(|n, _| Reply {
        head: match n {
            0 => {
                "HTTP/1.1 206 x\r\nContent-Range: bytes 0-9/10\r\nTransfer-Encoding: chunked".into()
            }
            1 => "HTTP/1.1 403 Forbidden\r\nContent-Length: 0".into(),
            2 => "HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0".into(),
            _ => "HTTP/1.1 200 OK\r\nContent-Length: 10".into(),
        },
        body: Vec::new(),
        after: After::Close,
    }))
    .await;
    let c = client();
    for want in ["Transfer-Encoding", "403", "302", "200"] {
        let mut acc = Pieces::new(5, 5);
        // bytes 0-4 of a 10-byte file: a 200 is not the range.
        let out = get(&c, &s.url, 0, 5, 10, &mut acc).await.expect("no error");
        let Outcome::Fallback(why) = out else {
            panic!("passed on: {want}");
        };
        assert!(why.contains(want), "{why} for {want}");
        assert_eq!(acc.got(), 0);
    }
}

#[tokio::test]
async fn a_connection_closed_while_idle_is_replaced_by_a_fresh_one() {
    let d = data(10_000);
    let dd = d.clone();
    // Closes after each answer without saying so: the idle connection is dead when reused.
    let s = serve(Arc::new(move |_, r| partial(&dd, r, After::Close, None))).await;
    let c = client();
    for offset in [0u64, 5000] {
        let mut acc = Pieces::new(1000, 1000);
        let out = get(&c, &s.url, offset, 1000, 10_000, &mut acc).await;
        assert_eq!(out.expect("ok"), Outcome::Done);
        assert_eq!(
            acc.finish().unwrap().concat(),
            &d[offset as usize..offset as usize + 1000]
        );
    }
    assert_eq!(s.connections.load(Ordering::SeqCst), 2);
}

fn file(size: u64) -> FileRef {
    FileRef {
        repo: RepoId::new(RepoType::Model, "a", "b"),
        commit: "c".repeat(40),
        path: "f.bin".into(),
        size,
        etag: String::new(),
    }
}

/// A Hub whose `/resolve/` redirects to `cdn`'s `/obj`.
async fn hub_redirecting_to(cdn: &str) -> Server {
    let location = format!("{cdn}/obj?Signature=s");
    serve(Arc::new(move |_, _| Reply {
        head: format!("HTTP/1.1 302 Found\r\nLocation: {location}\r\nContent-Length: 0"),
        body: Vec::new(),
        after: After::KeepAlive,
    }))
    .await
}

#[tokio::test]
async fn reads_of_a_remembered_cdn_url_take_the_direct_route() {
    let d = data(100_000);
    let dd = d.clone();
    let cdn = serve(Arc::new(move |_, r| {
        partial(&dd, r, After::KeepAlive, None)
    }))
    .await;
    let hub_server = hub_redirecting_to(&cdn.url).await;
    let stats = Arc::new(Stats::default());
    let hub = HttpHub::new(HttpConfig::new(&hub_server.url))
        .expect("client")
        .with_stats(stats.clone());
    let f = file(d.len() as u64);
    let first = hub.read_range(&f, 0, 10_000, 4096).await.expect("first");
    assert_eq!(first.concat(), &d[..10_000]);
    assert_eq!(
        Stats::get(&stats.direct_range_requests),
        0,
        "resolved by reqwest"
    );
    for (offset, len) in [(10_000u64, 50_000u64), (60_000, 40_000)] {
        let got = hub.read_range(&f, offset, len, 4096).await.expect("direct");
        assert_eq!(got.concat(), &d[offset as usize..(offset + len) as usize]);
    }
    assert_eq!(Stats::get(&stats.direct_range_requests), 2);
    assert_eq!(hub_server.ranges.lock().len(), 1, "the Hub asked once");

    // Without direct reads, every read goes through reqwest.
    let mut cfg = HttpConfig::new(&hub_server.url);
    cfg.direct_reads = false;
    let stats = Arc::new(Stats::default());
    let hub = HttpHub::new(cfg).expect("client").with_stats(stats.clone());
    for _ in 0..2 {
        hub.read_range(&f, 0, 1000, 4096).await.expect("reqwest");
    }
    assert_eq!(Stats::get(&stats.direct_range_requests), 0);
}

#[tokio::test]
async fn a_direct_body_cut_midway_resumes_from_the_first_missing_byte() {
    let d = data(100_000);
    let dd = d.clone();
    // The second request (the first direct one) is cut after 3000 bytes.
    let cdn = serve(Arc::new(move |n, r| {
        let cut = (n == 1).then_some(3000);
        let after = if n == 1 {
            After::Close
        } else {
            After::KeepAlive
        };
        partial(&dd, r, after, cut)
    }))
    .await;
    let hub_server = hub_redirecting_to(&cdn.url).await;
    let mut cfg = HttpConfig::new(&hub_server.url);
    cfg.retry.base_delay = Duration::from_millis(1);
    let stats = Arc::new(Stats::default());
    let hub = HttpHub::new(cfg).expect("client").with_stats(stats.clone());
    let f = file(d.len() as u64);
    hub.read_range(&f, 0, 1000, 1024).await.expect("first");
    let got = hub
        .read_range(&f, 20_000, 10_000, 1024)
        .await
        .expect("resumed");
    assert_eq!(got.concat(), &d[20_000..30_000]);
    assert_eq!(
        *cdn.ranges.lock(),
        [
            Some((0, 999)),
            Some((20_000, 29_999)),
            Some((23_000, 29_999))
        ]
    );
    assert_eq!(
        Stats::get(&stats.direct_range_requests),
        0,
        "the rest came through reqwest"
    );
    // The redirect is remembered again: the next read is direct.
    hub.read_range(&f, 50_000, 1000, 1024)
        .await
        .expect("direct");
    assert_eq!(Stats::get(&stats.direct_range_requests), 1);
}

#[tokio::test]
async fn a_cdn_refusal_on_the_direct_route_re_resolves() {
    let d = data(10_000);
    let dd = d.clone();
    // The remembered URL is refused as an expired signature: the direct request (1) and the
    // same request through reqwest (2), which classifies the refusal.
    let cdn = serve(Arc::new(move |n, r| {
        if n == 1 || n == 2 {
            return Reply {
                head: "HTTP/1.1 403 Forbidden\r\nContent-Length: 0".into(),
                body: Vec::new(),
                after: After::KeepAlive,
            };
        }
        partial(&dd, r, After::KeepAlive, None)
    }))
    .await;
    let hub_server = hub_redirecting_to(&cdn.url).await;
    let hub = HttpHub::new(HttpConfig::new(&hub_server.url)).expect("client");
    let f = file(d.len() as u64);
    hub.read_range(&f, 0, 1000, 1024).await.expect("first");
    let got = hub.read_range(&f, 5000, 1000, 1024).await.expect("second");
    assert_eq!(got.concat(), &d[5000..6000]);
    assert_eq!(hub_server.ranges.lock().len(), 2, "asked the Hub again");
    assert_eq!(cdn.ranges.lock().len(), 4);
}

/// A TLS server on 127.0.0.1 with a certificate for `127.0.0.1` signed by a fresh CA, answering
/// ranged GETs of `data` with 206s on kept-alive connections; returns its URL and the CA's PEM.
async fn tls_server(data: Arc<Vec<u8>>) -> (String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "hubfs h1 test CA");
    let ca_key = KeyPair::generate().expect("key");
    let ca = ca_params.self_signed(&ca_key).expect("CA");
    let leaf_key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .expect("leaf params")
        .signed_by(&leaf_key, &ca, &ca_key)
        .expect("leaf");
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("https://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, data) = (acceptor.clone(), data.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut s = BufReader::new(tls);
                loop {
                    let mut range = None;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match s.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) if line == "\r\n" => break,
                            Ok(_) => {}
                        }
                        if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                            let (a, b) = v.trim().split_once('-').expect("range");
                            range = Some((a.parse().expect("a"), b.parse().expect("b")));
                        }
                    }
                    let reply = partial(&data, range, After::KeepAlive, None);
                    let w = s.get_mut();
                    let head = format!("{}\r\n\r\n", reply.head);
                    if w.write_all(head.as_bytes()).await.is_err()
                        || w.write_all(&reply.body).await.is_err()
                        || w.flush().await.is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (url, ca.pem())
}

#[tokio::test]
async fn https_trusts_the_extra_ca_and_refuses_a_server_it_cannot_trust() {
    let d = data(200_000);
    let (url, ca_pem) = tls_server(d.clone()).await;
    let dir = tempfile::tempdir().expect("dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).expect("write");
    let trusting = H1Client::new(Duration::from_secs(5), vec![ca], 4);
    for offset in [0u64, 100_000] {
        let mut acc = Pieces::new(80_000, 16_384);
        let out = get(&trusting, &url, offset, 80_000, 200_000, &mut acc).await;
        assert_eq!(out.expect("ok"), Outcome::Done);
        assert_eq!(
            acc.finish().expect("whole").concat(),
            &d[offset as usize..offset as usize + 80_000]
        );
    }
    assert_eq!(
        trusting.idle_count(&Url::parse(&url).unwrap()),
        1,
        "kept alive"
    );

    let wary = client();
    let mut acc = Pieces::new(10, 10);
    let err = get(&wary, &url, 0, 10, 200_000, &mut acc)
        .await
        .expect_err("untrusted");
    assert!(
        matches!(&err, HubError::Tls { message, .. } if message.contains("UnknownIssuer")),
        "{err:?}"
    );
}
