//! The CDN tail: slow byte-range responses that stall or crawl, chosen by a seeded draw.

use std::time::{Duration, Instant};

mod common;

use common::*;
use fakehub::*;

fn slow(fraction: f64, kind: SlowKind, seed: u64) -> Shaping {
    Shaping {
        slow_fraction: fraction,
        slow_kind: kind,
        stall: Duration::from_millis(1),
        seed,
        ..Default::default()
    }
}

/// The body length of a GET of `url` with this `Range`.
async fn fetch_len(c: &reqwest::Client, url: &str, range: &str) -> u64 {
    let r = ranged(c, url, range).await.expect("send");
    r.bytes().await.expect("body").len() as u64
}

/// Waits until every record in the log has ended, and returns them.
async fn all_ended(hub: &FakeHub) -> Vec<RequestRecord> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let recs = hub.requests();
        if recs.iter().all(|r| r.end.is_some()) {
            return recs;
        }
        assert!(Instant::now() < deadline, "{recs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_stalled_body_pauses_once_mid_body_and_sends_every_byte() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let stall = Duration::from_millis(700);
    hub.set_shaping(Shaping {
        stall,
        ..slow(1.0, SlowKind::Stall, 5)
    });
    hub.clear_requests();
    let len = 1_000_000u64;
    let mut r = ranged(&c, &cdn, &format!("bytes=0-{}", len - 1))
        .await
        .expect("send");
    assert_eq!(r.status(), 206);
    // (arrival time, bytes received before this chunk) of every chunk.
    let mut chunks: Vec<(Instant, u64)> = Vec::new();
    let mut got = 0u64;
    while let Some(b) = r.chunk().await.expect("chunk") {
        chunks.push((Instant::now(), got));
        got += b.len() as u64;
    }
    assert_eq!(got, len);
    assert_eq!(
        r.bytes().await.map(|b| b.len()).unwrap_or(0),
        0,
        "nothing left"
    );
    let (gap, before) = chunks
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[1].1))
        .max()
        .expect("several chunks");
    // The pause is between two chunks (half of it is a safe bound for a noisy machine), after
    // some but not all of the body.
    assert!(gap >= stall / 2, "largest gap {gap:?}");
    assert!(
        before >= len / 10 && before <= len * 9 / 10,
        "{before} bytes before the pause"
    );
    let rec = &all_ended(&hub).await[0];
    assert_eq!(rec.slow, Some(SlowKind::Stall));
    assert_eq!(rec.body_bytes, len);
    assert!(rec.end.expect("ended") - rec.start >= stall);
}

#[tokio::test]
async fn a_crawling_body_runs_at_the_rate_divided_by_the_factor() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    let rate = 10_000_000u64;
    let len = 500_000u64;
    let range = format!("bytes=0-{}", len - 1);
    let base = Shaping {
        bytes_per_sec: Some(rate),
        crawl_factor: 10.0,
        ..Default::default()
    };
    hub.set_shaping(Shaping {
        slow_fraction: 0.0,
        ..base.clone()
    });
    hub.clear_requests();
    assert_eq!(fetch_len(&c, &cdn, &range).await, len);
    hub.set_shaping(Shaping {
        slow_fraction: 1.0,
        slow_kind: SlowKind::Crawl,
        ..base
    });
    assert_eq!(fetch_len(&c, &cdn, &range).await, len);
    let recs = all_ended(&hub).await;
    let took = |r: &RequestRecord| r.end.expect("ended") - r.start;
    assert_eq!((recs[0].slow, recs[1].slow), (None, Some(SlowKind::Crawl)));
    assert_eq!((recs[0].body_bytes, recs[1].body_bytes), (len, len));
    // At rate / 10 the last 64 KiB chunk is due at (len - 64 KiB) / (rate / 10).
    let earliest = Duration::from_secs_f64((len - 65536) as f64 / (rate as f64 / 10.0));
    assert!(took(&recs[1]) >= earliest, "{:?}", took(&recs[1]));
    assert!(took(&recs[0]) < took(&recs[1]), "{recs:?}");
}

#[tokio::test]
async fn a_crawl_without_a_rate_cap_is_not_applied() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    hub.set_shaping(slow(1.0, SlowKind::Crawl, 1));
    hub.clear_requests();
    assert_eq!(fetch_len(&c, &cdn, "bytes=0-999").await, 1000);
    assert_eq!(all_ended(&hub).await[0].slow, None);
}

/// Which of `n` sequential 1000-byte range requests were slow, under `shaping`.
async fn slow_pattern(hub: &FakeHub, cdn: &str, shaping: Shaping, n: usize) -> Vec<bool> {
    let c = client();
    hub.set_shaping(shaping);
    hub.clear_requests();
    for _ in 0..n {
        assert_eq!(fetch_len(&c, cdn, "bytes=0-999").await, 1000);
    }
    let recs = all_ended(hub).await;
    assert_eq!(recs.len(), n);
    recs.iter().map(|r| r.slow.is_some()).collect()
}

#[tokio::test]
async fn slow_responses_follow_the_fraction_and_the_seed() {
    let hub = start();
    let cdn = cdn_url(&hub, &client()).await;
    let n = 200;
    let a = slow_pattern(&hub, &cdn, slow(0.25, SlowKind::Stall, 3), n).await;
    let hits = a.iter().filter(|s| **s).count();
    assert!((25..=80).contains(&hits), "{hits} of {n}");
    assert_eq!(
        a,
        slow_pattern(&hub, &cdn, slow(0.25, SlowKind::Stall, 3), n).await,
        "set_shaping reseeds: the same seed gives the same slow responses"
    );
    assert_ne!(
        a,
        slow_pattern(&hub, &cdn, slow(0.25, SlowKind::Stall, 4), n).await
    );
    let none = slow_pattern(&hub, &cdn, slow(0.0, SlowKind::Stall, 3), 20).await;
    assert!(none.iter().all(|s| !s));
}

#[tokio::test]
async fn only_byte_range_bodies_are_slow() {
    let hub = start();
    let c = client();
    let cdn = cdn_url(&hub, &c).await;
    hub.set_shaping(slow(1.0, SlowKind::Stall, 2));
    hub.clear_requests();
    let api = format!("{}/api/models/acme/tiny-gpt2", hub.endpoint());
    let _ = c.get(&api).send().await.expect("api").bytes().await;
    let resolve = format!("{}/{BIG_REPO}/resolve/main/big.bin", hub.endpoint());
    let r = ranged(&c, &resolve, "bytes=0-9").await.expect("resolve");
    assert_eq!(r.status(), 302);
    let _ = r.bytes().await;
    let whole = c.get(&cdn).send().await.expect("whole").bytes().await;
    assert_eq!(whole.expect("body").len() as u64, BIG_LEN);
    let head = c.head(&cdn).header("range", "bytes=0-9").send().await;
    assert_eq!(head.expect("head").status(), 206);
    assert_eq!(fetch_len(&c, &cdn, "bytes=0-9").await, 10);
    let recs = all_ended(&hub).await;
    let slow: Vec<Option<SlowKind>> = recs.iter().map(|r| r.slow).collect();
    assert_eq!(
        slow,
        [None, None, None, None, Some(SlowKind::Stall)],
        "{recs:?}"
    );
}
