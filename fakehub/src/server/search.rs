//! Repo search, `GET /api/{models|datasets|spaces}?author=ORG` (HUB_PROTOCOL.md §11): the
//! visible repos of one type whose id starts with `ORG/`, sorted by id, paginated like tree
//! listings (`Link: <…>; rel="next"` with an opaque `cursor`, page size from the options).

use axum::http::Uri;
use axum::response::Response;
use serde_json::{json, Value};

use super::{
    bad_request, can_see, json_response, make_cursor, param, parse_cursor, query_params, set, Auth,
    Shared,
};
use crate::fixtures::{sha1_hex, Access, Fixtures, Repo, RepoType};

fn item(repo: &Repo) -> Value {
    let (author, _) = repo.id.split_once('/').unwrap_or(("", ""));
    let created = repo
        .commits
        .first()
        .map(|c| c.date.clone())
        .unwrap_or_default();
    let modified = repo
        .commits
        .last()
        .map(|c| c.date.clone())
        .unwrap_or_default();
    let mut v = json!({
        "_id": &sha1_hex(repo.id.as_bytes())[..24],
        "id": repo.id,
        "author": author,
        "private": repo.access == Access::Private,
        "gated": if repo.access == Access::Gated { json!("manual") } else { json!(false) },
        "downloads": 0,
        "likes": 0,
        "trendingScore": 0,
        "tags": [],
        "createdAt": created,
        "lastModified": modified,
    });
    if let (RepoType::Model, Some(o)) = (repo.repo_type, v.as_object_mut()) {
        o.insert("modelId".into(), repo.id.clone().into());
    }
    v
}

/// The search answer for `t` (the caller checked the method and that the path is `/api/{t}s`).
pub(super) fn search(s: &Shared, fx: &Fixtures, t: RepoType, uri: &Uri, auth: Auth) -> Response {
    let params = query_params(uri.query());
    let author = param(&params, "author").unwrap_or("");
    let prefix = format!("{author}/");
    let mut repos: Vec<&Repo> = fx
        .repos
        .iter()
        .filter(|r| r.repo_type == t && can_see(r, auth))
        .filter(|r| author.is_empty() || r.id.starts_with(&prefix))
        .collect();
    repos.sort_by(|a, b| a.id.cmp(&b.id));
    let start = match param(&params, "cursor") {
        None => 0,
        Some(c) => match parse_cursor(c) {
            Some(n) => n,
            None => return bad_request("Invalid cursor"),
        },
    };
    let page = s.opts.page_size.max(1);
    let end = repos.len().min(start.saturating_add(page));
    let items: Vec<Value> = repos
        .get(start.min(repos.len())..end)
        .unwrap_or(&[])
        .iter()
        .map(|r| item(r))
        .collect();
    let mut r = json_response(&Value::Array(items));
    if end < repos.len() {
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
