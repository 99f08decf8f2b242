//! Storage Buckets (HUB_PROTOCOL.md §12): mutable, unversioned object storage beside repos.
//!
//! The Hub listener serves bucket info (`GET /api/buckets/{ns}/{name}`, with an `updatedAt` that
//! moves on every mutation), a namespace's buckets (`GET /api/buckets/{ns}`), Link-paginated trees
//! with raw-prefix semantics (`GET /api/buckets/{ns}/{name}/tree[/{prefix}]`), paths-info
//! (`POST /api/buckets/{ns}/{name}/paths-info`) and `GET|HEAD /buckets/{ns}/{name}/resolve/{path}`,
//! which redirects (302, carrying `X-Xet-Hash`, `X-Linked-Size`, `ETag`, `Last-Modified`) to the
//! CDN listener's signed URL for the object's content, addressed by its xet hash (an old version's
//! URL keeps serving the old bytes, as content-addressed Xet storage does).
//!
//! Tests mutate buckets while they are served: [`FakeHub::put_bucket_object`],
//! [`FakeHub::delete_bucket_object`], [`FakeHub::create_bucket`].

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use super::{
    bad_request, decode, error, json_response, make_cursor, not_found_route, now_secs_f64, param,
    parse_cursor, query_params, repo_not_found, set, sign, text_response, truthy, Auth, FakeHub,
    Shared,
};
use crate::fixtures::{sha256_of, FileData};

/// One object of a bucket: its bytes and the metadata the tree shows.
#[derive(Clone, Debug)]
pub struct BucketObject {
    /// The content.
    pub data: FileData,
    /// The object's version: a 64-hex content hash (the fake's stand-in for a Xet hash).
    pub xet_hash: String,
    /// The uploader's modification time.
    pub mtime: SystemTime,
    /// When the Hub received it.
    pub uploaded_at: SystemTime,
}

/// A bucket: id `ns/name`, visibility, and its objects by key.
#[derive(Clone, Debug)]
pub struct Bucket {
    /// `namespace/name`.
    pub id: String,
    /// Private buckets need a token with access ([`crate::TOKEN_FULL`]).
    pub private: bool,
    /// Creation time.
    pub created_at: SystemTime,
    /// Moves on every mutation (millisecond resolution, strictly increasing).
    pub updated_at: SystemTime,
    /// Objects by key (`a/b/c.bin`).
    pub objects: BTreeMap<String, BucketObject>,
}

/// Every bucket the fake Hub serves, and the lifetime of the signed URLs it hands out.
#[derive(Debug)]
pub struct Buckets {
    /// Buckets by id.
    pub buckets: BTreeMap<String, Bucket>,
    /// Lifetime of a bucket object's signed CDN URL (default 1 hour).
    pub url_ttl: Duration,
}

impl Default for Buckets {
    fn default() -> Self {
        Buckets {
            buckets: BTreeMap::new(),
            url_ttl: Duration::from_secs(3600),
        }
    }
}

/// The fake's xet hash of some content: sha256 of a domain prefix and the bytes' sha256.
pub fn xet_hash_of(data: &FileData) -> String {
    sha256_of(format!("xet:{}", data.sha256_hex()).as_bytes())
}

/// `t` as the Hub writes times: `2026-02-06T17:37:57.123Z`.
pub fn iso8601(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// An HTTP date (`Last-Modified`): `Wed, 02 Dec 2026 15:42:24 GMT`.
fn http_date(t: SystemTime) -> String {
    let iso = iso8601(t);
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][(secs / 86_400 % 7) as usize];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m: usize = iso[5..7].parse().unwrap_or(1);
    format!(
        "{wd}, {} {} {} {} GMT",
        &iso[8..10],
        mon[m.saturating_sub(1).min(11)],
        &iso[0..4],
        &iso[11..19]
    )
}

impl Bucket {
    /// An empty bucket.
    pub fn new(id: &str, private: bool) -> Self {
        let now = SystemTime::now();
        Bucket {
            id: id.to_owned(),
            private,
            created_at: now,
            updated_at: now,
            objects: BTreeMap::new(),
        }
    }

    fn touch(&mut self) {
        let now = SystemTime::now();
        let next = self.updated_at + Duration::from_millis(1);
        self.updated_at = now.max(next);
    }

    /// Adds or overwrites `key`; `updatedAt` moves.
    pub fn put(&mut self, key: &str, data: FileData) -> BucketObject {
        self.touch();
        let obj = BucketObject {
            xet_hash: xet_hash_of(&data),
            data,
            mtime: self.updated_at,
            uploaded_at: self.updated_at,
        };
        self.objects.insert(key.to_owned(), obj.clone());
        obj
    }

    /// Deletes `key`; true when it existed (then `updatedAt` moves).
    pub fn delete(&mut self, key: &str) -> bool {
        let had = self.objects.remove(key).is_some();
        if had {
            self.touch();
        }
        had
    }

    fn info_json(&self) -> Value {
        json!({
            "id": self.id,
            "private": self.private,
            "createdAt": iso8601(self.created_at),
            "updatedAt": iso8601(self.updated_at),
            "size": self.objects.values().map(|o| o.data.len()).sum::<u64>(),
            "totalFiles": self.objects.len(),
        })
    }
}

fn file_json(key: &str, o: &BucketObject) -> Value {
    json!({
        "type": "file",
        "path": key,
        "size": o.data.len(),
        "xetHash": o.xet_hash,
        "mtime": iso8601(o.mtime),
        "uploadedAt": iso8601(o.uploaded_at),
    })
}

/// The tree under raw key prefix `prefix`: every file whose key starts with it (recursive), or
/// the files and first-level directories after it (`logs` also groups `logs_x/...` as `logs_x`).
fn tree_entries(b: &Bucket, prefix: &str, recursive: bool) -> Vec<Value> {
    let mut out = Vec::new();
    let mut dirs: BTreeMap<String, SystemTime> = BTreeMap::new();
    for (key, o) in b.objects.range(prefix.to_owned()..) {
        if !key.starts_with(prefix) {
            break;
        }
        if recursive {
            out.push((key.clone(), file_json(key, o)));
            continue;
        }
        let skip = if !prefix.is_empty() && key.as_bytes().get(prefix.len()) == Some(&b'/') {
            prefix.len() + 1
        } else {
            prefix.len()
        };
        match key[skip..].find('/') {
            None => out.push((key.clone(), file_json(key, o))),
            Some(i) => {
                let d = dirs
                    .entry(key[..skip + i].to_owned())
                    .or_insert(o.uploaded_at);
                *d = (*d).max(o.uploaded_at);
            }
        }
    }
    for (d, at) in dirs {
        let v = json!({"type": "directory", "path": d, "uploadedAt": iso8601(at)});
        out.push((d, v));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out.into_iter().map(|(_, v)| v).collect()
}

/// One page of `all` from the request's cursor, with a `Link` to the next.
fn paged(s: &Shared, uri: &Uri, all: Vec<Value>, params: &[(String, String)]) -> Response {
    let page = param(params, "limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(s.opts.page_size)
        .min(s.opts.page_size)
        .max(1);
    let start = match param(params, "cursor") {
        None => 0,
        Some(c) => match parse_cursor(c) {
            Some(n) => n,
            None => return bad_request("Invalid cursor"),
        },
    };
    let end = all.len().min(start.saturating_add(page));
    let items = all.get(start.min(all.len())..end).unwrap_or(&[]).to_vec();
    let mut r = json_response(&Value::Array(items));
    if end < all.len() {
        let mut q: Vec<String> = uri
            .query()
            .unwrap_or("")
            .split('&')
            .filter(|p| !p.is_empty() && !p.starts_with("cursor="))
            .map(str::to_owned)
            .collect();
        q.push(format!("cursor={}", make_cursor(end)));
        let link = format!(
            "<{}{}?{}>; rel=\"next\"",
            s.hub_endpoint,
            uri.path(),
            q.join("&")
        );
        set(&mut r, "link", &link);
    }
    r
}

fn visible(b: &Bucket, auth: Auth) -> bool {
    !b.private || auth == Auth::Full
}

/// The answer to a bucket request on the Hub listener, or `None` when `segs` (the raw path split
/// on `/`, without the leading empty segment) is not a bucket path.
pub(super) fn route(
    s: &Shared,
    method: &Method,
    uri: &Uri,
    segs: &[&str],
    body: &[u8],
    auth: Auth,
) -> Option<Response> {
    let api = segs.first() == Some(&"api") && segs.get(1) == Some(&"buckets");
    let resolve = segs.first() == Some(&"buckets") && segs.get(3) == Some(&"resolve");
    if !api && !resolve {
        return None;
    }
    let get_or_head = method == Method::GET || method == Method::HEAD;
    let base = if api { 2 } else { 1 };
    let ns = match segs.get(base).map(|x| decode(x)) {
        Some(Ok(n)) if !n.is_empty() => n,
        Some(Err(r)) => return Some(r),
        _ => return Some(not_found_route()),
    };
    let buckets = s.buckets.read();
    let Some(name) = segs.get(base + 1) else {
        if !get_or_head {
            return Some(not_found_route());
        }
        let all: Vec<Value> = buckets
            .buckets
            .values()
            .filter(|b| b.id.split('/').next() == Some(ns.as_str()) && visible(b, auth))
            .map(Bucket::info_json)
            .collect();
        return Some(paged(s, uri, all, &query_params(uri.query())));
    };
    let id = match decode(name) {
        Ok(n) => format!("{ns}/{n}"),
        Err(r) => return Some(r),
    };
    let Some(b) = buckets.buckets.get(&id).filter(|b| visible(b, auth)) else {
        return Some(repo_not_found(auth));
    };
    let rest = &segs[base + 2..];
    if resolve {
        if !get_or_head {
            return Some(not_found_route());
        }
        return Some(resolve_object(s, b, &rest[1..], buckets.url_ttl));
    }
    let params = query_params(uri.query());
    Some(match (rest.first().copied().unwrap_or(""), method) {
        ("", m) if m == Method::GET || m == Method::HEAD => json_response(&b.info_json()),
        ("tree", m) if m == Method::GET => {
            let prefix = match rest[1..]
                .iter()
                .map(|x| decode(x))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(p) => p.join("/"),
                Err(r) => return Some(r),
            };
            // The documented default is non-recursive (HUB_PROTOCOL.md §12).
            let recursive = truthy(param(&params, "recursive"));
            paged(s, uri, tree_entries(b, &prefix, recursive), &params)
        }
        ("paths-info", m) if m == Method::POST => paths_info(b, body),
        _ => not_found_route(),
    })
}

fn paths_info(b: &Bucket, body: &[u8]) -> Response {
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return bad_request("Invalid JSON body");
    };
    let Some(paths) = v.get("paths").and_then(Value::as_array) else {
        return bad_request("Missing paths");
    };
    if paths.len() > 1000 {
        return bad_request("Too many paths (max 1000)");
    }
    let out: Vec<Value> = paths
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|p| b.objects.get(p).map(|o| file_json(p, o)))
        .collect();
    json_response(&Value::Array(out))
}

/// `GET|HEAD /buckets/{id}/resolve/{path}`: 302 to the content's signed CDN URL. The path may
/// come per segment (`quote(path)`) or as one segment (`quote(path, safe="")`).
fn resolve_object(s: &Shared, b: &Bucket, rest: &[&str], ttl: Duration) -> Response {
    let key = match rest
        .iter()
        .map(|x| decode(x))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(p) => p.join("/"),
        Err(r) => return r,
    };
    let Some(o) = b.objects.get(&key) else {
        return error(
            StatusCode::NOT_FOUND,
            Some("EntryNotFound"),
            "Entry not found",
        );
    };
    s.cdn_objects
        .lock()
        .insert(o.xet_hash.clone(), o.data.clone());
    let now = now_secs_f64();
    let expires = (now + ttl.as_secs_f64()).ceil() as u64;
    let loc = format!(
        "{}/cdn/{}?Expires={expires}&Signature={}&Key-Pair-Id=K1",
        s.cdn_endpoint,
        o.xet_hash,
        sign(&o.xet_hash, expires)
    );
    let mut r = text_response(StatusCode::FOUND, &format!("Found. Redirecting to {loc}"));
    set(&mut r, "location", &loc);
    set(&mut r, "x-xet-hash", &o.xet_hash);
    set(&mut r, "x-linked-size", &o.data.len().to_string());
    set(&mut r, "etag", &format!("\"{}\"", o.xet_hash));
    set(&mut r, "last-modified", &http_date(o.mtime));
    set(
        &mut r,
        "x-xet-refresh-route",
        &format!("/api/buckets/{}/xet-read-token", b.id),
    );
    r
}

impl FakeHub {
    /// Creates (or empties) bucket `id` (`ns/name`).
    pub fn create_bucket(&self, id: &str, private: bool) {
        self.shared
            .buckets
            .write()
            .buckets
            .insert(id.to_owned(), Bucket::new(id, private));
    }

    /// Adds or overwrites object `key` of bucket `id` (created public if missing); later requests
    /// see the new version. Returns its xet hash.
    pub fn put_bucket_object(&self, id: &str, key: &str, data: FileData) -> String {
        let mut g = self.shared.buckets.write();
        let b = g
            .buckets
            .entry(id.to_owned())
            .or_insert_with(|| Bucket::new(id, false));
        b.put(key, data).xet_hash
    }

    /// Deletes object `key` of bucket `id`; true when it existed.
    pub fn delete_bucket_object(&self, id: &str, key: &str) -> bool {
        let mut g = self.shared.buckets.write();
        g.buckets.get_mut(id).is_some_and(|b| b.delete(key))
    }

    /// Sets the lifetime of the signed URLs bucket reads are redirected to (0: expired at once,
    /// so every read asks the Hub again).
    pub fn set_bucket_url_ttl(&self, ttl: Duration) {
        self.shared.buckets.write().url_ttl = ttl;
    }

    /// Mutates the buckets under a lock.
    pub fn with_buckets<R>(&self, f: impl FnOnce(&mut Buckets) -> R) -> R {
        f(&mut self.shared.buckets.write())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket() -> Bucket {
        let mut b = Bucket::new("acme/ckpt", false);
        for k in ["logs/a.txt", "logs/sub/b.txt", "logs_x/c.txt", "top.bin"] {
            b.put(k, FileData::from_bytes(k.as_bytes().to_vec()));
        }
        b
    }

    fn paths(v: &[Value]) -> Vec<(String, String)> {
        v.iter()
            .map(|e| {
                (
                    e["type"].as_str().unwrap_or("").to_owned(),
                    e["path"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect()
    }

    #[test]
    fn tree_prefix_is_a_raw_key_prefix() {
        let b = bucket();
        let p = |s: &str, d: &str| (s.to_owned(), d.to_owned());
        assert_eq!(
            paths(&tree_entries(&b, "logs", false)),
            vec![
                p("file", "logs/a.txt"),
                p("directory", "logs/sub"),
                p("directory", "logs_x")
            ]
        );
        assert_eq!(
            paths(&tree_entries(&b, "", false)),
            vec![
                p("directory", "logs"),
                p("directory", "logs_x"),
                p("file", "top.bin")
            ]
        );
        assert_eq!(paths(&tree_entries(&b, "logs", true)).len(), 3);
        assert!(tree_entries(&b, "nothing", false).is_empty());
    }

    #[test]
    fn every_mutation_moves_updated_at_and_overwrites_change_the_hash() {
        let mut b = bucket();
        let t0 = b.updated_at;
        let h0 = b.objects["top.bin"].xet_hash.clone();
        b.put("top.bin", FileData::from_bytes(b"new".to_vec()));
        assert!(b.updated_at > t0);
        assert_ne!(b.objects["top.bin"].xet_hash, h0);
        let t1 = b.updated_at;
        assert!(b.delete("top.bin"));
        assert!(b.updated_at > t1);
        assert!(!b.delete("top.bin"));
    }

    #[test]
    fn times_are_iso_and_http_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_796_226_144_123);
        assert_eq!(iso8601(t), "2026-12-02T15:42:24.123Z");
        assert_eq!(http_date(t), "Wed, 02 Dec 2026 15:42:24 GMT");
    }
}
