//! Reads: a file's bytes through read-ahead and the block cache, under one deadline per FUSE
//! read; the stats file; which shard a loader reads next.

use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;

use super::error::read_timed_out;
use super::inode::Node;
use super::{buckets, content_key, shards, FsError, FsResult, HubFs};
use crate::cache::{FetchFn, ReadTarget};
use crate::hub::{EntryKind, FileRef, HubClient};
use crate::stats::Stats;

impl<C: HubClient> HubFs<C> {
    /// Reads up to `size` bytes at `offset` of file `ino`: exactly that many unless the file ends
    /// first.
    pub async fn read(&self, ino: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        Ok(crate::cache::blocks::join(
            self.read_parts(ino, offset, size).await?,
        ))
    }

    /// [`HubFs::read`], as slices of cached blocks in order, without copying them together.
    pub async fn read_parts(&self, ino: u64, offset: u64, size: u32) -> FsResult<Vec<Bytes>> {
        let inode = self.node(ino)?;
        let (file, content_key) = match &inode.node {
            Node::File { file, content, .. } => (file, content),
            Node::Bucket(buckets::BucketNode::File {
                file,
                content,
                bucket,
                ..
            }) => {
                let target = self.bucket_fs().target(bucket, file, content);
                let next = || self.bucket_fs().next_shard(bucket, file);
                return self.read_target_parts(&target, offset, size, next).await;
            }
            Node::StatsFile => {
                let doc = Bytes::from(self.stats_json());
                let start = (offset as usize).min(doc.len());
                let end = start.saturating_add(size as usize).min(doc.len());
                return Ok(vec![doc.slice(start..end)]);
            }
            _ => return Err(FsError::IsDir),
        };
        let target = self.read_target(file, content_key);
        self.read_target_parts(&target, offset, size, || self.next_shard(file))
            .await
    }

    /// Reads through read-ahead and the block cache; `next` names the file a loader reads after
    /// this one (the next shard), for read-ahead to move on to.
    async fn read_target_parts(
        &self,
        target: &ReadTarget,
        offset: u64,
        size: u32,
        next: impl FnOnce() -> Option<ReadTarget>,
    ) -> FsResult<Vec<Bytes>> {
        Stats::raise(&self.stats.read_request_max, size as u64);
        let advice = self.prefetcher.on_read(target, offset, size as u64, next);
        // One deadline for the whole FUSE read, whatever retries, hedges and slow bodies happen
        // under it (dropping the wait stops a fetch no one else waits for).
        let wait = self.blocks.read_parts(
            &target.content,
            target.size,
            offset,
            size as u64,
            &target.fetch,
            advice.mode,
        );
        let end = offset.saturating_add(size as u64);
        let (deadline, retry) =
            self.deadlines
                .deadline_for(&target.content, offset, end, self.cfg.read_deadline);
        let Ok(parts) = tokio::time::timeout(deadline, wait).await else {
            if !retry {
                self.deadlines.timed_out(&target.content, offset, end);
            }
            return Err(read_timed_out(
                &target.content,
                offset,
                self.cfg.read_deadline,
            ));
        };
        let parts = parts?;
        let served: usize = parts.iter().map(Bytes::len).sum();
        Stats::add(&self.stats.bytes_served, served as u64);
        Ok(parts)
    }

    /// `file` as read-ahead and the block cache fetch it.
    fn read_target(&self, file: &Arc<FileRef>, content: &Arc<str>) -> ReadTarget {
        let hub = self.hub.clone();
        let f = file.clone();
        let fetch: FetchFn = Arc::new(move |off, len, piece, sink| {
            let hub = hub.clone();
            let f = f.clone();
            async move { hub.stream_range(&f, off, len, piece, &*sink).await }.boxed()
        });
        ReadTarget {
            content: content.clone(),
            size: file.size,
            fetch,
        }
    }

    /// The shard a loader reads after `file` (`model-00002-of-00004.safetensors` after
    /// `model-00001-of-00004.safetensors`), when its folder's listing is at hand.
    fn next_shard(&self, file: &FileRef) -> Option<ReadTarget> {
        let (dir, name) = match file.path.rsplit_once('/') {
            Some((d, n)) => (d, n),
            None => ("", file.path.as_str()),
        };
        let next_name = shards::next_shard_name(name)?;
        let e = self.cached_entry(file, dir, &next_name)?;
        if e.kind != EntryKind::File {
            return None;
        }
        let next = Arc::new(FileRef {
            repo: file.repo.clone(),
            commit: file.commit.clone(),
            path: if dir.is_empty() {
                next_name
            } else {
                format!("{dir}/{next_name}")
            },
            size: e.size,
            etag: e.etag.to_string(),
        });
        let key: Arc<str> = Arc::from(content_key(&next));
        Some(self.read_target(&next, &key))
    }
}
