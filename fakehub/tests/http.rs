//! End-to-end tests of the fake Hub over HTTP (reqwest against a started `FakeHub`).

use std::collections::BTreeSet;
use std::time::Duration;

use fakehub::*;
use reqwest::header::HeaderMap;
use reqwest::{redirect::Policy, Client, StatusCode};
use serde_json::Value;

fn client() -> Client {
    Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

fn start() -> FakeHub {
    FakeHub::start(Fixtures::standard(), FakeHubOptions::default()).expect("start")
}

fn h<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn get(c: &Client, url: &str) -> reqwest::Response {
    c.get(url).send().await.expect("send")
}

async fn get_auth(c: &Client, url: &str, token: Option<&str>) -> reqwest::Response {
    let mut rb = c.get(url);
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    rb.send().await.expect("send")
}

async fn json(r: reqwest::Response) -> Value {
    serde_json::from_slice(&r.bytes().await.expect("body")).expect("json")
}

fn tiny_shas() -> Vec<String> {
    let fx = Fixtures::standard();
    let r = fx.repo(RepoType::Model, "acme/tiny-gpt2").expect("repo");
    r.commits.iter().map(|c| c.sha.clone()).collect()
}

#[tokio::test]
async fn revision_info_for_branch_tag_pr_and_sha() {
    let hub = start();
    let c = client();
    let shas = tiny_shas();
    let base = format!("{}/api/models/acme/tiny-gpt2", hub.endpoint());
    let cases = [
        (base.clone(), &shas[1]),
        (format!("{base}/revision/main"), &shas[1]),
        (format!("{base}/revision/v1.0"), &shas[0]),
        (format!("{base}/revision/refs%2Fpr%2F1"), &shas[2]),
        (format!("{base}/revision/refs/pr/1"), &shas[2]),
        (format!("{base}/revision/{}", shas[0]), &shas[0]),
    ];
    for (url, want) in cases {
        let r = get(&c, &url).await;
        assert_eq!(r.status(), 200, "{url}");
        assert_eq!(h(r.headers(), "x-repo-commit"), Some(want.as_str()));
        assert!(h(r.headers(), "x-request-id").is_some());
        let v = json(r).await;
        assert_eq!(v["sha"], want.as_str(), "{url}");
        assert_eq!(v["id"], "acme/tiny-gpt2");
        assert_eq!(v["author"], "acme");
        assert_eq!(v["private"], false);
        assert_eq!(v["gated"], false);
        assert_eq!(v["disabled"], false);
        let sib: Vec<&str> = v["siblings"]
            .as_array()
            .expect("siblings")
            .iter()
            .filter_map(|s| s["rfilename"].as_str())
            .collect();
        assert!(sib.contains(&"config.json"));
        assert_eq!(sib.contains(&"pr-note.txt"), want == &shas[2]);
    }
    let v = json(get(&c, &format!("{base}/revision/v1.0")).await).await;
    assert_eq!(v["lastModified"], "2024-01-01T12:00:00.000Z");
    let v = json(get(&c, &format!("{base}?blobs=true")).await).await;
    let st = v["siblings"]
        .as_array()
        .expect("siblings")
        .iter()
        .find(|s| s["rfilename"] == "model.safetensors")
        .expect("model.safetensors")
        .clone();
    assert_eq!(st["lfs"]["sha256"].as_str().map(str::len), Some(64));
    // Other repo types.
    for url in [
        format!("{}/api/datasets/acme/corpus", hub.endpoint()),
        format!("{}/api/spaces/acme/demo/revision/main", hub.endpoint()),
    ] {
        assert_eq!(get(&c, &url).await.status(), 200, "{url}");
    }
    let v = json(
        get(
            &c,
            &format!("{}/api/models/acme/gated-model", hub.endpoint()),
        )
        .await,
    )
    .await;
    assert_eq!(v["gated"], "manual");
}

#[tokio::test]
async fn unknown_revision_is_revision_not_found() {
    let hub = start();
    let c = client();
    let e = hub.endpoint();
    for url in [
        format!("{e}/api/models/acme/tiny-gpt2/revision/nope"),
        format!("{e}/api/models/acme/tiny-gpt2/tree/nope"),
        format!("{e}/acme/tiny-gpt2/resolve/nope/config.json"),
        format!("{e}/acme/tiny-gpt2/resolve/{}/config.json", "a".repeat(40)),
    ] {
        let r = get(&c, &url).await;
        assert_eq!(r.status(), 404, "{url}");
        assert_eq!(h(r.headers(), "x-error-code"), Some("RevisionNotFound"));
        assert!(h(r.headers(), "x-error-message").is_some());
        assert!(json(r).await["error"].is_string());
    }
}

#[tokio::test]
async fn tree_pagination_and_paths() {
    let opts = FakeHubOptions {
        page_size: 50,
        ..FakeHubOptions::default()
    };
    let hub = FakeHub::start(Fixtures::standard(), opts).expect("start");
    let c = client();
    let e = hub.endpoint();
    let mut url =
        format!("{e}/api/datasets/acme/corpus/tree/main/many?recursive=false&expand=false");
    let mut paths = Vec::new();
    let mut pages = 0;
    loop {
        let r = get(&c, &url).await;
        assert_eq!(r.status(), 200);
        pages += 1;
        let next = h(r.headers(), "link").map(|l| {
            assert!(l.ends_with("; rel=\"next\""), "{l}");
            let u = &l[l.find('<').expect("<") + 1..l.find('>').expect(">")];
            assert!(u.starts_with(&format!("{e}/api/datasets/acme/corpus/tree/main/many?")));
            assert!(u.contains("recursive=false") && u.contains("cursor="));
            u.to_string()
        });
        let v = json(r).await;
        let arr = v.as_array().expect("array");
        assert!(arr.len() <= 50);
        for x in arr {
            assert_eq!(x["type"], "file");
            assert_eq!(x["oid"].as_str().map(str::len), Some(40));
            paths.push(x["path"].as_str().expect("path").to_string());
        }
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    assert_eq!(pages, 24);
    assert_eq!(paths.len(), 1200);
    assert_eq!(paths.iter().collect::<BTreeSet<_>>().len(), 1200);
    assert_eq!(paths[0], "many/item-0000.txt");

    // Path encoded with %2F or raw, revision raw refs/pr/1 or encoded.
    for url in [
        format!("{e}/api/datasets/acme/corpus/tree/main/data%2Ftrain"),
        format!("{e}/api/datasets/acme/corpus/tree/main/data/train"),
    ] {
        let v = json(get(&c, &url).await).await;
        let p: Vec<&str> = v
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|x| x["path"].as_str())
            .collect();
        assert_eq!(
            p,
            vec![
                "data/train/extra",
                "data/train/part-00000.jsonl",
                "data/train/part-00001.jsonl",
                "data/train/part-00002.jsonl",
                "data/train/part-00003.jsonl"
            ]
        );
    }
    for url in [
        format!("{e}/api/models/acme/tiny-gpt2/tree/refs/pr/1"),
        format!("{e}/api/models/acme/tiny-gpt2/tree/refs%2Fpr%2F1"),
    ] {
        let v = json(get(&c, &url).await).await;
        assert!(v
            .as_array()
            .expect("array")
            .iter()
            .any(|x| x["path"] == "pr-note.txt"));
    }
    // Root listing, non-recursive: dirs first then files; LFS info on big files.
    let v = json(get(&c, &format!("{e}/api/datasets/acme/corpus/tree/main")).await).await;
    let types: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .filter_map(|x| x["type"].as_str())
        .collect();
    let first_file = types.iter().position(|t| *t == "file").expect("file");
    assert!(types[first_file..].iter().all(|t| *t == "file"));
    assert!(v
        .as_array()
        .expect("array")
        .iter()
        .any(|x| x["path"] == "many" && x["size"] == 0));
    let v = json(get(&c, &format!("{e}/api/datasets/acme/corpus/tree/main/blobs")).await).await;
    assert_eq!(v[0]["path"], "blobs/big.bin");
    assert_eq!(v[0]["size"], 3 * 1024 * 1024);
    assert_eq!(v[0]["lfs"]["size"], 3 * 1024 * 1024);
    let fx = Fixtures::standard();
    let big = fx
        .repo(RepoType::Dataset, "acme/corpus")
        .and_then(|r| r.file_at("main", "blobs/big.bin"))
        .expect("big");
    assert_eq!(v[0]["lfs"]["oid"], big.sha256_hex().as_str());
    assert_ne!(v[0]["oid"], big.git_blob_sha1().as_str());

    // Recursive with expand: page size 50 max, lastCommit present, nested dirs listed.
    let mut url = format!("{e}/api/datasets/acme/corpus/tree/main/data?recursive=true&expand=true");
    let mut all = Vec::new();
    loop {
        let r = get(&c, &url).await;
        let next = h(r.headers(), "link").map(|l| l[1..l.find('>').expect(">")].to_string());
        let v = json(r).await;
        for x in v.as_array().expect("array") {
            assert!(x["lastCommit"]["id"].is_string());
            all.push(x["path"].as_str().expect("path").to_string());
        }
        match next {
            Some(n) => url = n,
            None => break,
        }
    }
    for want in [
        "data/train",
        "data/train/extra",
        "data/train/extra/deep",
        "data/train/extra/deep/file.txt",
        "data/test/part-00000.jsonl",
    ] {
        assert!(all.iter().any(|p| p == want), "{want} in {all:?}");
    }
    // A file path or a missing path: EntryNotFound.
    for url in [
        format!("{e}/api/datasets/acme/corpus/tree/main/README.md"),
        format!("{e}/api/datasets/acme/corpus/tree/main/nope"),
    ] {
        let r = get(&c, &url).await;
        assert_eq!(r.status(), 404);
        assert_eq!(h(r.headers(), "x-error-code"), Some("EntryNotFound"));
    }
}

#[tokio::test]
async fn paths_info_and_refs() {
    let hub = start();
    let c = client();
    let e = hub.endpoint();
    let r = c
        .post(format!("{e}/api/datasets/acme/corpus/paths-info/main"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("paths=README.md&paths=missing.txt&paths=data&paths=docs%2Fna%C3%AFve+file+with+spaces.txt&expand=false")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let v = json(r).await;
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 3);
    assert_eq!(arr[0]["path"], "README.md");
    assert_eq!(arr[1]["type"], "directory");
    assert_eq!(arr[2]["path"], "docs/naïve file with spaces.txt");

    let v = json(get(&c, &format!("{e}/api/models/acme/tiny-gpt2/refs")).await).await;
    let shas = tiny_shas();
    assert_eq!(v["branches"][0]["name"], "main");
    assert_eq!(v["branches"][0]["ref"], "refs/heads/main");
    assert_eq!(v["branches"][0]["targetCommit"], shas[1].as_str());
    assert_eq!(v["tags"][0]["name"], "v1.0");
    assert_eq!(v["tags"][0]["targetCommit"], shas[0].as_str());
    assert_eq!(v["pullRequests"][0]["ref"], "refs/pr/1");
    assert_eq!(v["converts"], serde_json::json!([]));
}

#[tokio::test]
async fn lfs_redirect_then_cdn_ranges() {
    let hub = start();
    let c = client();
    let fx = Fixtures::standard();
    let data = fx
        .repo(RepoType::Model, "acme/tiny-gpt2")
        .and_then(|r| r.file_at("main", "model.safetensors"))
        .expect("file")
        .clone();
    let sha256 = data.sha256_hex();
    let url = format!(
        "{}/acme/tiny-gpt2/resolve/main/model.safetensors",
        hub.endpoint()
    );
    for head in [true, false] {
        let r = if head { c.head(&url) } else { c.get(&url) }
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), StatusCode::FOUND);
        let hd = r.headers();
        assert_eq!(
            h(hd, "x-linked-etag"),
            Some(format!("\"{sha256}\"").as_str())
        );
        assert_eq!(
            h(hd, "x-linked-size"),
            Some(data.len().to_string().as_str())
        );
        assert_eq!(h(hd, "x-repo-commit"), Some(tiny_shas()[1].as_str()));
        assert!(hd.get("etag").is_none());
        assert!(h(hd, "content-type").is_some_and(|t| t.starts_with("text/plain")));
        let loc = h(hd, "location").expect("location");
        assert!(loc.starts_with(&format!("{}/cdn/{sha256}?Expires=", hub.cdn_endpoint())));
        assert!(loc.contains("&Signature=") && loc.contains("&Key-Pair-Id=K1"));
    }
    let r = get(&c, &url).await;
    let loc = h(r.headers(), "location").expect("location").to_string();
    // Ranged GET on the CDN.
    let r = c
        .get(&loc)
        .header("range", "bytes=100-199")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 206);
    assert_eq!(
        h(r.headers(), "content-range"),
        Some(format!("bytes 100-199/{}", data.len()).as_str())
    );
    assert_eq!(h(r.headers(), "content-length"), Some("100"));
    assert!(r.headers().get("x-repo-commit").is_none());
    let etag = h(r.headers(), "etag")
        .expect("etag")
        .trim_matches('"')
        .to_string();
    assert_eq!(etag.len(), 64);
    assert_ne!(etag, sha256);
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        data.read_at(100, 100)
    );
    // Suffix and open-ended ranges, full body, 416.
    let r = c
        .get(&loc)
        .header("range", "bytes=-10")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 206);
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        data.read_at(data.len() - 10, 10)
    );
    let r = c
        .get(&loc)
        .header("range", format!("bytes={}-", data.len() - 5))
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        data.read_at(data.len() - 5, 5)
    );
    let r = get(&c, &loc).await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(r.headers(), "accept-ranges"), Some("bytes"));
    assert_eq!(r.bytes().await.expect("body").to_vec(), data.to_vec());
    let r = c
        .get(&loc)
        .header("range", format!("bytes={}-", data.len()))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 416);
    assert_eq!(
        h(r.headers(), "content-range"),
        Some(format!("bytes */{}", data.len()).as_str())
    );
    // Streaming a multi-MiB generated object (dataset prefix) with a range across chunks.
    let big_url = format!(
        "{}/datasets/acme/corpus/resolve/main/blobs/big.bin",
        hub.endpoint()
    );
    let loc = h(get(&c, &big_url).await.headers(), "location")
        .expect("loc")
        .to_string();
    let big = fx
        .repo(RepoType::Dataset, "acme/corpus")
        .and_then(|r| r.file_at("main", "blobs/big.bin"))
        .expect("big")
        .clone();
    let r = get(&c, &loc).await;
    assert_eq!(h(r.headers(), "content-length"), Some("3145728"));
    assert_eq!(r.bytes().await.expect("body").to_vec(), big.to_vec());
    let r = c
        .get(&loc)
        .header("range", "bytes=262000-800000")
        .send()
        .await
        .expect("send");
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        big.read_at(262000, 538001)
    );
    // Tampered signature.
    let bad = loc.replace("Signature=", "Signature=00");
    let r = get(&c, &bad).await;
    assert_eq!(r.status(), 403);
    // Requests were recorded on both listeners, and the CDN never saw a token.
    let recs = hub.requests();
    assert!(recs.iter().any(|r| r.listener == Listener::Cdn
        && r.status == 206
        && r.range.as_deref() == Some("bytes=100-199")));
    assert!(recs
        .iter()
        .any(|r| r.listener == Listener::Hub && r.method == "HEAD" && r.status == 302));
    hub.clear_requests();
    assert!(hub.requests().is_empty());
}

#[tokio::test]
async fn non_lfs_307_relative_then_bytes() {
    let hub = start();
    let c = client();
    let e = hub.endpoint();
    let fx = Fixtures::standard();
    let repo = fx.repo(RepoType::Model, "acme/tiny-gpt2").expect("repo");
    let data = repo.file_at("main", "config.json").expect("cfg").clone();
    let sha1 = data.git_blob_sha1();
    for rev in ["main", "refs%2Fpr%2F1", "refs/pr/1"] {
        let r = get(&c, &format!("{e}/acme/tiny-gpt2/resolve/{rev}/config.json")).await;
        assert_eq!(r.status(), 307, "{rev}");
        let loc = h(r.headers(), "location").expect("location").to_string();
        assert!(
            loc.starts_with("/api/resolve-cache/models/acme/tiny-gpt2/"),
            "{loc}"
        );
        assert!(
            loc.ends_with(&format!("/config.json?etag=%22{sha1}%22")),
            "{loc}"
        );
        let commit = h(r.headers(), "x-repo-commit").expect("commit").to_string();
        assert!(loc.contains(&commit));
        let r = get(&c, &format!("{e}{loc}")).await;
        assert_eq!(r.status(), 200);
        assert_eq!(h(r.headers(), "etag"), Some(format!("\"{sha1}\"").as_str()));
        assert_eq!(h(r.headers(), "x-repo-commit"), Some(commit.as_str()));
        assert_eq!(r.bytes().await.expect("body").to_vec(), data.to_vec());
        let r = c
            .get(format!("{e}{loc}"))
            .header("range", "bytes=2-9")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 206);
        assert_eq!(r.bytes().await.expect("body").to_vec(), data.read_at(2, 8));
        let r = c
            .get(format!("{e}{loc}"))
            .header("range", "bytes=100000-")
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 416);
        let r = c.head(format!("{e}{loc}")).send().await.expect("send");
        assert_eq!(r.status(), 200);
        assert_eq!(
            h(r.headers(), "content-length"),
            Some(data.len().to_string().as_str())
        );
        assert!(r.bytes().await.expect("body").is_empty());
    }
    // The PR's README differs from main's.
    let pr_readme = repo.file_at("refs/pr/1", "README.md").expect("readme");
    let r = Client::new()
        .get(format!(
            "{e}/acme/tiny-gpt2/resolve/refs%2Fpr%2F1/README.md"
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.bytes().await.expect("body").to_vec(), pr_readme.to_vec());
    // Non-ASCII path and nested space path, followed automatically.
    let r = Client::new()
        .get(format!(
            "{e}/datasets/acme/corpus/resolve/main/docs/na%C3%AFve%20file%20with%20spaces.txt"
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("text").contains("non-ASCII"));
    let r = Client::new()
        .get(format!("{e}/spaces/acme/demo/resolve/main/app.py"))
        .send()
        .await
        .expect("send");
    assert!(r.text().await.expect("text").contains("gradio"));
    // 0-byte file: 200 directly.
    let r = get(
        &c,
        &format!("{e}/datasets/acme/corpus/resolve/main/empty.txt"),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(h(r.headers(), "content-length"), Some("0"));
    assert!(h(r.headers(), "etag").is_some() && h(r.headers(), "x-repo-commit").is_some());
    // Missing file: EntryNotFound with X-Repo-Commit.
    let r = get(&c, &format!("{e}/acme/tiny-gpt2/resolve/main/nope.txt")).await;
    assert_eq!(r.status(), 404);
    assert_eq!(h(r.headers(), "x-error-code"), Some("EntryNotFound"));
    assert_eq!(
        h(r.headers(), "x-repo-commit"),
        Some(tiny_shas()[1].as_str())
    );
}

#[tokio::test]
async fn auth_matrix() {
    let hub = start();
    let c = client();
    let e = hub.endpoint();
    let code = |r: &reqwest::Response| h(r.headers(), "x-error-code").map(String::from);

    // Invalid token, even on a public repo: 401 without X-Error-Code.
    for url in [
        format!("{e}/api/models/acme/tiny-gpt2"),
        format!("{e}/acme/tiny-gpt2/resolve/main/config.json"),
    ] {
        let r = get_auth(&c, &url, Some("hf_bogus")).await;
        assert_eq!(r.status(), 401);
        assert_eq!(code(&r), None);
        assert_eq!(
            json(r).await["error"],
            "Invalid credentials in Authorization header"
        );
    }
    // Private repo and missing repo.
    for repo in ["acme/private-model", "acme/does-not-exist"] {
        for url in [
            format!("{e}/api/models/{repo}"),
            format!("{e}/api/models/{repo}/tree/main"),
            format!("{e}/{repo}/resolve/main/config.json"),
        ] {
            let r = get_auth(&c, &url, None).await;
            assert_eq!(
                (r.status().as_u16(), code(&r).as_deref()),
                (401, Some("RepoNotFound")),
                "{url}"
            );
            let r = get_auth(&c, &url, Some(TOKEN_UNAPPROVED)).await;
            assert_eq!(
                (r.status().as_u16(), code(&r).as_deref()),
                (404, Some("RepoNotFound")),
                "{url}"
            );
        }
    }
    let r = get_auth(
        &c,
        &format!("{e}/api/models/acme/private-model"),
        Some(TOKEN_FULL),
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(json(r).await["private"], true);
    // Private non-LFS file with access: 200 directly, with ETag; ranges work.
    let url = format!("{e}/acme/private-model/resolve/main/config.json");
    let r = get_auth(&c, &url, Some(TOKEN_FULL)).await;
    assert_eq!(r.status(), 200);
    assert!(h(r.headers(), "etag").is_some() && h(r.headers(), "x-repo-commit").is_some());
    let r = c
        .get(&url)
        .bearer_auth(TOKEN_FULL)
        .header("range", "bytes=0-0")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 206);
    assert_eq!(r.bytes().await.expect("b").to_vec(), b"{".to_vec());

    // Gated: metadata is public, files are not.
    for url in [
        format!("{e}/api/models/acme/gated-model"),
        format!("{e}/api/models/acme/gated-model/revision/main"),
        format!("{e}/api/models/acme/gated-model/tree/main"),
        format!("{e}/api/models/acme/gated-model/refs"),
    ] {
        assert_eq!(get_auth(&c, &url, None).await.status(), 200, "{url}");
        assert_eq!(
            get_auth(&c, &url, Some(TOKEN_UNAPPROVED)).await.status(),
            200,
            "{url}"
        );
    }
    let r = c
        .post(format!("{e}/api/models/acme/gated-model/paths-info/main"))
        .body("paths=config.json")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    for file in ["config.json", "model.safetensors"] {
        let url = format!("{e}/acme/gated-model/resolve/main/{file}");
        let r = get_auth(&c, &url, None).await;
        assert_eq!(
            (r.status().as_u16(), code(&r).as_deref()),
            (401, Some("GatedRepo"))
        );
        let r = get_auth(&c, &url, Some(TOKEN_UNAPPROVED)).await;
        assert_eq!(
            (r.status().as_u16(), code(&r).as_deref()),
            (403, Some("GatedRepo"))
        );
        let msg = h(r.headers(), "x-error-message").expect("msg").to_string();
        assert!(msg.contains("not in the authorized list"), "{msg}");
        let r = get_auth(&c, &url, Some(TOKEN_FULL)).await;
        let want = if file == "config.json" { 200 } else { 302 };
        assert_eq!(r.status(), want);
    }
}

#[tokio::test]
async fn renamed_repo_redirects() {
    let hub = start();
    let c = client();
    let e = hub.endpoint();
    let r = get(
        &c,
        &format!("{e}/acme/renamed-old/resolve/main/config.json"),
    )
    .await;
    assert_eq!(r.status(), 307);
    assert_eq!(
        h(r.headers(), "location"),
        Some("/acme/renamed-new/resolve/main/config.json")
    );
    let r = get(
        &c,
        &format!("{e}/api/models/acme/renamed-old/tree/main?recursive=true"),
    )
    .await;
    assert_eq!(r.status(), 307);
    assert_eq!(
        h(r.headers(), "location"),
        Some("/api/models/acme/renamed-new/tree/main?recursive=true")
    );
    let r = Client::new()
        .get(format!("{e}/acme/renamed-old/resolve/main/config.json"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert!(r.text().await.expect("text").contains("gpt2"));
}

#[tokio::test]
async fn expired_signature_is_403() {
    let opts = FakeHubOptions {
        redirect_ttl: Duration::ZERO,
        ..FakeHubOptions::default()
    };
    let hub = FakeHub::start(Fixtures::standard(), opts).expect("start");
    let c = client();
    let r = get(
        &c,
        &format!(
            "{}/acme/tiny-gpt2/resolve/main/model.safetensors",
            hub.endpoint()
        ),
    )
    .await;
    assert_eq!(r.status(), 302);
    let loc = h(r.headers(), "location").expect("loc").to_string();
    let r = get(&c, &loc).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.expect("text"), "Request has expired");
}

#[tokio::test]
async fn live_fixture_mutation() {
    let hub = start();
    let c = client();
    let shas = tiny_shas();
    let url = format!("{}/api/models/acme/tiny-gpt2/revision/main", hub.endpoint());
    hub.with_fixtures(|f| {
        let r = f.repo_mut(RepoType::Model, "acme/tiny-gpt2").expect("repo");
        r.set_ref("main", &shas[0]);
    });
    assert_eq!(json(get(&c, &url).await).await["sha"], shas[0].as_str());
    let new = hub.with_fixtures(|f| {
        let r = f.repo_mut(RepoType::Model, "acme/tiny-gpt2").expect("repo");
        let mut files = r.commits[1].files.clone();
        files.insert("new.txt".into(), FileData::from_bytes(b"new".to_vec()));
        let sha = r.commit("Add new.txt", files);
        r.set_ref("main", &sha);
        sha
    });
    let v = json(get(&c, &url).await).await;
    assert_eq!(v["sha"], new.as_str());
    assert_eq!(v["lastModified"], "2024-01-04T12:00:00.000Z");
    hub.stop();
}

#[test]
fn works_from_plain_test_and_stops() {
    let hub = start();
    let ep = hub.endpoint();
    assert!(ep.starts_with("http://127.0.0.1:"));
    assert_ne!(ep, hub.cdn_endpoint());
    let addr = ep.trim_start_matches("http://").to_string();
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    drop(hub);
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

#[tokio::test]
async fn added_tokens_read_private_repos_and_revoked_ones_get_401() {
    let hub = start();
    let c = client();
    let url = format!(
        "{}/api/models/acme/private-model/revision/main",
        hub.endpoint()
    );
    let fresh = "hf_fake_rotated_token_b";
    assert_eq!(get_auth(&c, &url, Some(fresh)).await.status(), 401);
    hub.add_token(fresh);
    assert_eq!(get_auth(&c, &url, Some(fresh)).await.status(), 200);
    hub.revoke_token(TOKEN_FULL);
    let r = get_auth(&c, &url, Some(TOKEN_FULL)).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        h(r.headers(), "x-error-message"),
        Some("Invalid credentials in Authorization header")
    );
    assert_eq!(get_auth(&c, &url, Some(fresh)).await.status(), 200);
}

#[tokio::test]
async fn resolve_direct_serves_lfs_bytes_without_a_redirect() {
    let fx = Fixtures::standard();
    let opts = FakeHubOptions {
        resolve_direct: true,
        ..FakeHubOptions::default()
    };
    let hub = FakeHub::start(fx.clone(), opts).expect("start");
    let c = client();
    let data = fx
        .file(
            RepoType::Model,
            "acme/sharded",
            "main",
            "model-00001-of-00003.safetensors",
        )
        .expect("shard");
    let commit = fx
        .commit(RepoType::Model, "acme/sharded", "main")
        .expect("commit");
    let url = format!(
        "{}/acme/sharded/resolve/{}/model-00001-of-00003.safetensors",
        hub.endpoint(),
        commit.sha
    );
    let r = c
        .get(&url)
        .header("range", "bytes=10-19")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 206);
    let sha = data.sha256_hex();
    assert_eq!(
        h(r.headers(), "x-linked-etag"),
        Some(format!("\"{sha}\"").as_str())
    );
    assert_eq!(
        h(r.headers(), "x-linked-size"),
        Some(data.len().to_string().as_str())
    );
    assert_eq!(h(r.headers(), "x-repo-commit"), Some(commit.sha.as_str()));
    assert_ne!(h(r.headers(), "etag"), Some(format!("\"{sha}\"").as_str()));
    assert_eq!(
        h(r.headers(), "content-range"),
        Some(format!("bytes 10-19/{}", data.len()).as_str())
    );
    assert_eq!(
        r.bytes().await.expect("body").to_vec(),
        data.read_at(10, 10)
    );
    assert!(hub.requests().iter().all(|q| q.listener == Listener::Hub));
}
