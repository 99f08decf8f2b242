//! What the mount's root directory is: the whole Hub (`/<org>/<repo>@<rev>/...`), one repo (or
//! one folder of it) pinned to a commit, or one Storage Bucket (or one folder of it). The core
//! binds a repo root once (`HubFs::resolve_root`, in `fs/revisions.rs`) and asks
//! [`MountRoot::bucket`] for a bucket root.

use crate::fs::inode::Node;
use crate::fs::namespace::{is_valid_entry_name, is_valid_name, is_valid_revision};
use crate::hub::buckets::BucketId;
use crate::hub::{RepoId, RepoType};

/// The extended attribute holding the commit of anything inside a repo directory.
pub const XATTR_COMMIT: &str = "user.hf.commit";
/// The extended attribute naming the repo of anything inside one: `acme/m`,
/// `datasets/acme/corpus`.
pub const XATTR_REPO: &str = "user.hf.repo";
/// The extended attribute holding the path in its repo of a folder or file (empty for the top).
pub const XATTR_PATH: &str = "user.hf.path";
/// The extended attribute of a one-repo mount's root: the revision it was mounted from, as given
/// (its commit is in `user.hf.commit`).
pub const XATTR_REVISION: &str = "user.hf.revision";

/// The directory at the mount's root.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum MountRoot {
    /// The whole Hub: `/<org>/<repo>@<rev>/`, `/datasets/...`, `/spaces/...`.
    #[default]
    Hub,
    /// One repo at the commit `revision` resolves to when mounting (pinned for the life of the
    /// mount), or one folder of it.
    Repo {
        /// The repo.
        repo: RepoId,
        /// Branch, tag or commit sha, as given.
        revision: String,
        /// The folder of the repo that is the root, `/`-separated without leading or trailing
        /// `/`; empty for the repo's top.
        subfolder: String,
    },
    /// One Storage Bucket, or one folder of it, followed as it changes (`--bucket`).
    Bucket {
        /// The bucket.
        bucket: BucketId,
        /// The folder of the bucket that is the root, as for [`MountRoot::Repo`].
        subfolder: String,
    },
}

impl MountRoot {
    /// The repo and revision the root is, for a one-repo mount.
    pub fn repo_and_revision(&self) -> Option<(&RepoId, &str)> {
        match self {
            MountRoot::Hub | MountRoot::Bucket { .. } => None,
            MountRoot::Repo { repo, revision, .. } => Some((repo, revision)),
        }
    }

    /// The bucket and folder the root is, for a bucket mount.
    pub fn bucket(&self) -> Option<(&BucketId, &str)> {
        match self {
            MountRoot::Bucket { bucket, subfolder } => Some((bucket, subfolder)),
            MountRoot::Hub | MountRoot::Repo { .. } => None,
        }
    }

    /// The folder of the repo that is the root (empty for the repo's top, or the whole Hub).
    pub fn subfolder(&self) -> &str {
        match self {
            MountRoot::Hub => "",
            MountRoot::Repo { subfolder, .. } | MountRoot::Bucket { subfolder, .. } => subfolder,
        }
    }

    /// Parses a one-repo root from `--repo` (`org/name`, `org/name@rev`, with an optional
    /// `datasets/` or `spaces/` prefix; a revision may hold `/` raw or percent-encoded),
    /// `--repo-type` (when given, it must agree with a prefix) and `--subfolder`.
    pub fn parse_repo(
        spec: &str,
        repo_type: Option<RepoType>,
        subfolder: Option<&str>,
    ) -> Result<MountRoot, String> {
        let (prefixed, rest) = match spec.split_once('/') {
            Some(("datasets", r)) => (Some(RepoType::Dataset), r),
            Some(("spaces", r)) => (Some(RepoType::Space), r),
            Some(("models", r)) => (Some(RepoType::Model), r),
            _ => (None, spec),
        };
        let repo_type = match (prefixed, repo_type) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "--repo {spec:?} names a {a:?} repo but --repo-type says {b:?}"
                ))
            }
            (a, b) => a.or(b).unwrap_or(RepoType::Model),
        };
        let (id, revision) = match rest.split_once('@') {
            Some((id, rev)) => {
                let rev = percent_encoding::percent_decode_str(rev)
                    .decode_utf8()
                    .map_err(|_| format!("revision in {spec:?} is not valid UTF-8"))?
                    .into_owned();
                (id, rev)
            }
            None => (rest, crate::fs::namespace::DEFAULT_REVISION.to_owned()),
        };
        let (org, name) = id
            .split_once('/')
            .filter(|(o, n)| is_valid_name(o) && is_valid_name(n))
            .ok_or_else(|| {
                format!("invalid repo {spec:?}: expected org/name[@revision], e.g. openai-community/gpt2@main")
            })?;
        if !is_valid_revision(&revision) {
            return Err(format!("invalid revision {revision:?} in {spec:?}"));
        }
        let subfolder = normalize_subfolder(subfolder.unwrap_or(""))?;
        Ok(MountRoot::Repo {
            repo: RepoId::new(repo_type, org, name),
            revision,
            subfolder,
        })
    }

    /// Parses a bucket root from `--bucket NS/NAME` (valid Hub names) and `--subfolder` (a folder
    /// path of valid entry names; slashes at its ends ignored).
    pub fn parse_bucket(bucket: &str, subfolder: Option<&str>) -> Result<MountRoot, String> {
        let (ns, name) = bucket
            .split_once('/')
            .filter(|(n, b)| is_valid_name(n) && is_valid_name(b))
            .ok_or_else(|| format!("--bucket {bucket:?}: expected NS/NAME (valid Hub names)"))?;
        Ok(MountRoot::Bucket {
            bucket: BucketId::new(ns, name),
            subfolder: normalize_subfolder(subfolder.unwrap_or(""))?,
        })
    }

    /// How the root is written in logs and `hubfs status`: `the Hub`, or
    /// `datasets/acme/corpus@main, folder data/train`.
    pub fn describe(&self) -> String {
        match self {
            MountRoot::Hub => "the Hub".to_owned(),
            MountRoot::Repo {
                repo,
                revision,
                subfolder,
            } if subfolder.is_empty() => format!("{repo}@{revision}"),
            MountRoot::Repo {
                repo,
                revision,
                subfolder,
            } => format!("{repo}@{revision}, folder {subfolder}"),
            MountRoot::Bucket { bucket, subfolder } if subfolder.is_empty() => {
                format!("bucket {bucket}")
            }
            MountRoot::Bucket { bucket, subfolder } => {
                format!("bucket {bucket}, folder {subfolder}")
            }
        }
    }
}

/// The value of extended attribute `name` of `node`: its commit, repo or path inside a repo.
pub fn xattr(node: &Node, name: &str) -> Option<Vec<u8>> {
    let snap = node.snapshot()?;
    let value = match name {
        XATTR_COMMIT => snap.commit.clone(),
        XATTR_REPO => snap.repo.to_string(),
        XATTR_PATH => match node {
            Node::Dir { path, .. } => path.clone(),
            Node::File { file, .. } => file.path.clone(),
            _ => String::new(),
        },
        _ => return None,
    };
    Some(value.into_bytes())
}

/// The extended attributes `node` has.
pub fn xattr_names(node: &Node) -> Vec<String> {
    if node.snapshot().is_none() {
        return Vec::new();
    }
    [XATTR_COMMIT, XATTR_REPO, XATTR_PATH]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
}

/// `--subfolder` without leading, trailing or doubled `/`; each segment must be a name a tree
/// listing can give (no `.` or `..`).
pub fn normalize_subfolder(s: &str) -> Result<String, String> {
    let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
    if let Some(bad) = parts.iter().find(|p| !is_valid_entry_name(p)) {
        return Err(format!("invalid --subfolder {s:?}: segment {bad:?}"));
    }
    Ok(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo(spec: &str, t: Option<RepoType>, sub: Option<&str>) -> Result<MountRoot, String> {
        MountRoot::parse_repo(spec, t, sub)
    }

    #[test]
    fn repo_specs_parse_like_mount_paths() {
        assert_eq!(
            repo("acme/m", None, None).unwrap(),
            MountRoot::Repo {
                repo: RepoId::new(RepoType::Model, "acme", "m"),
                revision: "main".into(),
                subfolder: String::new()
            }
        );
        let r = repo(
            "datasets/acme/corpus@refs%2Fpr%2F1",
            None,
            Some("/data//train/"),
        )
        .unwrap();
        assert_eq!(r.repo_and_revision().unwrap().1, "refs/pr/1");
        assert_eq!(r.subfolder(), "data/train");
        assert_eq!(
            r.repo_and_revision().unwrap().0.repo_type,
            RepoType::Dataset
        );
        let r = repo("acme/m@refs/pr/1", Some(RepoType::Space), None).unwrap();
        assert_eq!(r.repo_and_revision().unwrap().1, "refs/pr/1");
        assert_eq!(r.repo_and_revision().unwrap().0.repo_type, RepoType::Space);
        assert_eq!(r.describe(), "spaces/acme/m@refs/pr/1", "{}", r.describe());
        assert!(repo("datasets/acme/c", Some(RepoType::Model), None).is_err());
        for bad in [
            "gpt2",
            "a/b/c",
            "../x",
            "a/..",
            "acme/m@",
            "acme/m@..",
            "acme/m@%ff",
        ] {
            assert!(repo(bad, None, None).is_err(), "{bad}");
        }
        assert!(repo("acme/m", None, Some("a/../b")).is_err());
        assert!(repo("acme/m", None, Some("./b")).is_err());
        assert_eq!(MountRoot::Hub.describe(), "the Hub");
    }
}
