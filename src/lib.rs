//! hubfs: a read-only FUSE filesystem exposing the Hugging Face Hub as local paths.
//!
//! Layers, top to bottom: [`cli`]/[`mount`] (settings and wiring) → [`fuse`] (thin adapter) →
//! [`fs`] (namespace, inodes, snapshots) → [`cache`] (memory-only blocks) and [`hub`] (the Hub
//! client trait and its HTTP implementation).

pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod fs;
pub mod fuse;
pub mod hub;
pub mod mount;
pub mod mountpoint;
pub mod service;
pub mod singleflight;
pub mod stats;
