//! A fake Hugging Face Hub for hubfs tests and benchmarks.
//!
//! [`FakeHub`] serves [`Fixtures`] over HTTP on two loopback ports: the Hub itself (repo info,
//! tree listing, paths-info, refs, `/resolve/`, `/api/resolve-cache/`) and a CDN stand-in that
//! serves LFS objects through signed, expiring URLs, following `HUB_PROTOCOL.md`.
//!
//! Around that it can behave like a real CDN ([`Shaping`]: a rate cap, a long-tailed latency,
//! stalled and crawling responses) or a failing one ([`Faults`]), and it keeps a timed log of
//! every request ([`RequestRecord`], [`FakeHub::requests`], and for other processes the admin
//! endpoints in [`admin`]) that [`trace`] turns into a measure of requests in flight.

#![warn(missing_docs)]

pub mod admin;
mod body;
pub mod faults;
pub mod fixtures;
pub mod record;
mod rng;
pub mod server;
pub mod shaping;
pub mod trace;

pub use faults::*;
pub use fixtures::*;
pub use record::*;
pub use server::*;
pub use shaping::*;
