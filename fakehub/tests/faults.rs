//! Traffic shaping and fault injection, seen from a reqwest client.

use std::time::{Duration, Instant};

mod common;

use common::*;
use fakehub::*;
use reqwest::{Client, StatusCode};

fn faults(rate: f64, kinds: Vec<FaultKind>) -> Faults {
    Faults {
        rate,
        kinds,
        seed: 42,
        include_api: false,
    }
}

/// The /api/resolve-cache/ URL of acme/tiny-gpt2's config.json (via its 307).
async fn cache_url(hub: &FakeHub, c: &Client) -> (String, String) {
    let r = c
        .get(format!(
            "{}/acme/tiny-gpt2/resolve/main/config.json",
            hub.endpoint()
        ))
        .send()
        .await
        .expect("resolve");
    assert_eq!(r.status(), StatusCode::TEMPORARY_REDIRECT);
    let commit = hdr(&r, "x-repo-commit").expect("commit");
    let loc = hdr(&r, "location").expect("location");
    (format!("{}{loc}", hub.endpoint()), commit)
}

#[tokio::test]
async fn status_faults() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let (cache, _) = cache_url(&hub, &c).await;
    let cases = [
        (FaultKind::Status500, 500),
        (FaultKind::Status503, 503),
        (
            FaultKind::TooManyRequests {
                retry_after_secs: 7,
            },
            429,
        ),
    ];
    for (kind, status) in cases {
        hub.set_faults(faults(1.0, vec![kind.clone()]));
        for url in [&cdn, &cache] {
            let r = ranged(&c, url, "bytes=0-99").await.expect("send");
            assert_eq!(r.status().as_u16(), status, "{kind:?} {url}");
            if status == 429 {
                assert_eq!(hdr(&r, "retry-after").as_deref(), Some("7"));
            }
        }
    }
    let counts = hub.faults_injected();
    assert_eq!(counts.get("Status500"), Some(&2));
    assert_eq!(counts.get("Status503"), Some(&2));
    assert_eq!(counts.get("TooManyRequests"), Some(&2));
    let rec = hub.requests();
    let last = rec.last().expect("record");
    assert_eq!(last.status, 429);
    assert!(matches!(
        last.fault,
        Some(FaultKind::TooManyRequests { .. })
    ));
}

#[tokio::test]
async fn reset_is_a_connection_error() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let (cache, _) = cache_url(&hub, &c).await;
    hub.set_faults(faults(1.0, vec![FaultKind::Reset]));
    for url in [&cdn, &cache] {
        let e = ranged(&c, url, "bytes=0-99").await.expect_err("reset");
        assert!(!e.is_status(), "{e:?}");
    }
    assert_eq!(hub.faults_injected().get("Reset"), Some(&2));
    let resets: Vec<_> = hub
        .requests()
        .into_iter()
        .filter(|r| r.fault == Some(FaultKind::Reset))
        .collect();
    assert_eq!(resets.len(), 2);
    assert!(resets.iter().all(|r| r.status == 0));
    // Service continues on new connections.
    hub.set_faults(Faults::default());
    let r = ranged(&client(), &cdn, "bytes=0-99").await.expect("send");
    assert_eq!(r.status(), 206);
}

#[tokio::test]
async fn cut_body_is_short_then_error() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    hub.set_faults(faults(1.0, vec![FaultKind::CutBody]));
    let mut r = ranged(&c, &cdn, "bytes=0-999999").await.expect("send");
    assert_eq!(r.status(), 206);
    assert_eq!(hdr(&r, "content-length").as_deref(), Some("1000000"));
    assert_eq!(
        hdr(&r, "content-range"),
        Some(format!("bytes 0-999999/{BIG_LEN}"))
    );
    let mut got = 0usize;
    let err = loop {
        match r.chunk().await {
            Ok(Some(b)) => got += b.len(),
            Ok(None) => panic!("body completed with {got} bytes"),
            Err(e) => break e,
        }
    };
    assert!(
        err.is_body() || err.is_decode() || err.is_request(),
        "{err:?}"
    );
    assert!(got < 1_000_000, "{got}");
    assert_eq!(hub.faults_injected().get("CutBody"), Some(&1));
}

#[tokio::test]
async fn stall_delays_body_without_blocking_others() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let stall = Duration::from_millis(800);
    hub.set_faults(faults(1.0, vec![FaultKind::Stall(stall)]));
    let t0 = Instant::now();
    let r = ranged(&c, &cdn, "bytes=0-99").await.expect("send");
    assert_eq!(r.status(), 206);
    let t_headers = t0.elapsed();
    assert!(t_headers < stall, "headers after {t_headers:?}");
    let body = tokio::spawn(async move { r.bytes().await.map(|b| b.len()) });
    // Other requests are served meanwhile.
    hub.set_faults(Faults::default());
    let r2 = ranged(&client(), &cdn, "bytes=0-99").await.expect("send");
    assert_eq!(r2.bytes().await.expect("body").len(), 100);
    assert!(!body.is_finished(), "stalled body finished early");
    assert_eq!(body.await.expect("join").expect("body"), 100);
    assert!(t0.elapsed() >= stall, "{:?}", t0.elapsed());
    assert_eq!(hub.faults_injected().get("Stall"), Some(&1));
}

#[tokio::test]
async fn wrong_content_range_and_full_body() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let data = big_data();
    hub.set_faults(faults(1.0, vec![FaultKind::WrongContentRange]));
    let r = ranged(&c, &cdn, "bytes=0-65535").await.expect("send");
    assert_eq!(r.status(), 206);
    assert_eq!(
        hdr(&r, "content-range"),
        Some(format!("bytes 65536-131071/{BIG_LEN}"))
    );
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        data.read_at(65536, 65536)
    );
    // The last block shifts one block back.
    let r = ranged(&c, &cdn, &format!("bytes={}-", BIG_LEN - 1000))
        .await
        .expect("send");
    assert_eq!(
        hdr(&r, "content-range"),
        Some(format!(
            "bytes {}-{}/{BIG_LEN}",
            BIG_LEN - 2000,
            BIG_LEN - 1001
        ))
    );

    hub.set_faults(faults(1.0, vec![FaultKind::FullBody]));
    let r = ranged(&c, &cdn, "bytes=100-199").await.expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("content-range").is_none());
    let body = r.bytes().await.expect("body");
    assert_eq!(body.len() as u64, BIG_LEN);
    assert_eq!(body.to_vec(), data.to_vec());
    let counts = hub.faults_injected();
    assert_eq!(counts.get("WrongContentRange"), Some(&2));
    assert_eq!(counts.get("FullBody"), Some(&1));
}

#[tokio::test]
async fn expired_redirect_on_cdn_only() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let (cache, _) = cache_url(&hub, &c).await;
    hub.set_faults(faults(1.0, vec![FaultKind::ExpiredRedirect]));
    let r = ranged(&c, &cdn, "bytes=0-99").await.expect("send");
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.expect("text"), "Request has expired");
    // Not applicable on the Hub: no fault at all.
    let r = ranged(&c, &cache, "bytes=0-9").await.expect("send");
    assert_eq!(r.status(), 206);
    assert_eq!(hub.faults_injected().get("ExpiredRedirect"), Some(&1));
}

#[tokio::test]
async fn commit_change_on_bytes_and_redirects() {
    let hub = start();
    let c = client();
    let (cache, commit) = cache_url(&hub, &c).await;
    hub.set_faults(faults(1.0, vec![FaultKind::CommitChange]));
    let r = ranged(&c, &cache, "bytes=0-9").await.expect("send");
    assert_eq!(r.status(), 206);
    let other = hdr(&r, "x-repo-commit").expect("commit");
    assert_ne!(other, commit);
    assert_eq!(other.len(), 40);
    assert!(other.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(r.bytes().await.expect("body").len(), 10);
    // A ranged GET on /resolve/ is answered by a redirect, whose X-Repo-Commit changes too.
    let r = ranged(
        &c,
        &format!("{}/acme/tiny-gpt2/resolve/main/config.json", hub.endpoint()),
        "bytes=0-9",
    )
    .await
    .expect("send");
    assert_eq!(r.status(), 307);
    assert!(hdr(&r, "location").is_some());
    assert_eq!(hdr(&r, "x-repo-commit"), Some(other));
    assert_eq!(hub.faults_injected().get("CommitChange"), Some(&2));
}

#[tokio::test]
async fn rate_zero_never_rate_one_always() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let (cache, _) = cache_url(&hub, &c).await;
    let all = FaultKind::all()
        .into_iter()
        .map(|k| match k {
            FaultKind::Stall(_) => FaultKind::Stall(Duration::from_millis(10)),
            k => k,
        })
        .collect::<Vec<_>>();
    hub.set_faults(faults(0.0, all.clone()));
    for i in 0..20 {
        let url = if i % 2 == 0 { &cdn } else { &cache };
        let r = ranged(&c, url, "bytes=0-9").await.expect("send");
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.expect("body").len(), 10);
    }
    assert!(hub.faults_injected().is_empty());

    let statuses = [FaultKind::Status500, FaultKind::Status503];
    hub.set_faults(faults(1.0, statuses.to_vec()));
    hub.clear_requests();
    for i in 0..20 {
        let url = if i % 2 == 0 { &cdn } else { &cache };
        let r = ranged(&c, url, "bytes=0-9").await.expect("send");
        assert!([500, 503].contains(&r.status().as_u16()), "{}", r.status());
    }
    let n: u64 = hub.faults_injected().values().sum();
    assert_eq!(n, 20);
    assert!(hub.requests().iter().all(|r| r.fault.is_some()));
    // Not byte requests: no Range, redirects, API.
    let r = c.get(&cdn).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(cdn_url(&hub, &c).await.len(), cdn.len());
    let r = c
        .get(format!("{}/api/models/acme/tiny-gpt2", hub.endpoint()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(hub.faults_injected().values().sum::<u64>(), 20);

    // Every kind at rate 1: each request gets one (all but Stall/Cut are visible at once).
    hub.set_faults(faults(1.0, all));
    for _ in 0..20 {
        if let Ok(r) = ranged(&c, &cdn, "bytes=0-9").await {
            let _ = r.bytes().await;
        }
    }
    assert_eq!(hub.faults_injected().values().sum::<u64>(), 40);
    assert!(!hub.faults_injected().contains_key("CommitChange"));
}

#[tokio::test]
async fn draws_are_deterministic_and_api_opt_in() {
    let run = |seed: u64| async move {
        let hub = start();
        let c = client();
        let cdn = cdn_url(&hub, &c).await;
        hub.set_faults(Faults {
            rate: 0.5,
            kinds: vec![FaultKind::Status500, FaultKind::Status503],
            seed,
            include_api: false,
        });
        let mut out = Vec::new();
        for _ in 0..30 {
            let r = ranged(&c, &cdn, "bytes=0-9").await.expect("send");
            out.push(r.status().as_u16());
        }
        out
    };
    let a = run(1).await;
    assert_eq!(a, run(1).await);
    assert_ne!(a, run(2).await);
    let faulted = a.iter().filter(|s| **s != 206).count();
    assert!((5..=25).contains(&faulted), "{a:?}");

    let hub = start();
    let c = client();
    let api = format!("{}/api/models/acme/tiny-gpt2/revision/main", hub.endpoint());
    let mut f = faults(1.0, vec![FaultKind::Status503, FaultKind::CutBody]);
    hub.set_faults(f.clone());
    assert_eq!(c.get(&api).send().await.expect("send").status(), 200);
    f.include_api = true;
    hub.set_faults(f);
    for _ in 0..5 {
        assert_eq!(c.get(&api).send().await.expect("send").status(), 503);
    }
}

async fn timed_get(c: &Client, url: &str) -> Duration {
    let t0 = Instant::now();
    let r = c.get(url).send().await.expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.expect("body").len() as u64, BIG_LEN);
    t0.elapsed()
}

#[tokio::test]
async fn bandwidth_cap_is_per_response() {
    let hub = start_with(FakeHubOptions {
        shaping: Shaping {
            bytes_per_sec: Some(4_000_000),
            ..Default::default()
        },
        ..Default::default()
    });
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let one = timed_get(&c, &cdn).await;
    assert!(one >= Duration::from_millis(400), "{one:?}");
    let t0 = Instant::now();
    let (a, b) = tokio::join!(timed_get(&c, &cdn), timed_get(&c, &cdn));
    let total = t0.elapsed();
    assert!(a >= Duration::from_millis(400), "{a:?}");
    assert!(b >= Duration::from_millis(400), "{b:?}");
    assert!(total < Duration::from_secs(2), "{total:?}");
    // Live change: uncapped is fast again.
    hub.set_shaping(Shaping::default());
    let fast = timed_get(&c, &cdn).await;
    assert!(fast < one, "{fast:?} vs {one:?}");
}

#[tokio::test]
async fn latency_is_added() {
    let hub = start();
    let c = client();
    let url = format!("{}/api/models/acme/tiny-gpt2", hub.endpoint());
    let lat = Duration::from_millis(300);
    hub.set_shaping(Shaping {
        latency: lat,
        ..Default::default()
    });
    for u in [url.clone(), format!("{}/cdn/nope", hub.cdn_endpoint())] {
        let t0 = Instant::now();
        let r = c.get(&u).send().await.expect("send");
        assert!(t0.elapsed() >= lat, "{u}: {:?}", t0.elapsed());
        drop(r);
    }
    assert_eq!(hub.shaping().latency, lat);
}

#[tokio::test]
async fn pause_and_resume_on_same_ports() {
    let hub = start_with(FakeHubOptions {
        shaping: Shaping {
            bytes_per_sec: Some(2_000_000),
            ..Default::default()
        },
        ..Default::default()
    });
    let (hub_ep, cdn_ep) = (hub.endpoint(), hub.cdn_endpoint());
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let api = format!("{hub_ep}/api/models/acme/tiny-gpt2");
    assert_eq!(c.get(&api).send().await.expect("send").status(), 200);
    // A slow download in flight is cut by the pause.
    let mut slow = c.get(&cdn).send().await.expect("send");
    assert_eq!(slow.status(), 200);
    hub.pause();
    let mut got = 0usize;
    let cut = loop {
        match slow.chunk().await {
            Ok(Some(b)) => got += b.len(),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    assert!(cut && (got as u64) < BIG_LEN, "{got}");
    // The pause closed the connection mid-body: its record ended with part of the body.
    let deadline = Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let rec = hub
            .requests()
            .into_iter()
            .find(|r| r.status == 200 && r.listener == Listener::Cdn);
        match rec {
            Some(r) if r.end.is_some() => break r,
            _ => assert!(Instant::now() < deadline, "the cut download never ended"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(rec.body_bytes < BIG_LEN, "{}", rec.body_bytes);
    for cl in [&c, &client()] {
        assert!(cl.get(&api).send().await.is_err());
        assert!(ranged(cl, &cdn, "bytes=0-9").await.is_err());
    }
    hub.resume();
    assert_eq!((hub.endpoint(), hub.cdn_endpoint()), (hub_ep, cdn_ep));
    for cl in [&c, &client()] {
        assert_eq!(cl.get(&api).send().await.expect("send").status(), 200);
        let r = ranged(cl, &cdn, "bytes=0-9").await.expect("send");
        assert_eq!(r.status(), 206);
    }
}
