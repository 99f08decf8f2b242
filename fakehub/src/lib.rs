//! A fake Hugging Face Hub for hubfs tests and benchmarks.
//!
//! [`FakeHub`] serves [`Fixtures`] over HTTP on two loopback ports: the Hub itself (repo info,
//! tree listing, paths-info, refs, `/resolve/`, `/api/resolve-cache/`) and a CDN stand-in that
//! serves LFS objects through signed, expiring URLs, following `HUB_PROTOCOL.md`.

#![warn(missing_docs)]

pub mod faults;
pub mod fixtures;
pub mod server;

pub use faults::*;
pub use fixtures::*;
pub use server::*;
