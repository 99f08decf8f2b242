//! [`HttpHub`]'s metadata requests beyond revisions: one tree page at a time, paths-info (a form
//! POST) and repo search. The wire format is in [`crate::hub::meta`].

use url::Url;

use super::transport::{read_body, Ask};
use super::HttpHub;
use crate::hub::error::redact_url;
use crate::hub::meta::{
    parse_paths_info, parse_repo_page, paths_info_body, paths_info_url, search_url,
};
use crate::hub::wire::{next_link, parse_tree_page};
use crate::hub::{HubError, RepoId, RepoPage, RepoType, TreeEntry, TreePage};

/// Largest metadata body accepted (a page of 1000 entries is about 200 KB).
const MAX_META_BODY: u64 = 64 << 20;

impl HttpHub {
    /// One tree page: the first (`cursor` `None`) or the one a `next` cursor names. The cursor is
    /// the next-page URL, already moved onto the endpoint by [`HttpHub::next_page_url`].
    pub(super) async fn tree_page(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        cursor: Option<&str>,
    ) -> Result<TreePage, HubError> {
        let url = match cursor {
            Some(c) => self.on_endpoint(c)?,
            None => self.urls.tree(repo, commit, path)?,
        };
        let (entries, next) = self.page(&url, |b| parse_tree_page(b, path)).await?;
        Ok(TreePage { entries, next })
    }

    /// One page of a Link-paginated listing at `url`: its body parsed by `parse`, and the next
    /// page's URL (on the endpoint), if any.
    async fn page<T>(
        &self,
        url: &str,
        parse: impl FnOnce(&[u8]) -> Result<T, String>,
    ) -> Result<(T, Option<String>), HubError> {
        let sent = self.get_ok(url).await?;
        let next = next_link(sent.resp.headers());
        let shown = redact_url(&sent.url);
        let body = read_body(sent.resp, &shown, self.cfg.request_timeout, MAX_META_BODY).await?;
        let parsed = parse(&body).map_err(|message| HubError::Protocol {
            url: shown.clone(),
            message,
        })?;
        let next = match next {
            Some(n) => Some(self.next_page_url(&n, &shown)?),
            None => None,
        };
        Ok((parsed, next))
    }

    /// A cursor handed back to us must name the endpoint (it is one of our own next-page URLs).
    fn on_endpoint(&self, cursor: &str) -> Result<String, HubError> {
        match Url::parse(cursor) {
            Ok(u) if self.same_origin(&u) => Ok(cursor.to_owned()),
            _ => Err(HubError::Protocol {
                url: redact_url(cursor),
                message: "a listing cursor that does not name the endpoint".into(),
            }),
        }
    }

    /// `POST paths-info` for `paths` at `commit`, with retries of transient failures.
    pub(super) async fn post_paths_info(
        &self,
        repo: &RepoId,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<TreeEntry>, HubError> {
        if paths.is_empty() {
            return Ok(Vec::new());
        }
        let url = paths_info_url(&self.urls, repo, commit)?;
        let body = paths_info_body(paths);
        let sent = self.ask_ok(Ask::PostForm(&body), &url).await?;
        let shown = redact_url(&sent.url);
        let bytes = read_body(sent.resp, &shown, self.cfg.request_timeout, MAX_META_BODY).await?;
        parse_paths_info(&bytes).map_err(|message| HubError::Protocol {
            url: shown,
            message,
        })
    }

    /// One page of `author`'s repos of `repo_type`.
    pub(super) async fn search_page(
        &self,
        repo_type: RepoType,
        author: &str,
        cursor: Option<&str>,
    ) -> Result<RepoPage, HubError> {
        let url = match cursor {
            Some(c) => self.on_endpoint(c)?,
            None => search_url(&self.urls, repo_type, author)?,
        };
        let (names, next) = self.page(&url, |b| parse_repo_page(b, author)).await?;
        Ok(RepoPage { names, next })
    }
}
