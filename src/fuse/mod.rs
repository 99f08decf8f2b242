//! The FUSE adapter: a thin layer from fuser's callbacks to the filesystem core. It knows inode
//! numbers, replies and errno; all logic lives in [`crate::fs::HubFs`]. Operations that may touch
//! the network run as tasks on the tokio runtime and reply when done, so no FUSE thread ever blocks
//! on I/O and a slow fetch never stalls unrelated operations (or mmap page faults). Those tasks
//! are registered in [`Interrupts`]: an interrupted one is answered `EINTR` at once and its work
//! dropped.

pub mod interrupts;
pub mod session;

use std::ffi::OsStr;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, KernelConfig, LockOwner, OpenAccMode, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, RequestId, TimeOrNow, WriteFlags,
};
use tracing::Instrument;

use crate::fs::{Attr, FsError, HubFs, Kind, Lifetime};
use crate::hub::HubClient;
use crate::stats::Stats;
use interrupts::{abandoned, Interrupts};

/// How long the kernel keeps attributes and names of immutable (commit) content.
pub const TTL_IMMUTABLE: Duration = Duration::from_secs(24 * 3600);
/// How long the kernel keeps names that may change (branch directories, the root, orgs).
pub const TTL_SHORT: Duration = Duration::from_secs(1);
/// The kernel's read-ahead window we ask for where the kernel says nothing of a larger limit: 256
/// pages, the largest FUSE request before Linux 6.13.
pub const MAX_READAHEAD: u32 = 1 << 20;
/// The largest read-ahead window (and so FUSE read) we ask for, whatever the kernel allows.
pub const MAX_READAHEAD_CAP: u32 = 8 << 20;

/// The read-ahead window to ask for: as many pages as one FUSE request may carry on this kernel
/// (`fs.fuse.max_pages_limit`, Linux 6.13+; 256 pages before it), up to [`MAX_READAHEAD_CAP`].
/// Larger reads mean fewer requests, replies and context switches per byte.
pub fn readahead_to_ask() -> u32 {
    readahead_for(max_pages_limit())
}

/// [`readahead_to_ask`] for a kernel whose request limit is `pages` (`None`: no such setting).
fn readahead_for(pages: Option<u32>) -> u32 {
    pages.map_or(MAX_READAHEAD, |pages| {
        pages
            .saturating_mul(PAGE)
            .clamp(MAX_READAHEAD, MAX_READAHEAD_CAP)
    })
}

const PAGE: u32 = 4096;

/// The kernel's limit on the pages one FUSE request may carry (`fs.fuse.max_pages_limit`), where
/// the kernel has that setting (Linux 6.13+, with the fuse module loaded).
pub fn max_pages_limit() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
}

/// Logs (at debug) the size of the FUSE reads this mount asked for and the kernel's limit on it.
pub fn log_request_size() {
    let limit = max_pages_limit();
    tracing::debug!(
        read_kib = readahead_for(limit) / 1024,
        max_pages_limit = ?limit,
        "FUSE read size asked for"
    );
}
/// Most background requests (read-ahead, async reads) the kernel keeps in flight.
pub const MAX_BACKGROUND: u16 = 16;

/// The fuser filesystem over a [`HubFs`].
pub struct FuseAdapter<C: HubClient> {
    fs: Arc<HubFs<C>>,
    rt: tokio::runtime::Handle,
    interrupts: Arc<Interrupts>,
    /// Told once the kernel's INIT is handled (from then on the mount answers).
    initialized: Option<std::sync::mpsc::SyncSender<()>>,
}

/// A reply that can carry an errno (every reply type of the operations run as tasks).
trait ErrorReply: Send + 'static {
    fn fail(self, errno: Errno);
}

macro_rules! error_reply {
    ($($t:ty),*) => {$(
        impl ErrorReply for $t {
            fn fail(self, errno: Errno) {
                self.error(errno)
            }
        }
    )*};
}
error_reply!(ReplyData, ReplyEntry, ReplyDirectory);

impl<C: HubClient> FuseAdapter<C> {
    /// An adapter running network operations on `rt`.
    pub fn new(fs: Arc<HubFs<C>>, rt: tokio::runtime::Handle) -> Self {
        FuseAdapter {
            fs,
            rt,
            interrupts: Interrupts::new(),
            initialized: None,
        }
    }

    /// Sends `()` on `tx` once the kernel's INIT is handled: the mount answers from then on
    /// (requests made earlier wait in the kernel for it), so the daemon never has to read its own
    /// mount to know (a daemon killed in such a read would hang in the kernel for good).
    pub fn with_init_signal(mut self, tx: std::sync::mpsc::SyncSender<()>) -> Self {
        self.initialized = Some(tx);
        self
    }

    /// Runs `work` for `req` as a task and answers with `finish(result, reply)`; if the thread
    /// that sent the request is dying or gone first (see [`crate::interrupts`]), drops `work` and
    /// answers `EINTR`.
    fn spawn_op<R, T, W>(
        &self,
        req: &Request,
        span: tracing::Span,
        reply: R,
        work: W,
        finish: impl FnOnce(T, R) + Send + 'static,
    ) where
        R: ErrorReply,
        T: Send + 'static,
        W: Future<Output = T> + Send + 'static,
    {
        // Registered before the task exists, so an interrupt read next finds it.
        let registration = self.interrupts.register(req.unique().0);
        let requester = req.pid();
        let fs = self.fs.clone();
        self.rt.spawn(
            async move {
                let state = tokio::select! {
                    out = work => return finish(out, reply),
                    state = abandoned(&registration, requester) => state,
                };
                Stats::add(&fs.stats().interrupted, 1);
                tracing::debug!(
                    requester,
                    ?state,
                    "caller dying or gone: request dropped, EINTR"
                );
                reply.fail(Errno::EINTR);
            }
            .instrument(span),
        );
    }
}

fn ttl(a: &Attr) -> Duration {
    match a.lifetime {
        Lifetime::Immutable => TTL_IMMUTABLE,
        Lifetime::Short => TTL_SHORT,
        Lifetime::Volatile => Duration::ZERO,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: match a.kind {
            Kind::Dir => FileType::Directory,
            Kind::File => FileType::RegularFile,
        },
        perm: a.perm,
        nlink: if a.kind == Kind::Dir { 2 } else { 1 },
        uid: a.uid,
        gid: a.gid,
        rdev: 0,
        blksize: 1 << 20,
        flags: 0,
    }
}

/// True when `ino` is a directory whose entries never change (inside a commit).
fn immutable_dir<C: HubClient>(fs: &HubFs<C>, ino: u64) -> bool {
    fs.getattr(ino)
        .is_ok_and(|a| a.kind == Kind::Dir && a.lifetime == Lifetime::Immutable)
}

/// Answers a lookup: the entry, a negative entry the kernel keeps (a name missing from a commit
/// stays missing), or the error.
fn reply_lookup<C: HubClient>(
    fs: &HubFs<C>,
    parent: u64,
    result: Result<Attr, FsError>,
    reply: ReplyEntry,
) {
    match result {
        Ok(a) => reply.entry(&ttl(&a), &file_attr(&a), Generation(0)),
        Err(e) if e.errno() == libc::ENOENT && immutable_dir(fs, parent) => {
            // A reply with inode 0 is a negative entry with a timeout.
            tracing::debug!(error = %e, "lookup: not found (cached by the kernel)");
            let mut a = file_attr(&Attr {
                ino: 0,
                kind: Kind::File,
                size: 0,
                mtime: std::time::UNIX_EPOCH,
                perm: 0,
                uid: 0,
                gid: 0,
                lifetime: Lifetime::Immutable,
            });
            a.ino = INodeNo(0);
            reply.entry(&TTL_IMMUTABLE, &a, Generation(0))
        }
        Err(e) => reply.error(fail_counted("lookup", &e, Some(fs.stats()))),
    }
}

/// Logs a failure (with the fix, where one is known) and gives its errno.
fn fail(op: &str, e: &FsError) -> Errno {
    fail_counted(op, e, None)
}

/// [`fail`], also counting the error in `stats`.
fn fail_counted(op: &str, e: &FsError, stats: Option<&crate::stats::Stats>) -> Errno {
    if let (Some(s), FsError::Hub(_)) = (stats, e) {
        s.count_error(e.errno());
    }
    if e.is_noteworthy() {
        match e.hint() {
            Some(h) => tracing::warn!(op, error = %e, hint = h, "operation failed"),
            None => tracing::warn!(op, error = %e, "operation failed"),
        }
    } else {
        tracing::debug!(op, error = %e, "operation failed");
    }
    Errno::from_i32(e.errno())
}

impl<C: HubClient> Filesystem for FuseAdapter<C> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let want = readahead_to_ask();
        if let Err(nearest) = config.set_max_readahead(want) {
            // The kernel offers less: take what it offers.
            let _ = config.set_max_readahead(nearest);
        }
        // fuser asks for requests (`max_pages`) as large as the larger of max_write and
        // max_readahead, and the kernel offers a max_readahead of only 128 KiB (the window is
        // raised through sysfs after mounting), so max_write sets the request size: `want`, not
        // fuser's default 16 MiB, which would let reads past our cap where the kernel's limit is
        // raised. Nothing is written through a read-only mount.
        let _ = config.set_max_write(want);
        let _ = config.set_max_background(MAX_BACKGROUND);
        let _ = config.set_congestion_threshold(MAX_BACKGROUND * 3 / 4);
        tracing::debug!("FUSE session initialised");
        if let Some(tx) = self.initialized.take() {
            let _ = tx.try_send(());
        }
        Ok(())
    }

    fn interrupt(&self, _req: &Request, unique: RequestId) -> Result<(), Errno> {
        // Never answered itself: the request's task checks whether its caller is dying and, if so,
        // answers it EINTR.
        Stats::add(&self.fs.stats().interrupts_received, 1);
        let found = self.interrupts.interrupt(unique.0);
        tracing::debug!(unique = unique.0, found, "FUSE interrupt");
        Ok(())
    }

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let Some(name) = name.to_str().map(str::to_owned) else {
            reply.error(Errno::ENOENT);
            return;
        };
        // Answered from memory on this thread when no Hub call is needed (most lookups of a
        // listed folder or a live name): no task, no watch of the caller.
        if let Some(result) = self.fs.lookup_cached(parent.0, &name) {
            return reply_lookup(&self.fs, parent.0, result, reply);
        }
        let fs = self.fs.clone();
        let span = tracing::debug_span!("lookup", parent = parent.0, name = %name);
        let work = {
            let fs = fs.clone();
            async move { fs.lookup(parent.0, &name).await }
        };
        self.spawn_op(req, span, reply, work, move |result, reply| {
            reply_lookup(&fs, parent.0, result, reply)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(ino.0) {
            Ok(a) => reply.attr(&ttl(&a), &file_attr(&a)),
            Err(e) => reply.error(fail("getattr", &e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        _size: Option<u64>,
        _atime: Option<TimeOrNow>,
        _mtime: Option<TimeOrNow>,
        _ctime: Option<std::time::SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<std::time::SystemTime>,
        _chgtime: Option<std::time::SystemTime>,
        _bkuptime: Option<std::time::SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mknod(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn mkdir(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn unlink(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn rmdir(&self, _req: &Request, _parent: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn symlink(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _link_name: &OsStr,
        _target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn rename(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _newparent: INodeNo,
        _newname: &OsStr,
        _flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn link(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _newparent: INodeNo,
        _newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply.error(Errno::EROFS);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let write = !matches!(flags.acc_mode(), OpenAccMode::O_RDONLY)
            || flags.0 & (libc::O_TRUNC | libc::O_APPEND | libc::O_CREAT) != 0;
        match self.fs.open(ino.0, write) {
            // Generated files (stats) bypass the page cache: their size is not known up front.
            Ok(())
                if self
                    .fs
                    .getattr(ino.0)
                    .is_ok_and(|a| a.lifetime == Lifetime::Volatile) =>
            {
                reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO)
            }
            // Commit content never changes: let the page cache keep it across opens.
            Ok(()) => reply.opened(FileHandle(0), FopenFlags::FOPEN_KEEP_CACHE),
            Err(e) => reply.error(fail("open", &e)),
        }
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let fs = self.fs.clone();
        tracing::trace!(ino = ino.0, offset, size, "read request");
        let span = tracing::debug_span!("read", ino = ino.0, offset, size);
        let work = {
            let fs = fs.clone();
            async move { fs.read_parts(ino.0, offset, size).await }
        };
        self.spawn_op(req, span, reply, work, move |result, reply| match result {
            // The cached blocks go to the kernel as they are, in one writev.
            Ok(parts) => {
                let iov: Vec<std::io::IoSlice<'_>> =
                    parts.iter().map(|p| std::io::IoSlice::new(p)).collect();
                reply.data_vectored(&iov)
            }
            Err(e) => reply.error(fail_counted("read", &e, Some(fs.stats()))),
        });
    }

    fn write(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        reply.error(Errno::EROFS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.fs.release(ino.0);
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.getattr(ino.0) {
            Ok(a) if a.kind == Kind::Dir => {
                let flags = if a.lifetime == Lifetime::Immutable {
                    FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_CACHE_DIR
                } else {
                    FopenFlags::empty()
                };
                reply.opened(FileHandle(0), flags)
            }
            Ok(_) => reply.error(Errno::ENOTDIR),
            Err(e) => reply.error(fail("opendir", &e)),
        }
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        // Offsets: "." is 1, ".." is 2, the core's entry i is i + 3. The core answers from the
        // entry asked for to the end of its listing page; the kernel asks again for the rest.
        let fs = self.fs.clone();
        let span = tracing::debug_span!("readdir", ino = ino.0, offset);
        let start = offset.saturating_sub(2);
        let work = async move { fs.readdir_at(ino.0, start).await };
        self.spawn_op(req, span, reply, work, move |result, mut reply| {
            let entries = match result {
                Ok(e) => e,
                Err(e) => return reply.error(fail("readdir", &e)),
            };
            for (i, name) in [".", ".."].into_iter().enumerate().skip(offset as usize) {
                if reply.add(ino, i as u64 + 1, FileType::Directory, name) {
                    return reply.ok();
                }
            }
            for (i, e) in entries.into_iter().enumerate() {
                let t = match e.kind {
                    Kind::Dir => FileType::Directory,
                    Kind::File => FileType::RegularFile,
                };
                if reply.add(INodeNo(e.ino), start + i as u64 + 3, t, &e.name) {
                    break;
                }
            }
            reply.ok();
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let bs = self.fs.config().block_size as u32;
        reply.statfs(0, 0, 0, 0, 0, bs, 255, bs);
    }

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        let Some(name) = name.to_str() else {
            reply.error(Errno::from_i32(libc::ENODATA));
            return;
        };
        match self.fs.getxattr(ino.0, name) {
            Ok(v) => reply_xattr(reply, size, &v),
            Err(e) => reply.error(fail("getxattr", &e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.fs.listxattr(ino.0) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                reply_xattr(reply, size, &buf)
            }
            Err(e) => reply.error(fail("listxattr", &e)),
        }
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::EROFS);
    }

    fn access(&self, _req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        match self.fs.getattr(ino.0) {
            Ok(_) if mask.contains(AccessFlags::W_OK) => reply.error(Errno::EROFS),
            Ok(_) => reply.ok(),
            Err(e) => reply.error(fail("access", &e)),
        }
    }

    fn create(
        &self,
        _req: &Request,
        _parent: INodeNo,
        _name: &OsStr,
        _mode: u32,
        _umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        reply.error(Errno::EROFS);
    }

    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: fuser::IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: fuser::ReplyIoctl,
    ) {
        // Python asks every file it opens whether it is a terminal (TCGETS): say no, quietly.
        reply.error(Errno::from_i32(libc::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _offset: u64,
        _length: u64,
        _mode: i32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::EROFS);
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if (size as usize) < value.len() {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readahead_asked_for_follows_the_kernels_request_limit() {
        let got = readahead_to_ask();
        assert!((MAX_READAHEAD..=MAX_READAHEAD_CAP).contains(&got));
        if let Some(pages) = std::fs::read_to_string("/proc/sys/fs/fuse/max_pages_limit")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            assert_eq!(got, (pages * 4096).clamp(MAX_READAHEAD, MAX_READAHEAD_CAP));
        }
        assert!(session::read_ahead_kb() >= 4 * got / 1024);
    }
}
