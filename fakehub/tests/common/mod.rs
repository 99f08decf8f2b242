//! Helpers shared by the fakehub integration tests: a fake Hub with a 2 MB generated file, a
//! client that does not follow redirects, and the file's signed CDN URL.

#![allow(dead_code)] // each test crate uses its own subset

use fakehub::*;
use reqwest::{redirect::Policy, Client, StatusCode};

/// The repo holding big.bin.
pub const BIG_REPO: &str = "bench/big";
/// big.bin's size in bytes.
pub const BIG_LEN: u64 = 2_000_000;

/// A client that does not follow redirects.
pub fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// The standard fixtures plus big.bin.
pub fn fixtures() -> Fixtures {
    Fixtures::standard().with_large_file(BIG_REPO, "big.bin", BIG_LEN)
}

/// big.bin's content.
pub fn big_data() -> FileData {
    fixtures()
        .repo(RepoType::Model, BIG_REPO)
        .and_then(|r| r.file_at("main", "big.bin"))
        .expect("big.bin")
        .clone()
}

/// A fake Hub over [`fixtures`] with these options.
pub fn start_with(opts: FakeHubOptions) -> FakeHub {
    FakeHub::start(fixtures(), opts).expect("start")
}

/// A fake Hub over [`fixtures`], unshaped.
pub fn start() -> FakeHub {
    start_with(FakeHubOptions::default())
}

/// A response header as a string.
pub fn hdr(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(String::from)
}

/// The signed CDN URL of big.bin (the /resolve/ redirect is never faulted except CommitChange).
pub async fn cdn_url(hub: &FakeHub, c: &Client) -> String {
    let r = c
        .get(format!(
            "{}/{BIG_REPO}/resolve/main/big.bin",
            hub.endpoint()
        ))
        .send()
        .await
        .expect("resolve");
    assert_eq!(r.status(), StatusCode::FOUND);
    hdr(&r, "location").expect("location")
}

/// A GET with this `Range` header.
pub async fn ranged(c: &Client, url: &str, range: &str) -> reqwest::Result<reqwest::Response> {
    c.get(url).header("range", range).send().await
}
