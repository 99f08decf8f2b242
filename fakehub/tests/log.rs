//! The timed request log, in process ([`FakeHub::requests`]) and out of process (the admin
//! endpoints and `fakehub serve`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::*;
use fakehub::*;
use serde_json::Value;

/// The record numbered as `resp`'s `X-Request-Id` says.
fn record_of(hub: &FakeHub, resp_id: &str) -> RequestRecord {
    let id = u64::from_str_radix(
        resp_id
            .strip_prefix("Root=1-fakehub-")
            .expect("x-request-id format"),
        16,
    )
    .expect("hex id");
    hub.requests()
        .into_iter()
        .find(|r| r.id == id)
        .expect("a record with the response's id")
}

/// A response body as JSON.
async fn json_of(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("json")
}

/// GET `url` as JSON.
async fn get_json(c: &reqwest::Client, url: &str) -> Value {
    json_of(c.get(url).send().await.expect("send")).await
}

/// Polls the log until `id`'s record has ended.
async fn ended(hub: &FakeHub, id: &str) -> RequestRecord {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = record_of(hub, id);
        if r.end.is_some() {
            return r;
        }
        assert!(Instant::now() < deadline, "record never ended: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fake Hub capped at `rate` bytes/s per response, and the start of a download of all of
/// big.bin from its CDN: (hub, client, response, X-Request-Id).
async fn capped_download(rate: u64) -> (FakeHub, reqwest::Client, reqwest::Response, String) {
    let hub = start_with(FakeHubOptions {
        shaping: Shaping {
            bytes_per_sec: Some(rate),
            ..Default::default()
        },
        ..Default::default()
    });
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let r = ranged(&c, &cdn, &format!("bytes=0-{}", BIG_LEN - 1))
        .await
        .expect("send");
    assert_eq!(r.status(), 206);
    let id = hdr(&r, "x-request-id").expect("request id");
    (hub, c, r, id)
}

#[tokio::test]
async fn a_rate_capped_body_is_in_flight_until_its_size_over_the_rate_has_passed() {
    let rate = 4_000_000u64;
    let (hub, _c, mut r, id) = capped_download(rate).await;
    let first = r.chunk().await.expect("chunk").expect("data");
    let mid = record_of(&hub, &id);
    assert_eq!(mid.end, None, "in flight while the body is sent");
    assert!(mid.body_bytes < BIG_LEN, "{}", mid.body_bytes);
    let mut got = first.len() as u64;
    while let Some(b) = r.chunk().await.expect("chunk") {
        got += b.len() as u64;
    }
    assert_eq!(got, BIG_LEN);
    let rec = ended(&hub, &id).await;
    assert_eq!((rec.status, rec.body_bytes), (206, BIG_LEN));
    assert_eq!(rec.listener, Listener::Cdn);
    assert_eq!(rec.slow, None);
    let took = rec.end.expect("ended") - rec.start;
    // Pacing never lets bytes run ahead of the rate: the last 64 KiB chunk is due at
    // (size - 64 KiB) / rate at the earliest. The upper bound only rules out nonsense.
    let earliest = Duration::from_secs_f64((BIG_LEN - 65536) as f64 / rate as f64);
    assert!(took >= earliest, "{took:?} < {earliest:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

#[tokio::test]
async fn a_body_the_client_drops_gets_an_end_and_partial_bytes() {
    let (hub, c, mut r, id) = capped_download(1_000_000).await;
    let first = r.chunk().await.expect("chunk").expect("data");
    assert!(!first.is_empty());
    drop(r);
    drop(c);
    let rec = ended(&hub, &id).await;
    assert!(
        rec.body_bytes > 0 && rec.body_bytes < BIG_LEN,
        "{}",
        rec.body_bytes
    );
    assert!(rec.end.expect("ended") >= rec.start);
    assert_eq!(rec.status, 206);
}

#[tokio::test]
async fn every_response_is_logged_in_arrival_order_with_its_body_bytes() {
    let hub = start();
    let c = client();
    let api = format!("{}/api/models/acme/tiny-gpt2", hub.endpoint());
    let body = c
        .get(&api)
        .send()
        .await
        .expect("send")
        .bytes()
        .await
        .expect("body");
    let cdn = cdn_url(&hub, &c).await;
    let full = ranged(&c, &cdn, &format!("bytes=0-{}", BIG_LEN - 1))
        .await
        .expect("send")
        .bytes()
        .await
        .expect("body");
    assert_eq!(full.len() as u64, BIG_LEN);
    let head = c
        .head(&cdn)
        .header("range", "bytes=0-99")
        .send()
        .await
        .expect("send");
    assert_eq!(head.status(), 206);
    drop(head);
    // Bodies end after the client has them; poll until the last one is complete.
    let deadline = Instant::now() + Duration::from_secs(20);
    let recs = loop {
        let recs = hub.requests();
        if recs.len() == 4 && recs.iter().all(|r| r.end.is_some()) {
            break recs;
        }
        assert!(Instant::now() < deadline, "{recs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let statuses: Vec<u16> = recs.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 302, 206, 206]);
    assert_eq!(recs[0].body_bytes, body.len() as u64);
    assert!(recs[1].body_bytes > 0, "the redirect's text body");
    assert_eq!(recs[2].body_bytes, BIG_LEN);
    assert_eq!(recs[3].body_bytes, 0, "HEAD sends no body");
    for w in recs.windows(2) {
        assert!(w[0].id < w[1].id && w[0].start <= w[1].start, "{w:?}");
    }
    for r in &recs {
        assert!(r.end.is_some_and(|e| e >= r.start), "{r:?}");
        assert_eq!(r.slow, None);
    }
}

#[tokio::test]
async fn a_reset_is_logged_with_status_zero_and_an_end() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    hub.set_faults(Faults {
        rate: 1.0,
        kinds: vec![FaultKind::Reset],
        seed: 1,
        include_api: false,
    });
    hub.clear_requests();
    assert!(ranged(&c, &cdn, "bytes=0-99").await.is_err());
    let recs = hub.requests();
    assert_eq!(recs.len(), 1);
    assert_eq!((recs[0].status, recs[0].body_bytes), (0, 0));
    assert_eq!(recs[0].fault, Some(FaultKind::Reset));
    assert!(recs[0].end.is_some());
}

#[tokio::test]
async fn admin_endpoints_list_and_clear_the_log_and_stay_out_of_it() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let r = ranged(&c, &cdn, "bytes=10-109").await.expect("send");
    let id = hdr(&r, "x-request-id").expect("id");
    assert_eq!(r.bytes().await.expect("body").len(), 100);
    // Admin answers are never shaped: a 5 s latency does not delay them.
    hub.set_shaping(Shaping {
        latency: Duration::from_secs(5),
        ..Default::default()
    });
    let admin = format!("{}/_fakehub/requests", hub.endpoint());
    let t0 = Instant::now();
    let v = get_json(&c, &admin).await;
    assert!(t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
    let recs = v.as_array().expect("array");
    assert_eq!(recs.len(), 2, "{v}");
    let want_id = record_of(&hub, &id).id;
    let last = &recs[1];
    assert_eq!(last["listener"], "cdn");
    assert_eq!(last["method"], "GET");
    assert_eq!(last["range"], "bytes=10-109");
    assert_eq!(last["status"], 206);
    assert_eq!(last["id"], want_id);
    assert_eq!(last["body_bytes"], 100);
    assert_eq!(last["slow"], Value::Null);
    assert_eq!(last["fault"], Value::Null);
    assert!(last["path"]
        .as_str()
        .is_some_and(|p| p.starts_with("/cdn/")));
    let (start, end) = (
        last["start"].as_f64().expect("start"),
        last["end"].as_f64().expect("end"),
    );
    assert!(end >= start && start >= recs[0]["start"].as_f64().expect("start"));
    assert_eq!(recs[0]["status"], 302);

    let cleared = json_of(c.post(format!("{admin}/clear")).send().await.expect("send")).await;
    assert_eq!(cleared["cleared"], 2);
    let v = get_json(&c, &admin).await;
    assert_eq!(v, Value::Array(vec![]), "admin requests are not logged");
    assert_eq!(
        c.post(&admin).send().await.expect("send").status(),
        reqwest::StatusCode::METHOD_NOT_ALLOWED
    );
    let other = format!("{}/_fakehub/nope", hub.endpoint());
    assert_eq!(c.get(&other).send().await.expect("send").status(), 404);
    assert!(hub.requests().is_empty());
}

/// A `fakehub serve` child with these extra flags; returns it and its Hub endpoint.
fn serve(flags: &[&str]) -> (std::process::Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fakehub"))
        .arg("serve")
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn fakehub serve");
    let out = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(out).lines();
    let hub = loop {
        let line = lines.next().expect("a HUB line").expect("read stdout");
        if let Some(h) = line.strip_prefix("HUB ") {
            break h.trim().to_string();
        }
    };
    (child, hub)
}

#[tokio::test]
async fn serve_flags_shape_responses_and_the_admin_log_shows_them() {
    let (mut child, hub) = serve(&[
        "--large-file",
        "bench/big",
        "--large-file-mb",
        "1",
        "--slow-fraction",
        "1",
        "--slow-kind",
        "stall",
        "--stall-ms",
        "300",
        "--latency-ms",
        "5",
        "--latency-sigma",
        "0.5",
        "--shaping-seed",
        "7",
    ]);
    let c = client();
    let r = c
        .get(format!("{hub}/bench/big/resolve/main/large.bin"))
        .send()
        .await
        .expect("resolve");
    let cdn = hdr(&r, "location").expect("location");
    let r = ranged(&c, &cdn, "bytes=0-99999").await.expect("send");
    assert_eq!(r.bytes().await.expect("body").len(), 100_000);
    let v = get_json(&c, &format!("{hub}/_fakehub/requests")).await;
    let recs = v.as_array().expect("array");
    assert_eq!(recs.len(), 2, "{v}");
    assert_eq!(recs[0]["slow"], Value::Null, "a redirect is never slow");
    assert_eq!(recs[1]["slow"], "stall");
    assert_eq!(recs[1]["body_bytes"], 100_000);
    let took = recs[1]["end"].as_f64().expect("end") - recs[1]["start"].as_f64().expect("start");
    assert!(took >= 0.3, "{took}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn serve_rejects_bad_shaping_flags() {
    for flag in [
        "--slow-kind=nope",
        "--slow-fraction=1.5",
        "--crawl-factor=0.5",
        "--latency-sigma=-1",
    ] {
        let mut child = Command::new(env!("CARGO_BIN_EXE_fakehub"))
            .args(["serve", flag])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("run fakehub");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait") {
                break Some(st);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.is_some_and(|st| !st.success()),
            "{flag} accepted: {status:?}"
        );
    }
}
