//! [`HubClient`] over HTTP for repos: revisions, tree listings (whole or a page at a time),
//! paths-info, repo search, and range reads through `/resolve`.

use super::identity::Expect;
use super::range::check_range;
use super::HttpHub;
use crate::hub::error::redact_url;
use crate::hub::wire::{parse_rfc3339, parse_tree_page, RevisionJson};
use crate::hub::{CommitInfo, FileRef, HubClient, HubError, PieceSink, RepoId, TreeEntry};

impl HubClient for HttpHub {
    async fn resolve_revision(
        &self,
        repo: &RepoId,
        revision: &str,
    ) -> Result<CommitInfo, HubError> {
        let url = self.urls.revision_info(repo, revision)?;
        let sent = self.get_ok(&url).await?;
        let shown = redact_url(&sent.url);
        let info: RevisionJson = self.body_json(sent).await?;
        let sha = info
            .sha
            .filter(|s| crate::hub::urls::is_commit_sha(s))
            .ok_or(HubError::Protocol {
                url: shown,
                message: "revision info without a 40-hex sha".into(),
            })?;
        Ok(CommitInfo {
            sha,
            date: info.last_modified.as_deref().and_then(parse_rfc3339),
        })
    }

    async fn list_dir(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
    ) -> Result<Vec<TreeEntry>, HubError> {
        let url = self.urls.tree(repo, commit, path)?;
        let mut out = Vec::new();
        for (body, shown) in self.get_pages(url).await? {
            let page = parse_tree_page(&body, path).map_err(|message| HubError::Protocol {
                url: shown,
                message,
            })?;
            out.extend(page);
        }
        Ok(out)
    }

    async fn list_page(
        &self,
        repo: &RepoId,
        commit: &str,
        path: &str,
        cursor: Option<&str>,
    ) -> Result<crate::hub::TreePage, HubError> {
        self.tree_page(repo, commit, path, cursor).await
    }

    async fn paths_info(
        &self,
        repo: &RepoId,
        commit: &str,
        paths: &[String],
    ) -> Result<Vec<TreeEntry>, HubError> {
        self.post_paths_info(repo, commit, paths).await
    }

    async fn list_repos(
        &self,
        repo_type: crate::hub::RepoType,
        author: &str,
        cursor: Option<&str>,
    ) -> Result<crate::hub::RepoPage, HubError> {
        self.search_page(repo_type, author, cursor).await
    }

    async fn stream_range(
        &self,
        file: &FileRef,
        offset: u64,
        len: u64,
        piece: u64,
        sink: &dyn PieceSink,
    ) -> Result<(), HubError> {
        if len == 0 {
            return Ok(());
        }
        check_range(&file.path, offset, len, file.size)?;
        let resolve = self.urls.resolve(&file.repo, &file.commit, &file.path)?;
        let file = Expect::Repo(file);
        self.stream_via(&resolve, &resolve, &file, offset, len, piece, sink)
            .await
    }
}
