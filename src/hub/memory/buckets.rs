//! [`BucketClient`] for the in-memory Hub: buckets as maps from key to bytes, mutable by tests
//! ([`MemoryHub::put_object`], [`MemoryHub::delete_object`]), with an `updatedAt` counter that
//! moves on every mutation and a version check on every read, as the Hub's answers allow.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{not_found, MemoryHub};
use crate::hub::buckets::{BucketClient, BucketEntry, BucketFile, BucketId, BucketInfo};
use crate::hub::{split_pieces, EntryKind, HubError, NotFoundKind, PieceSink};

/// One in-memory bucket.
#[derive(Default)]
pub(super) struct MemBucket {
    objects: BTreeMap<String, (Bytes, String)>,
    updates: u64,
}

/// A version name unique to this put (an overwrite with the same bytes is a new version too).
fn version(n: u64, len: usize) -> String {
    format!("{n:016x}{len:016x}")
}

impl MemoryHub {
    /// Adds or overwrites object `key` of `bucket` (created if missing); returns its version.
    pub fn put_object(&self, bucket: &BucketId, key: &str, data: &[u8]) -> String {
        let mut g = self.buckets.lock();
        let b = g.entry(bucket.clone()).or_default();
        b.updates += 1;
        let h = version(self.calls.puts.fetch_add(1, Ordering::Relaxed), data.len());
        b.objects
            .insert(key.to_owned(), (Bytes::copy_from_slice(data), h.clone()));
        h
    }

    /// Deletes object `key` of `bucket`; true when it existed.
    pub fn delete_object(&self, bucket: &BucketId, key: &str) -> bool {
        let mut g = self.buckets.lock();
        let Some(b) = g.get_mut(bucket) else {
            return false;
        };
        let had = b.objects.remove(key).is_some();
        if had {
            b.updates += 1;
        }
        had
    }

    fn with_bucket<T>(
        &self,
        id: &BucketId,
        f: impl FnOnce(&MemBucket) -> Result<T, HubError>,
    ) -> Result<T, HubError> {
        let g = self.buckets.lock();
        let b = g
            .get(id)
            .ok_or_else(|| not_found(NotFoundKind::Repo, &id.to_string()))?;
        f(b)
    }
}

impl BucketClient for MemoryHub {
    async fn bucket_info(&self, bucket: &BucketId) -> Result<BucketInfo, HubError> {
        self.calls.bucket_info.fetch_add(1, Ordering::Relaxed);
        self.with_bucket(bucket, |b| {
            Ok(BucketInfo {
                name: bucket.name.clone(),
                private: false,
                updated_at: b.updates.to_string(),
            })
        })
    }

    async fn list_buckets(&self, ns: &str) -> Result<Vec<BucketInfo>, HubError> {
        let g = self.buckets.lock();
        Ok(g.iter()
            .filter(|(id, _)| id.namespace == ns)
            .map(|(id, b)| BucketInfo {
                name: id.name.clone(),
                private: false,
                updated_at: b.updates.to_string(),
            })
            .collect())
    }

    async fn list_bucket_dir(
        &self,
        bucket: &BucketId,
        path: &str,
    ) -> Result<Vec<BucketEntry>, HubError> {
        self.calls.list.fetch_add(1, Ordering::Relaxed);
        self.with_bucket(bucket, |b| {
            let prefix = if path.is_empty() {
                String::new()
            } else {
                format!("{path}/")
            };
            let mut out: Vec<BucketEntry> = Vec::new();
            for (k, (data, h)) in b.objects.range(prefix.clone()..) {
                let Some(rest) = k.strip_prefix(&prefix) else {
                    break;
                };
                match rest.split_once('/') {
                    None => out.push(BucketEntry {
                        path: k.clone(),
                        kind: EntryKind::File,
                        size: data.len() as u64,
                        xet_hash: h.clone(),
                        mtime: None,
                    }),
                    Some((d, _)) => {
                        let p = format!("{prefix}{d}");
                        if out.last().is_none_or(|e| e.path != p) {
                            out.push(BucketEntry {
                                path: p,
                                kind: EntryKind::Directory,
                                size: 0,
                                xet_hash: String::new(),
                                mtime: None,
                            });
                        }
                    }
                }
            }
            Ok(out)
        })
    }

    async fn stream_object(
        &self,
        file: &BucketFile,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> Result<(), HubError> {
        self.calls.range.fetch_add(1, Ordering::Relaxed);
        let bytes = self.with_bucket(&file.bucket, |b| {
            let (data, h) = b
                .objects
                .get(&file.path)
                .ok_or_else(|| not_found(NotFoundKind::Entry, &file.path))?;
            if *h != file.xet_hash || data.len() as u64 != file.size {
                return Err(HubError::Stale {
                    url: format!("memory://{}/{}", file.bucket, file.path),
                    message: format!("now {h}, opened at {}", file.xet_hash),
                });
            }
            let end = offset.checked_add(len).filter(|e| *e <= file.size);
            let end = end.ok_or_else(|| HubError::Protocol {
                url: file.path.clone(),
                message: format!("range {offset}+{len} beyond size {}", file.size),
            })?;
            Ok(data.slice(offset as usize..end as usize))
        })?;
        self.calls.bytes.fetch_add(len, Ordering::Relaxed);
        for (i, p) in split_pieces(bytes, piece).into_iter().enumerate() {
            sink.deliver(i, p);
        }
        Ok(())
    }
}
