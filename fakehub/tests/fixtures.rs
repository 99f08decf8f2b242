//! Tests of the fixtures themselves: determinism, hashes, safetensors validity, export.

use std::collections::BTreeMap;

use fakehub::*;
use serde_json::Value;

/// Parses a safetensors file and checks that the tensors' offsets tile the data exactly.
fn check_safetensors(data: &FileData) -> BTreeMap<String, Value> {
    let bytes = data.read_at(0, 8);
    let n = u64::from_le_bytes(bytes.try_into().expect("8 bytes"));
    assert_eq!(n % 8, 0, "header padded to a multiple of 8");
    let header = data.read_at(8, n as usize);
    let v: Value = serde_json::from_slice(&header).expect("header is JSON");
    let obj = v.as_object().expect("object");
    assert_eq!(obj["__metadata__"]["format"], "pt");
    let mut ranges = Vec::new();
    let mut tensors = BTreeMap::new();
    for (k, t) in obj {
        if k == "__metadata__" {
            continue;
        }
        assert_eq!(t["dtype"], "F32");
        let shape: u64 = t["shape"]
            .as_array()
            .expect("shape")
            .iter()
            .map(|d| d.as_u64().expect("dim"))
            .product();
        let a = t["data_offsets"][0].as_u64().expect("a");
        let b = t["data_offsets"][1].as_u64().expect("b");
        assert_eq!(b - a, shape * 4, "{k}");
        ranges.push((a, b));
        tensors.insert(k.clone(), t.clone());
    }
    ranges.sort();
    let mut pos = 0;
    for (a, b) in ranges {
        assert_eq!(a, pos);
        pos = b;
    }
    assert_eq!(8 + n + pos, data.len(), "offsets cover the data exactly");
    // Every value is a finite float.
    let sample = data.read_at(8 + n, 4096.min(pos as usize));
    for c in sample.chunks_exact(4) {
        let f = f32::from_le_bytes(c.try_into().expect("4"));
        assert!(f.is_finite());
    }
    tensors
}

#[test]
fn generated_data_is_stable() {
    let d = FileData::generated(42, 1 << 20);
    assert_eq!(d.len(), 1 << 20);
    assert_eq!(
        d.sha256_hex(),
        "77d3bc36278828c71829e6447cc747903a43caef847816fca3c1d40d4b61e4a7"
    );
    assert_eq!(
        d.sha256_hex(),
        FileData::generated(42, 1 << 20).sha256_hex()
    );
    assert_ne!(
        d.sha256_hex(),
        FileData::generated(43, 1 << 20).sha256_hex()
    );
    assert_eq!(d.read_at(1000, 10), d.to_vec()[1000..1010].to_vec());
    assert_eq!(d.read_at((1 << 20) - 3, 10).len(), 3);
    // Git blob id of known content.
    assert_eq!(
        FileData::from_bytes(Vec::new()).git_blob_sha1(),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
    assert_eq!(
        FileData::from_bytes(b"hello\n".to_vec()).git_blob_sha1(),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
    // Standard fixtures are deterministic, commit shas included.
    let a = Fixtures::standard();
    let b = Fixtures::standard();
    for (ra, rb) in a.repos.iter().zip(&b.repos) {
        assert_eq!(ra.refs, rb.refs);
        for (ca, cb) in ra.commits.iter().zip(&rb.commits) {
            assert_eq!(ca.sha.len(), 40);
            assert_eq!(ca.sha, cb.sha);
        }
    }
}

#[test]
fn standard_fixture_contents() {
    let fx = Fixtures::standard();
    let tiny = fx.repo(RepoType::Model, "acme/tiny-gpt2").expect("tiny");
    assert_eq!(tiny.commits.len(), 3);
    assert_eq!(
        tiny.resolve("v1.0").map(|c| &c.sha),
        Some(&tiny.commits[0].sha)
    );
    assert_eq!(
        tiny.resolve("main").map(|c| &c.sha),
        Some(&tiny.commits[1].sha)
    );
    assert_eq!(
        tiny.resolve("refs/pr/1").map(|c| &c.sha),
        Some(&tiny.commits[2].sha)
    );
    assert!(tiny.resolve(&tiny.commits[0].sha).is_some());
    assert!(tiny.resolve("nope").is_none());
    let cfg1: Value =
        serde_json::from_slice(&tiny.file_at("v1.0", "config.json").expect("c").to_vec())
            .expect("json");
    let cfg2: Value =
        serde_json::from_slice(&tiny.file_at("main", "config.json").expect("c").to_vec())
            .expect("json");
    assert_eq!(cfg1["model_type"], "gpt2");
    assert!(cfg1.get("hubfs_version").is_none());
    assert_eq!(cfg2["hubfs_version"], 2);
    let vocab = cfg1["vocab_size"].as_u64().expect("vocab");
    let tok: Value =
        serde_json::from_slice(&tiny.file_at("main", "tokenizer.json").expect("t").to_vec())
            .expect("json");
    for k in [
        "version",
        "truncation",
        "padding",
        "added_tokens",
        "normalizer",
        "pre_tokenizer",
        "post_processor",
        "decoder",
        "model",
    ] {
        assert!(tok.get(k).is_some(), "{k}");
    }
    assert_eq!(
        tok["model"]["vocab"].as_object().map(|m| m.len() as u64),
        Some(vocab)
    );
    let m1 = tiny.file_at("v1.0", "model.safetensors").expect("m");
    let m2 = tiny.file_at("main", "model.safetensors").expect("m");
    assert!(m1.len() >= 100_000);
    assert_ne!(m1.sha256_hex(), m2.sha256_hex());
    let t = check_safetensors(m1);
    assert_eq!(t["wte.weight"]["shape"], serde_json::json!([vocab, 32]));
    check_safetensors(m2);

    let sharded = fx.repo(RepoType::Model, "acme/sharded").expect("sharded");
    let c = sharded.resolve("main").expect("main");
    let index: Value =
        serde_json::from_slice(&c.files["model.safetensors.index.json"].to_vec()).expect("index");
    let mut total = 0;
    for s in 1..=3 {
        let name = format!("model-{s:05}-of-00003.safetensors");
        let f = &c.files[&name];
        assert!(f.len() > 1_000_000 && f.len() < 2_100_000);
        let n = u64::from_le_bytes(f.read_at(0, 8).try_into().expect("8"));
        total += f.len() - 8 - n;
        for k in check_safetensors(f).keys() {
            assert_eq!(index["weight_map"][k], name.as_str());
        }
    }
    assert_eq!(index["metadata"]["total_size"], total);

    let corpus = fx.repo(RepoType::Dataset, "acme/corpus").expect("corpus");
    let files = &corpus.resolve("main").expect("main").files;
    assert_eq!(
        files.keys().filter(|k| k.starts_with("many/")).count(),
        1200
    );
    assert!(files.contains_key("docs/naïve file with spaces.txt"));
    assert!(files["empty.txt"].is_empty());
    assert_eq!(files["blobs/big.bin"].len(), 3 * 1024 * 1024);
    for (t, id) in [
        (RepoType::Space, "acme/demo"),
        (RepoType::Model, "acme/private-model"),
        (RepoType::Model, "acme/gated-model"),
        (RepoType::Model, "acme/renamed-new"),
    ] {
        assert!(
            fx.repo(t, id).and_then(|r| r.resolve("main")).is_some(),
            "{id}"
        );
    }
    assert_eq!(
        fx.repo(RepoType::Model, "acme/private-model")
            .map(|r| r.access),
        Some(Access::Private)
    );
    assert_eq!(
        fx.repo(RepoType::Model, "acme/gated-model")
            .map(|r| r.access),
        Some(Access::Gated)
    );
}

#[test]
fn builders_and_export() {
    let src = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(src.path().join("sub/dir")).expect("mkdir");
    std::fs::write(src.path().join("a.txt"), b"A").expect("w");
    std::fs::write(src.path().join("sub/dir/b.txt"), b"B").expect("w");
    let fx = Fixtures::standard()
        .with_sharded_model("bench/sharded", 2, 300_000)
        .with_large_file("bench/large", "weights/big.bin", 5_000_000)
        .with_folder("local/folder", src.path())
        .expect("folder");
    let s = fx
        .repo(RepoType::Model, "bench/sharded")
        .and_then(|r| r.resolve("main"))
        .expect("s");
    assert!(s.files.contains_key("model-00002-of-00002.safetensors"));
    check_safetensors(&s.files["model-00001-of-00002.safetensors"]);
    let l = fx
        .repo(RepoType::Model, "bench/large")
        .and_then(|r| r.file_at("main", "weights/big.bin"))
        .expect("l");
    assert_eq!(l.len(), 5_000_000);
    let f = fx
        .repo(RepoType::Model, "local/folder")
        .and_then(|r| r.file_at("main", "sub/dir/b.txt"))
        .expect("f");
    assert_eq!(f.to_vec(), b"B".to_vec());

    let out = tempfile::tempdir().expect("tmp");
    Fixtures::standard().export(out.path()).expect("export");
    let p = out.path();
    let fx = Fixtures::standard();
    let tiny = fx.repo(RepoType::Model, "acme/tiny-gpt2").expect("tiny");
    assert_eq!(
        std::fs::read(p.join("models/acme/tiny-gpt2@refs%2Fpr%2F1/pr-note.txt")).expect("pr"),
        tiny.file_at("refs/pr/1", "pr-note.txt")
            .expect("f")
            .to_vec()
    );
    assert_eq!(
        std::fs::read(p.join("models/acme/tiny-gpt2@v1.0/model.safetensors")).expect("m"),
        tiny.file_at("v1.0", "model.safetensors")
            .expect("f")
            .to_vec()
    );
    assert!(!p.join("models/acme/tiny-gpt2@main/pr-note.txt").exists());
    assert_eq!(
        std::fs::read(p.join("datasets/acme/corpus@main/docs/naïve file with spaces.txt"))
            .expect("naive")
            .len() as u64,
        fx.repo(RepoType::Dataset, "acme/corpus")
            .and_then(|r| r.file_at("main", "docs/naïve file with spaces.txt"))
            .expect("f")
            .len()
    );
    assert_eq!(
        std::fs::metadata(p.join("datasets/acme/corpus@main/blobs/big.bin"))
            .expect("big")
            .len(),
        3 << 20
    );
    assert_eq!(
        std::fs::metadata(p.join("datasets/acme/corpus@main/empty.txt"))
            .expect("e")
            .len(),
        0
    );
    assert!(p.join("spaces/acme/demo@main/app.py").is_file());
}
