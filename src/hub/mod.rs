//! The Hub client: what hubfs needs from the Hugging Face Hub, as a small trait, plus the real
//! HTTP implementation ([`http::HttpHub`]) and an in-memory one for tests ([`memory::MemoryHub`]).
//!
//! This layer knows HTTP and JSON. It knows nothing of FUSE, inodes or errno.

pub mod auth;
pub mod buckets;
pub mod error;
pub mod h1;
pub mod http;
pub mod memory;
pub mod meta;
pub mod proxy;
pub mod retry;
pub mod tls;
pub mod token;
pub mod urls;
pub mod wire;

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use bytes::Bytes;

pub use error::{HttpContext, HubError, NotFoundKind};

/// The kind of a Hub repository. The namespace prefix and API path differ per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RepoType {
    /// `/api/models/...`, files at `/{repo}/resolve/...`.
    Model,
    /// `/api/datasets/...`, files at `/datasets/{repo}/resolve/...`.
    Dataset,
    /// `/api/spaces/...`, files at `/spaces/{repo}/resolve/...`.
    Space,
}

impl RepoType {
    /// The plural used in API paths: `models`, `datasets`, `spaces`.
    pub fn api_plural(self) -> &'static str {
        match self {
            RepoType::Model => "models",
            RepoType::Dataset => "datasets",
            RepoType::Space => "spaces",
        }
    }

    /// The prefix of file URLs (`resolve`): empty for models.
    pub fn url_prefix(self) -> &'static str {
        match self {
            RepoType::Model => "",
            RepoType::Dataset => "datasets/",
            RepoType::Space => "spaces/",
        }
    }
}

/// A repository on the Hub: its kind and its `namespace/name` id. Both parts are validated names
/// (see `fs::namespace`), so they never contain `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoId {
    /// Model, dataset or space.
    pub repo_type: RepoType,
    /// The user or organisation.
    pub namespace: String,
    /// The repository name.
    pub name: String,
}

impl RepoId {
    /// A repo id from its parts.
    pub fn new(repo_type: RepoType, namespace: &str, name: &str) -> Self {
        RepoId {
            repo_type,
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        }
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}/{}",
            self.repo_type.url_prefix(),
            self.namespace,
            self.name
        )
    }
}

/// What a revision (branch, tag or sha) resolved to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// The 40-hex commit sha.
    pub sha: String,
    /// The commit date (`lastModified`), when the Hub gave one.
    pub date: Option<SystemTime>,
}

/// File or directory, as a tree listing reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Directory,
}

/// One entry of a tree listing at a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeEntry {
    /// Full path from the repo root, `/`-separated.
    pub path: String,
    /// File or directory.
    pub kind: EntryKind,
    /// Size in bytes (the real size for LFS files); 0 for directories.
    pub size: u64,
    /// Content identity: the LFS sha256 for LFS files, else the git oid.
    pub etag: String,
}

/// One page of a folder's tree listing: its entries in the Hub's order, and the cursor of the
/// next page (`None` on the last page).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreePage {
    /// The direct children of the folder on this page.
    pub entries: Vec<TreeEntry>,
    /// Opaque: hand it to [`HubClient::list_page`] for the next page.
    pub next: Option<String>,
}

/// One page of an org's repos of one type (the Hub's search API).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoPage {
    /// Repo names without the org (`gpt2` for `openai-community/gpt2`).
    pub names: Vec<String>,
    /// Opaque: hand it to [`HubClient::list_repos`] for the next page.
    pub next: Option<String>,
}

/// One file's bytes at one commit: everything a range read needs. `etag` identifies the content,
/// so two paths or commits with the same content share cache blocks.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileRef {
    /// The repository.
    pub repo: RepoId,
    /// The commit sha the file is read at (never a branch name).
    pub commit: String,
    /// Full path in the repo.
    pub path: String,
    /// Size in bytes, from the listing.
    pub size: u64,
    /// Content identity (LFS sha256 or git oid).
    pub etag: String,
}

/// Splits `bytes` into consecutive pieces of `piece` bytes (the last may be shorter), as
/// [`HubClient::read_range`] returns them; no bytes are copied.
pub fn split_pieces(bytes: Bytes, piece: u64) -> Vec<Bytes> {
    let piece = piece.max(1) as usize;
    (0..bytes.len())
        .step_by(piece)
        .map(|i| bytes.slice(i..(i + piece).min(bytes.len())))
        .collect()
}

/// Memory one piece is received into, handed out by a [`PieceSink`]: the client appends the
/// piece's bytes as they come off the connection, then freezes it. No byte is zero-filled first.
pub trait PieceBuffer: Send {
    /// Appends `data`. The client never puts more than the piece length it asked for.
    fn put(&mut self, data: &[u8]);
    /// The buffer's room after the bytes put so far, for a client that reads from the socket
    /// straight into it (then [`PieceBuffer::advance`]); its bytes are not initialised. Empty for
    /// a buffer that only takes [`PieceBuffer::put`].
    fn spare(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        &mut []
    }
    /// Counts the first `n` bytes of [`PieceBuffer::spare`] as put.
    ///
    /// # Safety
    /// Those `n` bytes were written (initialised) since `spare` was called, and `n` is at most
    /// the length `spare` returned.
    unsafe fn advance(&mut self, n: usize) {
        debug_assert_eq!(n, 0, "advance past an empty spare");
    }
    /// The bytes put so far, as one immutable buffer.
    fn freeze(self: Box<Self>) -> Bytes;
}

/// A [`PieceBuffer`] on the heap.
pub struct HeapBuffer(bytes::BytesMut);

impl HeapBuffer {
    /// A buffer with room for `len` bytes.
    pub fn with_capacity(len: usize) -> Self {
        HeapBuffer(bytes::BytesMut::with_capacity(len))
    }
}

impl PieceBuffer for HeapBuffer {
    fn put(&mut self, data: &[u8]) {
        self.0.extend_from_slice(data);
    }

    fn spare(&mut self) -> &mut [std::mem::MaybeUninit<u8>] {
        self.0.spare_capacity_mut()
    }

    unsafe fn advance(&mut self, n: usize) {
        // SAFETY: the caller wrote the first `n` bytes of the spare capacity.
        unsafe { self.0.set_len(self.0.len() + n) }
    }

    fn freeze(self: Box<Self>) -> Bytes {
        self.0.freeze()
    }
}

/// Where [`HubClient::stream_range`] delivers pieces, and the memory it receives them into. Any
/// `Fn(usize, Bytes)` is a sink receiving into heap buffers.
pub trait PieceSink: Send + Sync {
    /// Memory for the next piece, of `len` bytes.
    fn buffer(&self, len: usize) -> Box<dyn PieceBuffer> {
        Box::new(HeapBuffer::with_capacity(len))
    }

    /// Piece `index` (counted from the start of the request) arrived whole.
    fn deliver(&self, index: usize, piece: Bytes);

    /// The request got its connection and is being sent (it may have waited for one first).
    fn started(&self) {}
}

impl<F: Fn(usize, Bytes) + Send + Sync> PieceSink for F {
    fn deliver(&self, index: usize, piece: Bytes) {
        self(index, piece)
    }
}

/// What the filesystem needs from the Hub. Implemented over HTTP by [`http::HttpHub`] and in memory
/// by [`memory::MemoryHub`]. Every method is bounded in time by the implementation.
/// Storage Buckets are part of it ([`buckets::BucketClient`]).
pub trait HubClient: buckets::BucketClient + Send + Sync + 'static {
    /// Resolves a branch, tag or commit sha to a commit.
    fn resolve_revision(
        &self,
        repo: &RepoId,
        revision: &str,
    ) -> impl Future<Output = Result<CommitInfo, HubError>> + Send;

    /// Lists the direct children of directory `path` ("" for the root) at `commit`, every page.
    fn list_dir(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
    ) -> impl Future<Output = Result<Vec<TreeEntry>, HubError>> + Send;

    /// One page of the direct children of directory `path` at `commit`: the first page when
    /// `cursor` is `None`, else the page a previous [`TreePage::next`] named. A folder that does
    /// not exist is `NotFound`.
    fn list_page(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<TreePage, HubError>> + Send;

    /// The entries of these `paths` at `commit` (files and folders), in one request; paths that
    /// do not exist are left out, not an error.
    fn paths_info(
        &self,
        repo: &RepoId,
        commit: &str,
        paths: &[String],
    ) -> impl Future<Output = Result<Vec<TreeEntry>, HubError>> + Send;

    /// One page of the repos of `repo_type` owned by `author`: the first page when `cursor` is
    /// `None`, else the page a previous [`RepoPage::next`] named.
    fn list_repos(
        &self,
        repo_type: RepoType,
        author: &str,
        cursor: Option<&str>,
    ) -> impl Future<Output = Result<RepoPage, HubError>> + Send;

    /// Reads exactly `len` bytes of `file` from `offset` and hands them to `sink` as they arrive:
    /// consecutive pieces of `piece` bytes (the last may be shorter), numbered from 0, each once
    /// and in order, so that a caller caching fixed-size blocks keeps each piece as its own
    /// allocation and can serve the first blocks of a large request before the last arrive.
    /// `offset + len` never exceeds the size. `Ok` means every piece was delivered; after an
    /// error, the pieces delivered before it are still right bytes.
    fn stream_range(
        &self,
        file: &FileRef,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> impl Future<Output = Result<(), HubError>> + Send;

    /// [`HubClient::stream_range`], collected: exactly `len` bytes as consecutive pieces of
    /// `piece` bytes, or an error, never fewer.
    fn read_range(
        &self,
        file: &FileRef,
        offset: u64,
        len: u64,
        piece: u64,
    ) -> impl Future<Output = Result<Vec<Bytes>, HubError>> + Send {
        async move {
            let out = parking_lot::Mutex::new(Vec::new());
            let sink = |_: usize, b: Bytes| out.lock().push(b);
            self.stream_range(file, offset, len, piece, &sink).await?;
            let pieces = out.into_inner();
            let got: u64 = pieces.iter().map(|b| b.len() as u64).sum();
            if got != len {
                return Err(HubError::Protocol {
                    url: file.path.clone(),
                    message: format!("range read returned {got} of {len} bytes"),
                });
            }
            Ok(pieces)
        }
    }
}
