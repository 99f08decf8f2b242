//! Traffic shaping like a real CDN: a per-response rate cap, a per-request latency with a long
//! tail, and a fraction of slow byte-range responses that stall or crawl.
//!
//! Shaping is live-configurable on a running [`crate::FakeHub`] ([`crate::FakeHub::set_shaping`]).
//! Latencies and slow responses are drawn from a generator seeded with [`Shaping::seed`] (reseeded
//! by every `set_shaping`), one draw per request in arrival order, so a given seed and request
//! order always give the same latencies and the same slow responses.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::rng::Rng;

/// What a slow byte-range response does.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SlowKind {
    /// Sends part of the body (a drawn point between 10% and 90% of it), pauses for
    /// [`Shaping::stall`], then sends the rest.
    #[default]
    Stall,
    /// Sends the whole body at the rate cap divided by [`Shaping::crawl_factor`] (needs a rate cap:
    /// without one a crawl is not applied).
    Crawl,
}

impl SlowKind {
    /// The lowercase name, `"stall"` or `"crawl"` (also the CLI spelling and the admin JSON value).
    pub fn name(&self) -> &'static str {
        match self {
            SlowKind::Stall => "stall",
            SlowKind::Crawl => "crawl",
        }
    }
}

/// Parses `stall` or `crawl` (case-insensitively).
impl FromStr for SlowKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "stall" => Ok(SlowKind::Stall),
            "crawl" => Ok(SlowKind::Crawl),
            _ => Err(format!("unknown slow kind {s:?} (expected stall or crawl)")),
        }
    }
}

impl fmt::Display for SlowKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Traffic shaping. `Shaping::default()` shapes nothing: no rate cap, no latency, no slow
/// responses.
#[derive(Clone, Debug)]
pub struct Shaping {
    /// Cap on each response body's rate, bytes per second (None = unlimited). Applies per response
    /// (per connection), like a CDN connection limited by window/RTT.
    pub bytes_per_sec: Option<u64>,
    /// Median latency added before every response's headers on both listeners (round-trip
    /// latency stand-in). With `latency_sigma` 0 every request gets exactly this.
    pub latency: Duration,
    /// Spread of the latency: each request's latency is `latency × exp(latency_sigma × Z)` with
    /// `Z` standard normal (log-normal, median `latency`). The p90 is `latency × exp(1.2816 σ)`
    /// and the p99 `latency × exp(2.3263 σ)`: σ = 0.5 gives 1.9x / 3.2x the median, σ = 0.7
    /// gives 2.5x / 5.1x, σ = 1 gives 3.6x / 10.2x. The largest possible draw is
    /// `latency × exp(8.6 σ)` (53-bit uniforms).
    pub latency_sigma: f64,
    /// Fraction in [0, 1] of byte-range responses (a 206 or 200 body answering a GET with a
    /// `Range` on `/resolve/`, `/api/resolve-cache/` or the CDN) made slow, as `slow_kind` says.
    pub slow_fraction: f64,
    /// What a slow response does.
    pub slow_kind: SlowKind,
    /// How long a stalled body pauses (default 2 s).
    pub stall: Duration,
    /// A crawling body gets the rate cap divided by this (default 10; at least 1).
    pub crawl_factor: f64,
    /// Seed of the latency and slow-response draws.
    pub seed: u64,
}

impl Default for Shaping {
    fn default() -> Self {
        Shaping {
            bytes_per_sec: None,
            latency: Duration::ZERO,
            latency_sigma: 0.0,
            slow_fraction: 0.0,
            slow_kind: SlowKind::Stall,
            stall: Duration::from_secs(2),
            crawl_factor: 10.0,
            seed: 0,
        }
    }
}

/// `median × exp(sigma × Z)`, with `Z` standard normal made from two uniforms (`u1` in (0, 1],
/// `u2` in [0, 1)) by Box-Muller. `sigma` ≤ 0 (or not a number) gives the median itself.
pub fn lognormal(median: Duration, sigma: f64, u1: f64, u2: f64) -> Duration {
    if median.is_zero() || sigma.is_nan() || sigma <= 0.0 {
        return median;
    }
    let z = (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos();
    Duration::try_from_secs_f64(median.as_secs_f64() * (sigma * z).exp()).unwrap_or(Duration::MAX)
}

/// A slow response drawn for one request, applied if its response turns out to be a byte-range
/// body.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct SlowPlan {
    /// What it does.
    pub(crate) kind: SlowKind,
    /// For a stall: where in the body it pauses, as a fraction of the body in [0.1, 0.9).
    pub(crate) at: f64,
}

/// What the shaping draws for one request.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Draw {
    /// Added before the response's headers.
    pub(crate) latency: Duration,
    /// Set only for byte-range requests, with probability `slow_fraction`.
    pub(crate) slow: Option<SlowPlan>,
}

/// The seeded generator of the per-request draws.
pub(crate) struct TailDraws {
    rng: Rng,
}

impl TailDraws {
    /// A generator for `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        TailDraws {
            rng: Rng::new(seed),
        }
    }

    /// The draws of the next request. Every request takes two numbers for its latency, and a
    /// byte-range request two more for its slow decision, whatever the settings, so the sequence
    /// depends only on the seed and the order of requests.
    pub(crate) fn draw(&mut self, cfg: &Shaping, byte_range: bool) -> Draw {
        let u1 = 1.0 - self.rng.unit();
        let u2 = self.rng.unit();
        let latency = lognormal(cfg.latency, cfg.latency_sigma, u1, u2);
        let slow = if byte_range {
            let hit = self.rng.unit() < cfg.slow_fraction;
            let at = 0.1 + 0.8 * self.rng.unit();
            hit.then_some(SlowPlan {
                kind: cfg.slow_kind,
                at,
            })
        } else {
            None
        };
        Draw { latency, slow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quantile(sorted: &[Duration], p: f64) -> f64 {
        sorted[((sorted.len() - 1) as f64 * p).round() as usize].as_secs_f64()
    }

    #[test]
    fn latency_draws_have_the_configured_median_and_a_lognormal_tail() {
        let median = Duration::from_millis(20);
        let sigma = 0.7;
        let cfg = Shaping {
            latency: median,
            latency_sigma: sigma,
            ..Default::default()
        };
        let mut d = TailDraws::new(11);
        let mut v: Vec<Duration> = (0..40_000).map(|_| d.draw(&cfg, false).latency).collect();
        v.sort();
        let m = median.as_secs_f64();
        let close = |got: f64, want: f64, tol: f64| (got / want - 1.0).abs() < tol;
        assert!(close(quantile(&v, 0.5), m, 0.03), "{:?}", quantile(&v, 0.5));
        let p90 = m * (1.2816 * sigma).exp();
        let p99 = m * (2.3263 * sigma).exp();
        assert!(
            close(quantile(&v, 0.9), p90, 0.05),
            "p90 {}",
            quantile(&v, 0.9)
        );
        assert!(
            close(quantile(&v, 0.99), p99, 0.10),
            "p99 {}",
            quantile(&v, 0.99)
        );
        assert!(quantile(&v, 0.1) < m && quantile(&v, 0.999) > 6.0 * m);
    }

    #[test]
    fn zero_sigma_gives_the_median_every_time() {
        let cfg = Shaping {
            latency: Duration::from_millis(7),
            ..Default::default()
        };
        let mut d = TailDraws::new(1);
        assert!((0..1000).all(|_| d.draw(&cfg, true).latency == Duration::from_millis(7)));
        assert_eq!(
            lognormal(Duration::ZERO, 1.0, 0.5, 0.5),
            Duration::ZERO,
            "no median, no latency"
        );
    }

    fn slow_pattern(seed: u64, fraction: f64) -> Vec<Option<SlowPlan>> {
        let cfg = Shaping {
            slow_fraction: fraction,
            slow_kind: SlowKind::Crawl,
            seed,
            ..Default::default()
        };
        let mut d = TailDraws::new(seed);
        (0..10_000).map(|_| d.draw(&cfg, true).slow).collect()
    }

    #[test]
    fn slow_fraction_is_respected_and_deterministic_per_seed() {
        let a = slow_pattern(3, 0.02);
        assert_eq!(a, slow_pattern(3, 0.02));
        assert_ne!(a, slow_pattern(4, 0.02));
        let hits: Vec<&SlowPlan> = a.iter().flatten().collect();
        assert!((150..=250).contains(&hits.len()), "{}", hits.len());
        assert!(hits
            .iter()
            .all(|p| p.kind == SlowKind::Crawl && (0.1..0.9).contains(&p.at)));
        assert!(slow_pattern(3, 0.0).iter().all(Option::is_none));
        assert!(slow_pattern(3, 1.0).iter().all(Option::is_some));
    }

    #[test]
    fn requests_that_serve_no_byte_range_are_never_slow() {
        let cfg = Shaping {
            slow_fraction: 1.0,
            ..Default::default()
        };
        let mut d = TailDraws::new(9);
        assert!((0..100).all(|_| d.draw(&cfg, false).slow.is_none()));
    }

    #[test]
    fn slow_kind_parses_its_names() {
        assert_eq!("stall".parse::<SlowKind>(), Ok(SlowKind::Stall));
        assert_eq!(" Crawl ".parse::<SlowKind>(), Ok(SlowKind::Crawl));
        assert!("slow".parse::<SlowKind>().is_err());
        assert_eq!(SlowKind::Crawl.to_string(), "crawl");
    }
}
