//! Reference-model tests of the core (in the spirit of mountpoint-s3's reftests): random sequences
//! of lookups, stats, directory listings, opens, reads, forgets and branch moves against the
//! in-memory Hub, each answer compared with a plain model of the repos' trees.
//!
//! What the model pins down:
//! - a name (`m@main`, `m`, `m@<sha>`) is bound to one commit when first looked up, and every
//!   path reached through it comes from that commit, however the branch moves afterwards (within
//!   the revision TTL, set long here);
//! - an inode keeps the identity it was looked up with: its attributes and bytes are those of
//!   its commit and path until the kernel forgets it, whatever else happens;
//! - listings hold exactly the model's children; reads return exactly the model's bytes, short
//!   only at end of file; missing names are ENOENT.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use hubfs::fs::{FsConfig, FsError, HubFs, Kind};
use hubfs::hub::memory::{fake_sha, MemoryHub};
use hubfs::hub::{RepoId, RepoType};
use hubfs::stats::Stats;

/// A commit's files: path -> content.
type Tree = BTreeMap<String, Vec<u8>>;

/// Content of `path` in commit `c`: deterministic, distinct per commit, of `len` bytes.
fn content(c: usize, path: &str, len: usize) -> Vec<u8> {
    let seed = path
        .bytes()
        .fold(c as u32 * 7919, |h, b| h.wrapping_mul(31) ^ b as u32);
    (0..len as u32)
        .map(|i| (seed.wrapping_add(i.wrapping_mul(2654435761)) >> 13) as u8)
        .collect()
}

/// Three commits of `acme/m` with overlapping and differing paths, sizes from empty to several
/// blocks (blocks are 16 KiB in these tests).
fn trees() -> Vec<Tree> {
    let shapes: [&[(&str, usize)]; 3] = [
        &[
            ("config.json", 40),
            ("model.safetensors", 70_000),
            ("tokenizer/vocab.txt", 5_000),
            ("tokenizer/merges.txt", 0),
            ("a/b/c/deep.bin", 33_000),
        ],
        &[
            ("config.json", 41),
            ("model.safetensors", 50_001),
            ("tokenizer/vocab.txt", 5_000),
            ("extra/notes.md", 900),
        ],
        &[
            ("config.json", 39),
            ("a/b/other.bin", 16_384),
            ("a/b/c/deep.bin", 1),
        ],
    ];
    shapes
        .iter()
        .enumerate()
        .map(|(c, files)| {
            files
                .iter()
                .map(|(p, n)| ((*p).to_owned(), content(c, p, *n)))
                .collect()
        })
        .collect()
}

/// Every path a test may try under a repo dir: those of any commit, their folders, and names
/// that exist nowhere.
fn candidate_paths(trees: &[Tree]) -> Vec<String> {
    let mut set = BTreeSet::new();
    for t in trees {
        for p in t.keys() {
            set.insert(p.clone());
            let mut cur = p.as_str();
            while let Some((dir, _)) = cur.rsplit_once('/') {
                set.insert(dir.to_owned());
                cur = dir;
            }
        }
    }
    set.insert(String::new()); // the repo dir itself
    set.insert("missing.txt".into());
    set.insert("a/b/missing".into());
    set.insert("tokenizer/vocab.txt/not-a-dir".into());
    set.into_iter().collect()
}

/// What a model path is in a tree.
#[derive(Clone, Debug, PartialEq)]
enum Node {
    File(usize),
    Dir(BTreeSet<String>),
}

fn model_node(tree: &Tree, path: &str) -> Option<Node> {
    if let Some(c) = tree.get(path) {
        return Some(Node::File(c.len()));
    }
    let prefix = if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    };
    let children: BTreeSet<String> = tree
        .keys()
        .filter_map(|p| p.strip_prefix(&prefix))
        .map(|rest| rest.split('/').next().unwrap_or_default().to_owned())
        .collect();
    (!children.is_empty() || path.is_empty()).then_some(Node::Dir(children))
}

/// The repo directory names the tests use: a branch without and with `@main`, a tag, and each
/// commit by sha.
fn dir_names() -> Vec<String> {
    let mut v = vec!["m".to_owned(), "m@main".to_owned(), "m@v1".to_owned()];
    v.extend((0..3).map(|c| format!("m@{}", fake_sha(c as u64 + 1))));
    v
}

#[derive(Clone, Debug)]
enum Op {
    /// Walk from the root to `dir_names()[name]` / `candidate_paths[path]`.
    Lookup { name: usize, path: usize },
    /// Stat an inode we hold.
    Stat { pick: usize },
    /// List a directory inode we hold.
    Readdir { pick: usize },
    /// Read `len` bytes at `offset` (scaled to the file) of a file inode we hold.
    Read { pick: usize, offset: u32, len: u32 },
    /// Forget `n` lookups of an inode we hold.
    Forget { pick: usize, n: u8 },
    /// Point `main` at another commit on the Hub.
    MoveMain { commit: usize },
}

fn op(n_paths: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6usize, 0..n_paths).prop_map(|(name, path)| Op::Lookup { name, path }),
        2 => any::<usize>().prop_map(|pick| Op::Stat { pick }),
        2 => any::<usize>().prop_map(|pick| Op::Readdir { pick }),
        4 => (any::<usize>(), any::<u32>(), 1..200_000u32)
            .prop_map(|(pick, offset, len)| Op::Read { pick, offset, len }),
        1 => (any::<usize>(), 1..3u8).prop_map(|(pick, n)| Op::Forget { pick, n }),
        1 => (0..3usize).prop_map(|commit| Op::MoveMain { commit }),
    ]
}

/// An inode the test holds: what it was looked up as, and the kernel's lookup count.
#[derive(Clone, Debug)]
struct Held {
    commit: usize,
    path: String,
    node: Node,
    count: u64,
}

struct Harness {
    trees: Vec<Tree>,
    paths: Vec<String>,
    hub: Arc<MemoryHub>,
    fs: HubFs<MemoryHub>,
    /// Name -> the commit it was bound to at its first lookup.
    bound: HashMap<String, usize>,
    /// Where `main` points now on the Hub.
    main: usize,
    held: BTreeMap<u64, Held>,
}

fn repo() -> RepoId {
    RepoId::new(RepoType::Model, "acme", "m")
}

impl Harness {
    fn new() -> Self {
        let trees = trees();
        let hub = MemoryHub::new();
        for (c, t) in trees.iter().enumerate() {
            let files: Vec<(&str, &[u8])> =
                t.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
            hub.add_commit(&repo(), &fake_sha(c as u64 + 1), &files);
        }
        hub.set_ref(&repo(), "main", &fake_sha(1));
        hub.set_ref(&repo(), "v1", &fake_sha(2));
        let cfg = FsConfig {
            revision_ttl: Duration::from_secs(3600),
            block_size: 16 * 1024,
            cache_bytes: 2 << 20,
            max_request_bytes: 64 * 1024,
            connections: 4,
            ..FsConfig::default()
        };
        let fs = HubFs::new(hub.clone(), cfg, Arc::new(Stats::default()));
        Harness {
            paths: candidate_paths(&trees),
            trees,
            hub,
            fs,
            bound: HashMap::new(),
            main: 0,
            held: BTreeMap::new(),
        }
    }

    /// The commit `name` resolves to now in the model (binding it if first seen).
    fn commit_of(&mut self, name: &str) -> usize {
        if let Some(c) = self.bound.get(name) {
            return *c;
        }
        let c = match name {
            "m" | "m@main" => self.main,
            "m@v1" => 1,
            sha => (0..3)
                .find(|c| sha == format!("m@{}", fake_sha(*c as u64 + 1)))
                .expect("a known name"),
        };
        self.bound.insert(name.to_owned(), c);
        c
    }

    fn pick(&self, pick: usize, want: impl Fn(&Held) -> bool) -> Option<(u64, Held)> {
        let v: Vec<_> = self.held.iter().filter(|(_, h)| want(h)).collect();
        if v.is_empty() {
            return None;
        }
        let (ino, h) = v[pick % v.len()];
        Some((*ino, h.clone()))
    }

    fn hold(&mut self, ino: u64, commit: usize, path: &str, node: Node) {
        let e = self.held.entry(ino).or_insert(Held {
            commit,
            path: path.to_owned(),
            node: node.clone(),
            count: 0,
        });
        assert_eq!(
            (e.commit, e.path.as_str()),
            (commit, path),
            "inode {ino} was {}@{}, now handed out for {path}@{commit}",
            e.path,
            e.commit
        );
        e.count += 1;
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Lookup { name, path } => {
                let name = dir_names()[name].clone();
                let path = self.paths[path].clone();
                let commit = self.commit_of(&name);
                let expect = model_node(&self.trees[commit], &path);
                // Walk: root -> acme -> name -> each part, counting every lookup as the kernel does.
                let mut ino = self.fs.root();
                let mut walked = String::new();
                let parts: Vec<&str> = ["acme", name.as_str()]
                    .into_iter()
                    .chain(path.split('/').filter(|p| !p.is_empty()))
                    .collect();
                for (i, part) in parts.iter().enumerate() {
                    let got = self.fs.lookup(ino, part).await;
                    if i >= 2 {
                        walked = if walked.is_empty() {
                            (*part).to_owned()
                        } else {
                            format!("{walked}/{part}")
                        };
                    }
                    match got {
                        Ok(attr) => {
                            ino = attr.ino;
                            if i >= 1 {
                                let node = model_node(&self.trees[commit], &walked)
                                    .unwrap_or_else(|| {
                                        panic!("{name}/{walked} exists in hubfs but not in commit {commit}")
                                    });
                                match &node {
                                    Node::File(len) => {
                                        assert_eq!(attr.kind, Kind::File, "{name}/{walked}");
                                        assert_eq!(attr.size, *len as u64, "{name}/{walked}");
                                    }
                                    Node::Dir(_) => {
                                        assert_eq!(attr.kind, Kind::Dir, "{name}/{walked}")
                                    }
                                }
                                self.hold(ino, commit, &walked, node);
                            }
                        }
                        Err(e) => {
                            assert!(
                                i >= 2 && model_node(&self.trees[commit], &walked).is_none(),
                                "{name}/{walked}: {e:?}, but commit {commit} has it"
                            );
                            assert!(
                                matches!(e, FsError::NotFound | FsError::NotDir),
                                "{name}/{walked}: {e:?}"
                            );
                            assert!(expect.is_none());
                            return;
                        }
                    }
                }
                assert!(expect.is_some(), "{name}/{path} found, not in the model");
            }
            Op::Stat { pick } => {
                let Some((ino, h)) = self.pick(pick, |_| true) else {
                    return;
                };
                let attr = self.fs.getattr(ino).expect("getattr of a held inode");
                match h.node {
                    Node::File(len) => {
                        assert_eq!((attr.kind, attr.size), (Kind::File, len as u64), "{h:?}")
                    }
                    Node::Dir(_) => assert_eq!(attr.kind, Kind::Dir, "{h:?}"),
                }
            }
            Op::Readdir { pick } => {
                let Some((ino, h)) = self.pick(pick, |h| matches!(h.node, Node::Dir(_))) else {
                    return;
                };
                let Node::Dir(children) = &h.node else {
                    unreachable!()
                };
                let got: BTreeSet<String> = self
                    .fs
                    .readdir(ino)
                    .await
                    .expect("readdir of a held dir")
                    .into_iter()
                    .map(|e| e.name)
                    .filter(|n| n != "." && n != "..")
                    .collect();
                assert_eq!(&got, children, "listing of {}@{}", h.path, h.commit);
            }
            Op::Read { pick, offset, len } => {
                let Some((ino, h)) = self.pick(pick, |h| matches!(h.node, Node::File(_))) else {
                    return;
                };
                let data = &self.trees[h.commit][&h.path];
                let off = if data.is_empty() {
                    0
                } else {
                    offset as u64 % (data.len() as u64 + 1)
                };
                self.fs.open(ino, false).expect("open a held file");
                let got = self.fs.read(ino, off, len).await.expect("read");
                self.fs.release(ino);
                let end = (off as usize + len as usize).min(data.len());
                let want = &data[(off as usize).min(data.len())..end];
                assert!(
                    got[..] == want[..],
                    "{}@{} at {off}+{len}: {} bytes, want {}",
                    h.path,
                    h.commit,
                    got.len(),
                    want.len()
                );
            }
            Op::Forget { pick, n } => {
                let Some((ino, h)) = self.pick(pick, |_| true) else {
                    return;
                };
                let n = (n as u64).min(h.count);
                self.fs.forget(ino, n);
                let e = self.held.get_mut(&ino).expect("held");
                e.count -= n;
                if e.count == 0 {
                    self.held.remove(&ino);
                }
            }
            Op::MoveMain { commit } => {
                self.hub
                    .set_ref(&repo(), "main", &fake_sha(commit as u64 + 1));
                self.main = commit;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_operations_agree_with_the_model(ops in proptest::collection::vec(op(candidate_paths(&trees()).len()), 1..60)) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let mut h = Harness::new();
            for op in &ops {
                h.apply(op).await;
            }
        });
    }
}
