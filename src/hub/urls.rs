//! URL building for the Hub's read endpoints. Every variable part is percent-encoded on its own, so
//! a name can never reach another URL path: the revision with `safe=""` (as huggingface_hub's
//! `quote(revision, safe="")`), file paths per segment, and `.`/`..` segments are refused because
//! URL parsers resolve them.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::{HubError, RepoId};

/// Everything but RFC 3986 unreserved characters is escaped.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// True for a full commit sha: 40 lowercase hex digits (what the Hub returns in `sha` and
/// `X-Repo-Commit`; a revision written so is pinned and never re-resolved).
pub fn is_commit_sha(s: &str) -> bool {
    s.len() == 40
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Encodes one path segment (or a whole revision): `/` becomes `%2F`. Refuses the empty string,
/// `.`, `..` and anything with NUL.
pub fn encode_segment(s: &str) -> Result<String, HubError> {
    if s.is_empty() || s == "." || s == ".." || s.contains('\0') {
        return Err(HubError::InvalidName(s.to_owned()));
    }
    Ok(utf8_percent_encode(s, SEGMENT).to_string())
}

/// Encodes a `/`-separated path in a repo segment by segment, keeping the slashes.
pub fn encode_path(path: &str) -> Result<String, HubError> {
    let segs: Result<Vec<String>, HubError> = path.split('/').map(encode_segment).collect();
    Ok(segs?.join("/"))
}

/// Builds URLs against one endpoint (scheme, host, port and an optional base path).
#[derive(Clone, Debug)]
pub struct Urls {
    endpoint: String,
}

impl Urls {
    /// `endpoint` such as `https://huggingface.co`; a trailing `/` is removed.
    pub fn new(endpoint: &str) -> Self {
        Urls {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
        }
    }

    /// The endpoint, without a trailing slash.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn repo_part(repo: &RepoId) -> Result<String, HubError> {
        Ok(format!(
            "{}/{}",
            encode_segment(&repo.namespace)?,
            encode_segment(&repo.name)?
        ))
    }

    /// `GET /api/{type}s/{repo}/revision/{rev}`: revision info with the resolved `sha`.
    pub fn revision_info(&self, repo: &RepoId, revision: &str) -> Result<String, HubError> {
        Ok(format!(
            "{}/api/{}/{}/revision/{}",
            self.endpoint,
            repo.repo_type.api_plural(),
            Self::repo_part(repo)?,
            encode_segment(revision)?
        ))
    }

    /// `GET /api/{type}s/{repo}/tree/{rev}[/{path}]`: the non-recursive listing of a folder. The
    /// path is encoded with `safe=""` like huggingface_hub does (`/` as `%2F`).
    pub fn tree(&self, repo: &RepoId, revision: &str, path: &str) -> Result<String, HubError> {
        let mut url = format!(
            "{}/api/{}/{}/tree/{}",
            self.endpoint,
            repo.repo_type.api_plural(),
            Self::repo_part(repo)?,
            encode_segment(revision)?
        );
        if !path.is_empty() {
            // Validate each segment, then encode the whole path as one segment.
            encode_path(path)?;
            url.push('/');
            url.push_str(&utf8_percent_encode(path, SEGMENT).to_string());
        }
        url.push_str("?recursive=false&expand=false");
        Ok(url)
    }

    /// `GET /{prefix}{repo}/resolve/{rev}/{path}`: the file's bytes (often a redirect).
    pub fn resolve(&self, repo: &RepoId, revision: &str, path: &str) -> Result<String, HubError> {
        Ok(format!(
            "{}/{}{}/resolve/{}/{}",
            self.endpoint,
            repo.repo_type.url_prefix(),
            Self::repo_part(repo)?,
            encode_segment(revision)?,
            encode_path(path)?
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::RepoType;

    fn repo(t: RepoType) -> RepoId {
        RepoId::new(t, "acme", "tiny-gpt2")
    }

    #[test]
    fn url_table() {
        let u = Urls::new("https://huggingface.co/");
        let sha = "e2c9b14d7f5262cce844ac5c7b6611d562dc3963";
        let cases: Vec<(Result<String, HubError>, &str)> = vec![
            (
                u.revision_info(&repo(RepoType::Model), "main"),
                "https://huggingface.co/api/models/acme/tiny-gpt2/revision/main",
            ),
            (
                u.revision_info(&repo(RepoType::Dataset), "refs/pr/1"),
                "https://huggingface.co/api/datasets/acme/tiny-gpt2/revision/refs%2Fpr%2F1",
            ),
            (
                u.revision_info(&repo(RepoType::Space), "v1.0"),
                "https://huggingface.co/api/spaces/acme/tiny-gpt2/revision/v1.0",
            ),
            (
                u.tree(&repo(RepoType::Model), sha, ""),
                "https://huggingface.co/api/models/acme/tiny-gpt2/tree/e2c9b14d7f5262cce844ac5c7b6611d562dc3963?recursive=false&expand=false",
            ),
            (
                u.tree(&repo(RepoType::Dataset), sha, "data/train"),
                "https://huggingface.co/api/datasets/acme/tiny-gpt2/tree/e2c9b14d7f5262cce844ac5c7b6611d562dc3963/data%2Ftrain?recursive=false&expand=false",
            ),
            (
                u.resolve(&repo(RepoType::Model), sha, "model.safetensors"),
                "https://huggingface.co/acme/tiny-gpt2/resolve/e2c9b14d7f5262cce844ac5c7b6611d562dc3963/model.safetensors",
            ),
            (
                u.resolve(&repo(RepoType::Dataset), sha, "docs/naïve file.txt"),
                "https://huggingface.co/datasets/acme/tiny-gpt2/resolve/e2c9b14d7f5262cce844ac5c7b6611d562dc3963/docs/na%C3%AFve%20file.txt",
            ),
            (
                u.resolve(&repo(RepoType::Space), sha, "a%2e%2e/b?c#d"),
                "https://huggingface.co/spaces/acme/tiny-gpt2/resolve/e2c9b14d7f5262cce844ac5c7b6611d562dc3963/a%252e%252e/b%3Fc%23d",
            ),
        ];
        for (got, want) in cases {
            assert_eq!(got.expect("valid url"), want);
        }
    }

    #[test]
    fn dot_segments_empty_and_nul_are_refused() {
        let u = Urls::new("http://h");
        let r = repo(RepoType::Model);
        for bad in ["..", ".", "a/../b", "a//b", "", "a\0b", "a/./b"] {
            assert!(u.resolve(&r, "main", bad).is_err(), "{bad:?}");
        }
        assert!(u.revision_info(&r, "..").is_err());
        assert!(u.revision_info(&r, "").is_err());
        let evil = RepoId::new(RepoType::Model, "..", "x");
        assert!(u.revision_info(&evil, "main").is_err());
    }

    #[test]
    fn encoded_names_cannot_escape_their_segment() {
        assert_eq!(encode_segment("a/b").unwrap(), "a%2Fb");
        assert_eq!(encode_segment("%2F").unwrap(), "%252F");
        assert_eq!(encode_segment("..a").unwrap(), "..a");
    }
}
