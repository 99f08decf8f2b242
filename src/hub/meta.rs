//! The wire format of the metadata endpoints beyond the tree listing: paths-info
//! (`POST /api/{type}s/{repo}/paths-info/{rev}`, HUB_PROTOCOL.md §5) and repo search
//! (`GET /api/{type}s?author=ORG`, §11). URL and body building, and JSON parsing; no I/O.

use serde::Deserialize;

use super::urls::{encode_segment, Urls};
use super::{EntryKind, HubError, RepoId, RepoType, TreeEntry};

// Paths-info answers tree entries of the same shape as a tree page.
use super::wire::TreeJson as EntryJson;

#[derive(Deserialize)]
struct RepoJson {
    id: String,
}

/// `POST /api/{type}s/{repo}/paths-info/{rev}`.
pub fn paths_info_url(urls: &Urls, repo: &RepoId, revision: &str) -> Result<String, HubError> {
    Ok(format!(
        "{}/api/{}/{}/{}/paths-info/{}",
        urls.endpoint(),
        repo.repo_type.api_plural(),
        encode_segment(&repo.namespace)?,
        encode_segment(&repo.name)?,
        encode_segment(revision)?
    ))
}

/// The form body of a paths-info request, as huggingface_hub sends it:
/// `paths=<p1>&paths=<p2>&expand=false`.
pub fn paths_info_body(paths: &[String]) -> String {
    let mut f = url::form_urlencoded::Serializer::new(String::new());
    for p in paths {
        f.append_pair("paths", p);
    }
    f.append_pair("expand", "false");
    f.finish()
}

/// `GET /api/{type}s?author=ORG`: the first page of an org's repos of one type.
pub fn search_url(urls: &Urls, repo_type: RepoType, author: &str) -> Result<String, HubError> {
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    q.append_pair("author", author);
    Ok(format!(
        "{}/api/{}?{}",
        urls.endpoint(),
        repo_type.api_plural(),
        q.finish()
    ))
}

/// Parses a paths-info answer: every file or folder entry, at any depth, with its etag (LFS
/// sha256, else git oid). Entries of another type are skipped; a body that is not a JSON array of
/// entries is an error.
pub fn parse_paths_info(body: &[u8]) -> Result<Vec<TreeEntry>, String> {
    let items: Vec<EntryJson> =
        serde_json::from_slice(body).map_err(|e| format!("invalid paths-info JSON: {e}"))?;
    Ok(items
        .into_iter()
        .filter_map(|e| {
            let kind = match e.kind.as_str() {
                "file" => EntryKind::File,
                "directory" => EntryKind::Directory,
                _ => return None,
            };
            Some(TreeEntry {
                etag: e.lfs.map(|l| l.oid).unwrap_or(e.oid),
                path: e.path.trim_matches('/').to_owned(),
                kind,
                size: if kind == EntryKind::File { e.size } else { 0 },
            })
        })
        .collect())
}

/// Parses one page of a repo search: the names of the repos owned by `author` (an item of
/// another owner is skipped); a body that is not a JSON array of items with an `id` is an error.
pub fn parse_repo_page(body: &[u8], author: &str) -> Result<Vec<String>, String> {
    let items: Vec<RepoJson> =
        serde_json::from_slice(body).map_err(|e| format!("invalid search JSON: {e}"))?;
    Ok(items
        .into_iter()
        .filter_map(|r| {
            let (owner, name) = r.id.split_once('/')?;
            (owner == author && !name.is_empty() && !name.contains('/')).then(|| name.to_owned())
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_info_bodies_are_form_encoded_like_huggingface_hub() {
        let b = paths_info_body(&["a b/c.txt".into(), "d&e".into()]);
        assert_eq!(b, "paths=a+b%2Fc.txt&paths=d%26e&expand=false");
    }

    #[test]
    fn paths_info_entries_keep_lfs_etags_and_skip_other_types() {
        let body =
            br#"[{"type":"file","oid":"g","size":5,"path":"a/b.bin","lfs":{"oid":"s256","size":5}},
            {"type":"directory","oid":"t","size":0,"path":"a"},{"type":"unknown","path":"x"}]"#;
        let e = parse_paths_info(body).unwrap();
        assert_eq!(e.len(), 2);
        assert_eq!(
            (e[0].path.as_str(), e[0].etag.as_str(), e[0].size),
            ("a/b.bin", "s256", 5)
        );
        assert_eq!((e[1].path.as_str(), e[1].kind), ("a", EntryKind::Directory));
        assert!(parse_paths_info(b"{}").is_err());
    }

    #[test]
    fn repo_pages_keep_the_authors_repos_only() {
        let body =
            br#"[{"id":"acme/m","likes":1},{"id":"other/x"},{"id":"acme/"},{"id":"noslash"}]"#;
        assert_eq!(parse_repo_page(body, "acme").unwrap(), vec!["m".to_owned()]);
        let u = search_url(&Urls::new("http://h/"), RepoType::Dataset, "a b").unwrap();
        assert_eq!(u, "http://h/api/datasets?author=a+b");
    }
}
