//! The credential the client sends, and how it follows a token file that is rotated.
//!
//! A token given in the environment (`HF_TOKEN`) is fixed for the life of the mount. A token read
//! from a file (`--token-file`, `HF_TOKEN_PATH`, `$HF_HOME/token`) is looked at again when it may
//! have changed: at most every [`TOKEN_CHECK_INTERVAL`] (one `stat`, and a read only when the
//! file's identity, size or times changed), and at once when the Hub rejects a request (401).
//! So a renewed token is used without a restart, and after the change is seen the old one is
//! never sent again. Nothing here logs a token.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::auth::{find_token, hf_home, read_token_file, Env, Token, TokenError, TokenSource};

/// How often a token file is checked for a change, at most (a 401 checks at once).
pub const TOKEN_CHECK_INTERVAL: Duration = Duration::from_secs(5);

/// What the client authenticates with.
#[derive(Clone, Debug, Default)]
pub enum Credentials {
    /// No token: public repos only.
    #[default]
    None,
    /// A token that never changes (`HF_TOKEN`, or one given by a test).
    Fixed(Token),
    /// A token file, followed as it changes.
    File(Arc<TokenFile>),
}

impl From<Option<Token>> for Credentials {
    fn from(t: Option<Token>) -> Self {
        t.map_or(Credentials::None, Credentials::Fixed)
    }
}

impl Credentials {
    /// The token to send now (a file is re-checked when the check interval has passed).
    pub fn current(&self) -> Option<Token> {
        match self {
            Credentials::None => None,
            Credentials::Fixed(t) => Some(t.clone()),
            Credentials::File(f) => f.current(),
        }
    }

    /// After the Hub rejected a request (401): checks a token file at once and returns the token
    /// to send now. A caller that sent something else retries with it once.
    pub fn refresh(&self) -> Option<Token> {
        match self {
            Credentials::File(f) => f.refresh(),
            other => other.current(),
        }
    }
}

/// Identity of a file's contents as `stat` shows it: a rename onto the path (a new inode), an
/// in-place write (size, mtime, ctime) or a Kubernetes secret swap all change it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stamp {
    fn of(meta: &std::fs::Metadata) -> Stamp {
        use std::os::unix::fs::MetadataExt;
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stamp {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }
}

#[derive(Debug)]
struct FileState {
    token: Option<Token>,
    /// The file as last read; `None` while it is missing or unreadable.
    stamp: Option<Stamp>,
    checked: Instant,
}

/// A token file that is re-read when it changes. An empty file means no token; a file that
/// disappears or cannot be read keeps the last token (with a warning), so that a rotation that
/// briefly removes the file does not drop the credential.
#[derive(Debug)]
pub struct TokenFile {
    path: PathBuf,
    check_every: Duration,
    state: Mutex<FileState>,
}

impl TokenFile {
    /// Follows `path`, reading it now. A missing file is no token (for now); an unreadable one is
    /// an error when `required` (an explicit `--token-file`).
    pub fn open(path: &Path, check_every: Duration, required: bool) -> Result<Self, TokenError> {
        let (token, stamp) = match std::fs::metadata(path) {
            Ok(meta) => {
                let token = read_token_file(path).map_err(|source| TokenError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                (token, Some(Stamp::of(&meta)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => (None, None),
            Err(source) => {
                return Err(TokenError::Read {
                    path: path.to_owned(),
                    source,
                })
            }
        };
        Ok(TokenFile {
            path: path.to_owned(),
            check_every,
            state: Mutex::new(FileState {
                token,
                stamp,
                checked: Instant::now(),
            }),
        })
    }

    /// The file followed.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The token now: the file is checked first if the interval has passed since the last check.
    pub fn current(&self) -> Option<Token> {
        let mut st = self.state.lock();
        if st.checked.elapsed() >= self.check_every {
            self.recheck(&mut st);
        }
        st.token.clone()
    }

    /// Checks the file at once and returns the token now.
    pub fn refresh(&self) -> Option<Token> {
        let mut st = self.state.lock();
        self.recheck(&mut st);
        st.token.clone()
    }

    /// One `stat`; a read only if the file changed. Logs changes, never the token.
    fn recheck(&self, st: &mut FileState) {
        st.checked = Instant::now();
        let shown = self.path.display();
        let meta = match std::fs::metadata(&self.path) {
            Ok(m) => m,
            Err(e) => {
                if st.stamp.take().is_some() {
                    tracing::warn!(file = %shown, error = %e, "token file cannot be read; keeping the last token");
                }
                return;
            }
        };
        let stamp = Stamp::of(&meta);
        if st.stamp == Some(stamp) {
            return;
        }
        match read_token_file(&self.path) {
            Ok(token) => {
                st.stamp = Some(stamp);
                if token != st.token {
                    match &token {
                        Some(_) => {
                            tracing::info!(file = %shown, "token file changed; using the new token")
                        }
                        None => {
                            tracing::warn!(file = %shown, "token file is now empty; sending no token")
                        }
                    }
                    st.token = token;
                }
            }
            Err(e) => {
                if st.stamp.take().is_some() {
                    tracing::warn!(file = %shown, error = %e, "token file cannot be read; keeping the last token");
                }
            }
        }
    }
}

/// Finds the credential in huggingface_hub's order (see [`find_token`]): `--token-file`, else
/// `HF_TOKEN` (fixed), else the file at `HF_TOKEN_PATH`, else `$HF_HOME/token`. Files are followed
/// for changes every `check_every`; a default file that does not exist yet is followed too, so a
/// later `huggingface-cli login` is picked up. Returns the credential and where it came from
/// (`None` when there is no token now).
pub fn find_credentials(
    flag_file: Option<&Path>,
    env: &dyn Env,
    check_every: Duration,
) -> Result<(Credentials, Option<TokenSource>), TokenError> {
    let (path, source, required): (PathBuf, fn(PathBuf) -> TokenSource, bool) = match flag_file {
        Some(p) => (p.to_owned(), TokenSource::Flag, true),
        None => {
            if env.var("HF_TOKEN").is_some() {
                return Ok(match find_token(None, env)? {
                    Some((t, src)) => (Credentials::Fixed(t), Some(src)),
                    None => (Credentials::None, None),
                });
            }
            match env.var("HF_TOKEN_PATH") {
                Some(p) => (PathBuf::from(p), TokenSource::EnvTokenPath, false),
                None => match hf_home(env) {
                    Some(h) => (h.join("token"), TokenSource::HfHome, false),
                    None => return Ok((Credentials::None, None)),
                },
            }
        }
    };
    let file = TokenFile::open(&path, check_every, required)?;
    let found = file.current().map(|_| source(path));
    Ok((Credentials::File(Arc::new(file)), found))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::auth::MapEnv;

    fn write_atomically(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    fn exposed(t: Option<Token>) -> Option<String> {
        t.map(|t| t.expose().to_owned())
    }

    #[test]
    fn a_changed_token_file_is_seen_after_the_interval_not_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok-a\n").unwrap();
        let f = TokenFile::open(&path, Duration::from_millis(300), true).unwrap();
        assert_eq!(exposed(f.current()).as_deref(), Some("tok-a"));
        write_atomically(&path, "tok-b");
        assert_eq!(
            exposed(f.current()).as_deref(),
            Some("tok-a"),
            "not re-checked before the interval"
        );
        std::thread::sleep(Duration::from_millis(350));
        assert_eq!(exposed(f.current()).as_deref(), Some("tok-b"));
    }

    #[test]
    fn refresh_sees_a_change_at_once_even_an_in_place_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok-a").unwrap();
        let f = TokenFile::open(&path, Duration::from_secs(3600), true).unwrap();
        // Same size, same inode: only the times (and the bytes) differ.
        std::fs::write(&path, "tok-b").unwrap();
        assert_eq!(exposed(f.refresh()).as_deref(), Some("tok-b"));
    }

    #[test]
    fn a_missing_file_keeps_the_last_token_and_an_empty_one_means_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "tok-a").unwrap();
        let f = TokenFile::open(&path, Duration::ZERO, true).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(exposed(f.current()).as_deref(), Some("tok-a"));
        write_atomically(&path, "tok-c");
        assert_eq!(exposed(f.current()).as_deref(), Some("tok-c"));
        write_atomically(&path, " \n");
        assert_eq!(exposed(f.current()), None);
    }

    #[test]
    fn a_default_token_file_that_appears_later_is_used() {
        let dir = tempfile::tempdir().unwrap();
        let env = MapEnv::of(&[("HF_HOME", dir.path().display().to_string())]);
        let (creds, src) = find_credentials(None, &env, Duration::ZERO).unwrap();
        assert!(src.is_none());
        assert_eq!(exposed(creds.current()), None);
        std::fs::write(dir.path().join("token"), "tok-login").unwrap();
        assert_eq!(exposed(creds.current()).as_deref(), Some("tok-login"));
    }

    #[test]
    fn hf_token_in_the_environment_stays_fixed_and_flag_files_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "from-file").unwrap();
        let env = MapEnv::of(&[
            ("HF_TOKEN", "from-env".to_string()),
            ("HF_HOME", dir.path().display().to_string()),
        ]);
        let (creds, src) = find_credentials(None, &env, Duration::ZERO).unwrap();
        assert!(matches!(creds, Credentials::Fixed(_)));
        assert_eq!(src, Some(TokenSource::EnvHfToken));
        std::fs::write(dir.path().join("token"), "changed").unwrap();
        assert_eq!(exposed(creds.refresh()).as_deref(), Some("from-env"));

        let (creds, src) =
            find_credentials(Some(&dir.path().join("token")), &env, Duration::ZERO).unwrap();
        assert!(matches!(creds, Credentials::File(_)));
        assert!(matches!(src, Some(TokenSource::Flag(_))));
        assert_eq!(exposed(creds.current()).as_deref(), Some("changed"));
        assert!(find_credentials(Some(&dir.path().join("missing")), &env, Duration::ZERO).is_err());
    }

    #[test]
    fn credentials_debug_never_shows_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "hf_secret_value").unwrap();
        let f = Credentials::File(Arc::new(
            TokenFile::open(&path, Duration::ZERO, true).unwrap(),
        ));
        let fixed: Credentials = Token::parse("hf_secret_value").into();
        for c in [f, fixed] {
            assert!(!format!("{c:?}").contains("hf_secret_value"));
        }
    }
}
