//! Deterministic fault injection (traffic shaping is in [`crate::shaping`]).
//!
//! Faults are live-configurable on a running [`crate::FakeHub`] ([`crate::FakeHub::set_faults`]).
//! They are drawn from a seeded xorshift generator, so a given seed and request order always
//! inject the same faults.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use crate::rng::Rng;

/// One kind of injected fault.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultKind {
    /// `500 Internal Server Error`.
    Status500,
    /// `503 Service Unavailable`.
    Status503,
    /// `429 Too Many Requests` with `Retry-After`.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_secs: u64,
    },
    /// The connection is closed without any response.
    Reset,
    /// Correct headers (206, full Content-Length), then about half the body, then the connection
    /// is aborted.
    CutBody,
    /// Headers are sent, then the body stalls this long before continuing.
    Stall(Duration),
    /// A 206 whose Content-Range start is off by one block (the requested length; one byte for a
    /// range that covers the whole file), with the body of that shifted range.
    WrongContentRange,
    /// A 200 with the whole file although a Range was asked.
    FullBody,
    /// The CDN answers 403 "Request has expired" for a valid signed URL.
    ExpiredRedirect,
    /// The response carries `X-Repo-Commit` of a different (fake, 40-hex) commit.
    CommitChange,
}

impl FaultKind {
    /// The kind's name as counted by [`crate::FakeHub::faults_injected`], e.g. `"CutBody"`.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Status500 => "Status500",
            FaultKind::Status503 => "Status503",
            FaultKind::TooManyRequests { .. } => "TooManyRequests",
            FaultKind::Reset => "Reset",
            FaultKind::CutBody => "CutBody",
            FaultKind::Stall(_) => "Stall",
            FaultKind::WrongContentRange => "WrongContentRange",
            FaultKind::FullBody => "FullBody",
            FaultKind::ExpiredRedirect => "ExpiredRedirect",
            FaultKind::CommitChange => "CommitChange",
        }
    }

    /// Every kind, with default parameters (429 with `Retry-After: 1`, 2 s stall).
    pub fn all() -> Vec<FaultKind> {
        vec![
            FaultKind::Status500,
            FaultKind::Status503,
            FaultKind::TooManyRequests {
                retry_after_secs: 1,
            },
            FaultKind::Reset,
            FaultKind::CutBody,
            FaultKind::Stall(Duration::from_secs(2)),
            FaultKind::WrongContentRange,
            FaultKind::FullBody,
            FaultKind::ExpiredRedirect,
            FaultKind::CommitChange,
        ]
    }

    /// Kinds that replace the whole response (or the connection) rather than shape its body.
    pub(crate) fn is_replacing(&self) -> bool {
        matches!(
            self,
            FaultKind::Status500
                | FaultKind::Status503
                | FaultKind::TooManyRequests { .. }
                | FaultKind::Reset
        )
    }

    fn applies_to(&self, class: ReqClass) -> bool {
        match class {
            ReqClass::HubBytes => !matches!(self, FaultKind::ExpiredRedirect),
            // The CDN sends no X-Repo-Commit, so a commit change has nothing to change there.
            ReqClass::CdnBytes => !matches!(self, FaultKind::CommitChange),
            ReqClass::Api => self.is_replacing(),
        }
    }
}

/// The CLI spelling: `500`, `503`, `429[:SECS]`, `reset`, `cut`, `stall[:MS]`, `range`, `full`,
/// `expired`, `commit` (full kind names such as `CutBody` are accepted too, case-insensitively).
impl FromStr for FaultKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (name, arg) = match s.split_once(':') {
            Some((n, a)) => (n, Some(a)),
            None => (s, None),
        };
        let num = |default: u64| -> Result<u64, String> {
            arg.map_or(Ok(default), |a| {
                a.trim()
                    .parse::<u64>()
                    .map_err(|_| format!("bad number in fault kind {s:?}"))
            })
        };
        let no_arg = |k: FaultKind| -> Result<FaultKind, String> {
            match arg {
                None => Ok(k),
                Some(_) => Err(format!("fault kind {name:?} takes no argument")),
            }
        };
        match name.to_ascii_lowercase().as_str() {
            "500" | "status500" => no_arg(FaultKind::Status500),
            "503" | "status503" => no_arg(FaultKind::Status503),
            "429" | "toomanyrequests" => Ok(FaultKind::TooManyRequests {
                retry_after_secs: num(1)?,
            }),
            "reset" => no_arg(FaultKind::Reset),
            "cut" | "cutbody" => no_arg(FaultKind::CutBody),
            "stall" => Ok(FaultKind::Stall(Duration::from_millis(num(2000)?))),
            "range" | "wrongcontentrange" => no_arg(FaultKind::WrongContentRange),
            "full" | "fullbody" => no_arg(FaultKind::FullBody),
            "expired" | "expiredredirect" => no_arg(FaultKind::ExpiredRedirect),
            "commit" | "commitchange" => no_arg(FaultKind::CommitChange),
            _ => Err(format!(
                "unknown fault kind {s:?} (expected 500, 503, 429[:SECS], reset, cut, \
                 stall[:MS], range, full, expired, commit)"
            )),
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Fault injection settings.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    /// Probability in [0,1] that a byte-serving request (any GET with a Range on /resolve/,
    /// /api/resolve-cache/ or the CDN) gets a fault.
    pub rate: f64,
    /// Fault kinds drawn from uniformly when a fault fires.
    pub kinds: Vec<FaultKind>,
    /// Seed of the deterministic draw.
    pub seed: u64,
    /// When true, API requests (revision, tree) are also subject to the 5xx/429/Reset kinds.
    pub include_api: bool,
}

/// What a request is, as far as fault injection goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ReqClass {
    /// A ranged GET on `/resolve/` or `/api/resolve-cache/`.
    HubBytes,
    /// A ranged GET on the CDN.
    CdnBytes,
    /// Any other `/api/` request on the Hub.
    Api,
}

/// Live fault configuration, the generator and the counts.
pub(crate) struct FaultState {
    cfg: Faults,
    rng: Rng,
    counts: BTreeMap<String, u64>,
}

impl FaultState {
    pub(crate) fn new() -> Self {
        FaultState {
            cfg: Faults::default(),
            rng: Rng::new(0),
            counts: BTreeMap::new(),
        }
    }

    /// Replaces the configuration and reseeds the generator (counts are kept).
    pub(crate) fn set(&mut self, f: Faults) {
        self.rng = Rng::new(f.seed);
        self.cfg = f;
    }

    /// Draws the fault (if any) for one request of `class`. Only kinds that can apply to the class
    /// are drawn from; whether it then really applies depends on the response (never on a
    /// redirect, except `CommitChange`).
    pub(crate) fn draw(&mut self, class: ReqClass) -> Option<FaultKind> {
        if self.cfg.rate.is_nan()
            || self.cfg.rate <= 0.0
            || (class == ReqClass::Api && !self.cfg.include_api)
        {
            return None;
        }
        let applicable: Vec<FaultKind> = self
            .cfg
            .kinds
            .iter()
            .filter(|k| k.applies_to(class))
            .cloned()
            .collect();
        if applicable.is_empty() {
            return None;
        }
        if self.rng.unit() >= self.cfg.rate {
            return None;
        }
        let i = (self.rng.next_u64() % applicable.len() as u64) as usize;
        applicable.into_iter().nth(i)
    }

    pub(crate) fn count(&mut self, k: &FaultKind) {
        *self.counts.entry(k.name().to_string()).or_insert(0) += 1;
    }

    pub(crate) fn counts(&self) -> BTreeMap<String, u64> {
        self.counts.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_kinds() {
        let all: Result<Vec<FaultKind>, _> =
            "500,503,429,reset,cut,stall,range,full,expired,commit"
                .split(',')
                .map(str::parse)
                .collect();
        assert_eq!(all.expect("parse"), FaultKind::all());
        assert_eq!(
            "429:7".parse::<FaultKind>(),
            Ok(FaultKind::TooManyRequests {
                retry_after_secs: 7
            })
        );
        assert_eq!(
            "stall:250".parse::<FaultKind>(),
            Ok(FaultKind::Stall(Duration::from_millis(250)))
        );
        assert!("bogus".parse::<FaultKind>().is_err());
        assert!("cut:3".parse::<FaultKind>().is_err());
    }

    #[test]
    fn draw_is_deterministic_and_respects_rate() {
        let run = |seed: u64, rate: f64| {
            let mut st = FaultState::new();
            st.set(Faults {
                rate,
                kinds: FaultKind::all(),
                seed,
                include_api: false,
            });
            (0..1000)
                .map(|_| st.draw(ReqClass::CdnBytes))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7, 0.3), run(7, 0.3));
        assert_ne!(run(7, 0.3), run(8, 0.3));
        let n = run(7, 0.3).iter().filter(|f| f.is_some()).count();
        assert!((200..400).contains(&n), "{n}");
        assert!(run(1, 0.0).iter().all(|f| f.is_none()));
        assert!(run(1, 1.0)
            .iter()
            .all(|f| f.as_ref().is_some_and(|k| *k != FaultKind::CommitChange)));
        let mut st = FaultState::new();
        st.set(Faults {
            rate: 1.0,
            kinds: FaultKind::all(),
            seed: 3,
            include_api: false,
        });
        assert_eq!(st.draw(ReqClass::Api), None);
    }
}
