//! The path grammar of the mount (a contract; see docs/semantics.md):
//!
//! ```text
//! /<org>/<repo>[@<rev>]/<path>             models
//! /datasets/<org>/<repo>[@<rev>]/<path>    datasets
//! /spaces/<org>/<repo>[@<rev>]/<path>      spaces
//! ```
//!
//! `<rev>` is a branch, tag or commit sha, percent-decoded (`refs%2Fpr%2F1` is `refs/pr/1`); no
//! `@<rev>` means `main`.

use percent_encoding::percent_decode_str;

use crate::hub::RepoType;

/// The longest org or repo name accepted (the Hub allows 96).
pub const MAX_NAME_LEN: usize = 96;
/// The longest revision accepted, after decoding.
pub const MAX_REV_LEN: usize = 255;
/// The revision used when a directory name has no `@`.
pub const DEFAULT_REVISION: &str = "main";

/// What a name at the root of the mount denotes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RootName {
    /// `datasets` or `spaces`.
    TypeDir(RepoType),
    /// Any other valid name: a user or organisation with models.
    Org(String),
}

/// A repo directory name, `<repo>[@<rev>]`, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoDirName {
    /// The repo's name (without org).
    pub repo: String,
    /// The decoded revision.
    pub revision: String,
}

impl RepoDirName {
    /// True when the revision is a full commit sha: the directory is immutable.
    pub fn is_pinned(&self) -> bool {
        crate::hub::urls::is_commit_sha(&self.revision)
    }
}

/// Parses a name at the mount root.
pub fn parse_root_name(name: &str) -> Option<RootName> {
    match name {
        "datasets" => Some(RootName::TypeDir(RepoType::Dataset)),
        "spaces" => Some(RootName::TypeDir(RepoType::Space)),
        n if is_valid_name(n) => Some(RootName::Org(n.to_owned())),
        _ => None,
    }
}

/// True for a Hub user, org or repo name: ASCII letters, digits, `-`, `_`, `.`; 1 to 96 long; not
/// starting with `.` or `-`; no `..`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && !name.starts_with(['.', '-'])
        && !name.contains("..")
}

/// True for a revision after decoding: 1 to 255 bytes, no control characters, and no `.`/`..`
/// path segment (it is sent percent-encoded as one URL segment in any case).
pub fn is_valid_revision(rev: &str) -> bool {
    !rev.is_empty()
        && rev.len() <= MAX_REV_LEN
        && !rev.chars().any(char::is_control)
        && !rev
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
}

/// Parses `<repo>[@<rev>]`. The revision is percent-decoded and must be valid UTF-8.
pub fn parse_repo_dir(name: &str) -> Option<RepoDirName> {
    let (repo, rev) = match name.split_once('@') {
        Some((r, v)) => (r, percent_decode_str(v).decode_utf8().ok()?.into_owned()),
        None => (name, DEFAULT_REVISION.to_owned()),
    };
    if !is_valid_name(repo) || !is_valid_revision(&rev) {
        return None;
    }
    Some(RepoDirName {
        repo: repo.to_owned(),
        revision: rev,
    })
}

/// True for a name inside a repo as a tree listing may give it: non-empty, no `/`, no NUL, not
/// `.` or `..`, at most 255 bytes.
pub fn is_valid_entry_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && name != "."
        && name != ".."
        && !name.contains(['/', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn root_names() {
        assert_eq!(
            parse_root_name("datasets"),
            Some(RootName::TypeDir(RepoType::Dataset))
        );
        assert_eq!(
            parse_root_name("spaces"),
            Some(RootName::TypeDir(RepoType::Space))
        );
        assert_eq!(
            parse_root_name("openai-community"),
            Some(RootName::Org("openai-community".into()))
        );
        for bad in [".git", "..", "-x", "a b", "a/b", "", "ü", &"x".repeat(97)] {
            assert_eq!(parse_root_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn repo_dir_names() {
        let p = |s| parse_repo_dir(s).map(|r| (r.repo, r.revision));
        assert_eq!(p("gpt2"), Some(("gpt2".into(), "main".into())));
        assert_eq!(p("gpt2@main"), Some(("gpt2".into(), "main".into())));
        assert_eq!(p("gpt2@v1.0"), Some(("gpt2".into(), "v1.0".into())));
        assert_eq!(
            p("gpt2@refs%2Fpr%2F1"),
            Some(("gpt2".into(), "refs/pr/1".into()))
        );
        assert_eq!(p("m@feat%40x"), Some(("m".into(), "feat@x".into())));
        let sha = "e2c9b14d7f5262cce844ac5c7b6611d562dc3963";
        let r = parse_repo_dir(&format!("m@{sha}")).unwrap();
        assert!(r.is_pinned());
        assert!(!parse_repo_dir("m@main").unwrap().is_pinned());
        for bad in [
            "m@",
            "@main",
            "m@..",
            "m@%2e%2e",
            "m@a%2F..%2Fb",
            "m@%00",
            "m@%ff",
            ".m@main",
            "m@a%2F%2Fb",
            "m@%0a",
        ] {
            assert_eq!(parse_repo_dir(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn entry_names() {
        assert!(is_valid_entry_name("naïve file with spaces.txt"));
        for bad in ["", ".", "..", "a/b", "a\0b"] {
            assert!(!is_valid_entry_name(bad));
        }
    }

    proptest! {
        // Whatever the kernel hands us, a parsed name is safe to put in a URL segment and never a
        // dot segment; parsing never panics.
        #[test]
        fn parsed_names_are_always_safe(s in "\\PC{0,40}") {
            if let Some(RootName::Org(o)) = parse_root_name(&s) {
                prop_assert!(is_valid_name(&o));
                prop_assert!(crate::hub::urls::encode_segment(&o).is_ok());
            }
            if let Some(r) = parse_repo_dir(&s) {
                prop_assert!(is_valid_name(&r.repo));
                prop_assert!(is_valid_revision(&r.revision));
                let enc = crate::hub::urls::encode_segment(&r.revision).unwrap();
                prop_assert!(!enc.contains('/'));
                prop_assert!(enc != "." && enc != "..");
            }
        }

        #[test]
        fn encoded_revisions_round_trip(rev in "[a-zA-Z0-9._/@-]{1,30}") {
            let enc = crate::hub::urls::encode_segment(&rev);
            if let (Ok(enc), true) = (enc, is_valid_revision(&rev)) {
                let parsed = parse_repo_dir(&format!("m@{enc}")).unwrap();
                prop_assert_eq!(parsed.revision, rev);
            }
        }
    }
}
