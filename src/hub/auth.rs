//! The Hub token: where it comes from (huggingface_hub's order) and a wrapper that never prints it.

use std::fmt;
use std::path::{Path, PathBuf};

/// A Hub access token. `Debug` and `Display` print `<redacted>`; only [`Token::expose`] gives the
/// value, and only the HTTP client calls it, to build the `Authorization` header.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// A token from raw text: whitespace and newlines are stripped; empty text is no token.
    pub fn parse(raw: &str) -> Option<Token> {
        let t = raw.trim();
        if t.is_empty() {
            None
        } else {
            Some(Token(t.to_owned()))
        }
    }

    /// The secret value. Callers must not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

/// Where a token was found, for the startup log line (never the token itself).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token-file`.
    Flag(PathBuf),
    /// Env `HF_TOKEN`.
    EnvHfToken,
    /// The file named by env `HF_TOKEN_PATH`.
    EnvTokenPath(PathBuf),
    /// `$HF_HOME/token` (default `~/.cache/huggingface/token`).
    HfHome(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Flag(p) => write!(f, "--token-file {}", p.display()),
            TokenSource::EnvHfToken => f.write_str("env HF_TOKEN"),
            TokenSource::EnvTokenPath(p) => write!(f, "HF_TOKEN_PATH {}", p.display()),
            TokenSource::HfHome(p) => write!(f, "{}", p.display()),
        }
    }
}

/// The environment the token lookup reads, so tests can supply their own.
pub trait Env {
    /// An environment variable, if set (empty counts as unset).
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

/// Errors reading a token file that was explicitly named.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The file could not be read.
    #[error("cannot read token file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// Reads a token file: its text, stripped; empty is no token. Warns when others may read it.
pub(crate) fn read_token_file(path: &Path) -> Result<Option<Token>, std::io::Error> {
    let text = std::fs::read_to_string(path)?;
    warn_if_world_readable(path);
    Ok(Token::parse(&text))
}

fn warn_if_world_readable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                file = %path.display(),
                "token file is readable by other users; run: chmod 600 {}",
                path.display()
            );
        }
    }
}

/// The default `HF_HOME`: `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`.
pub fn hf_home(env: &dyn Env) -> Option<PathBuf> {
    if let Some(h) = env.var("HF_HOME") {
        return Some(PathBuf::from(h));
    }
    if let Some(x) = env.var("XDG_CACHE_HOME") {
        return Some(PathBuf::from(x).join("huggingface"));
    }
    env.var("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("huggingface"))
}

/// Finds the token: `--token-file` if given (an unreadable one is an error), else env `HF_TOKEN`,
/// else the file at env `HF_TOKEN_PATH`, else `$HF_HOME/token`. Missing files mean no token.
pub fn find_token(
    flag_file: Option<&Path>,
    env: &dyn Env,
) -> Result<Option<(Token, TokenSource)>, TokenError> {
    if let Some(path) = flag_file {
        return read_token_file(path)
            .map(|t| t.map(|t| (t, TokenSource::Flag(path.to_owned()))))
            .map_err(|source| TokenError::Read {
                path: path.to_owned(),
                source,
            });
    }
    if let Some(t) = env.var("HF_TOKEN").as_deref().and_then(Token::parse) {
        return Ok(Some((t, TokenSource::EnvHfToken)));
    }
    let (path, source): (PathBuf, fn(PathBuf) -> TokenSource) = match env.var("HF_TOKEN_PATH") {
        Some(p) => (PathBuf::from(p), TokenSource::EnvTokenPath),
        None => match hf_home(env) {
            Some(h) => (h.join("token"), TokenSource::HfHome),
            None => return Ok(None),
        },
    };
    match read_token_file(&path) {
        Ok(t) => Ok(t.map(|t| (t, source(path)))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TokenError::Read { path, source }),
    }
}

/// An environment of given pairs, for tests of everything that reads [`Env`].
#[cfg(test)]
pub(crate) struct MapEnv(std::collections::HashMap<String, String>);

#[cfg(test)]
impl MapEnv {
    /// The environment holding exactly `pairs`.
    pub(crate) fn of<K: ToString, V: ToString>(pairs: &[(K, V)]) -> Self {
        MapEnv(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }
}

#[cfg(test)]
impl Env for MapEnv {
    fn var(&self, key: &str) -> Option<String> {
        self.0.get(key).cloned().filter(|v| !v.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&'static str, String)]) -> MapEnv {
        MapEnv::of(pairs)
    }

    #[test]
    fn token_debug_never_shows_the_value() {
        let t = Token::parse(" hf_secret\n").unwrap();
        assert_eq!(t.expose(), "hf_secret");
        assert!(!format!("{t:?}").contains("hf_secret"));
        assert!(Token::parse(" \n").is_none());
    }

    #[test]
    fn lookup_order_matches_huggingface_hub() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::write(home.join("token"), "from-home\n").unwrap();
        let path_file = dir.path().join("tp");
        std::fs::write(&path_file, "from-path").unwrap();
        let flag_file = dir.path().join("flag");
        std::fs::write(&flag_file, "from-flag").unwrap();
        let home_s = home.display().to_string();
        let tp_s = path_file.display().to_string();

        let all = env(&[
            ("HF_TOKEN", "from-env".into()),
            ("HF_TOKEN_PATH", tp_s.clone()),
            ("HF_HOME", home_s.clone()),
        ]);
        let got = |flag: Option<&Path>, e: &MapEnv| {
            find_token(flag, e)
                .unwrap()
                .map(|(t, _)| t.expose().to_owned())
        };
        assert_eq!(got(Some(&flag_file), &all).as_deref(), Some("from-flag"));
        assert_eq!(got(None, &all).as_deref(), Some("from-env"));
        let no_env = env(&[("HF_TOKEN_PATH", tp_s), ("HF_HOME", home_s.clone())]);
        assert_eq!(got(None, &no_env).as_deref(), Some("from-path"));
        let home_only = env(&[("HF_HOME", home_s)]);
        assert_eq!(got(None, &home_only).as_deref(), Some("from-home"));
        let nothing = env(&[("HF_HOME", dir.path().join("none").display().to_string())]);
        assert_eq!(got(None, &nothing), None);
        let xdg = env(&[("XDG_CACHE_HOME", dir.path().display().to_string())]);
        assert_eq!(hf_home(&xdg), Some(dir.path().join("huggingface")));
        assert!(find_token(Some(&dir.path().join("missing")), &nothing).is_err());
    }
}
