//! Forward proxies from the environment, as curl and Python read them: `HTTPS_PROXY` for https
//! URLs, `HTTP_PROXY` for http URLs, `ALL_PROXY` for either when the specific one is unset (each
//! also lowercase; uppercase wins), and `NO_PROXY` for the hosts reached directly.
//!
//! `NO_PROXY` is a comma-separated list of: `*` (everything), a host name (it and its
//! subdomains; a leading `.` means the same), an IP address, a CIDR block (`10.0.0.0/8`), or any
//! of those host forms with a port (`mirror.internal:8080`, `127.0.0.1:18080`,
//! `[::1]:8443`), which matches that host on that port only (a URL without a port has its
//! scheme's default). Domain, IP and CIDR matching is hyper-util's (the rules reqwest uses);
//! the port forms are matched here, since neither reqwest nor hyper-util knows them.
//!
//! The proxy sees which hosts hubfs talks to. Through `HTTPS_PROXY` it sees nothing else (the
//! request is a `CONNECT` tunnel); through `HTTP_PROXY`, for an `http://` endpoint, it sees the
//! whole request, token included, as anyone on that network path would.

use std::net::IpAddr;
use std::sync::Arc;

use hyper_util::client::proxy::matcher::Matcher;
use url::Url;

use super::auth::Env;

/// The proxy settings, with their URLs checked.
#[derive(Clone, Debug, Default)]
pub struct ProxyConfig {
    /// Proxy for `http://` URLs (`HTTP_PROXY`, else `ALL_PROXY`).
    http: Option<String>,
    /// Proxy for `https://` URLs (`HTTPS_PROXY`, else `ALL_PROXY`).
    https: Option<String>,
    /// The `NO_PROXY` text as given.
    no_proxy: String,
}

/// A `NO_PROXY` entry with a port: the host must match and the port be this one.
#[derive(Clone, Debug, PartialEq, Eq)]
struct PortRule {
    host: String,
    port: u16,
}

/// A [`ProxyConfig`] ready to answer "which proxy for this URL?".
#[derive(Debug)]
struct Rules {
    cfg: ProxyConfig,
    matcher: Matcher,
    ports: Vec<PortRule>,
}

/// Reads the first set variable of `names` (empty counts as unset).
fn first_var(env: &dyn Env, names: &[&str]) -> Option<(String, String)> {
    names
        .iter()
        .find_map(|n| env.var(n).map(|v| ((*n).to_owned(), v.trim().to_owned())))
        .filter(|(_, v)| !v.is_empty())
}

/// Checks a proxy URL (`host:port` alone means `http://host:port`); only http and https proxies
/// are supported.
fn proxy_url(var: &str, raw: &str) -> Result<String, String> {
    let full = if raw.contains("://") {
        raw.to_owned()
    } else {
        format!("http://{raw}")
    };
    let u = Url::parse(&full).map_err(|e| format!("{var}={raw:?} is not a proxy URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!(
            "{var}={raw:?}: only http:// and https:// proxies are supported"
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(format!("{var}={raw:?}: the proxy URL has no host"));
    }
    Ok(full)
}

/// `http://user:secret@host:3128` → `http://***@host:3128`, for logs.
pub fn redact_proxy(url: &str) -> String {
    match Url::parse(url) {
        Ok(mut u) if !u.username().is_empty() || u.password().is_some() => {
            let _ = u.set_password(None);
            let _ = u.set_username("***");
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<invalid proxy URL>".into(),
    }
}

impl ProxyConfig {
    /// The settings from `HTTPS_PROXY`/`https_proxy`, `HTTP_PROXY`/`http_proxy`,
    /// `ALL_PROXY`/`all_proxy` and `NO_PROXY`/`no_proxy`. Fails on a proxy value that is not an
    /// http(s) URL, naming the variable.
    pub fn from_env(env: &dyn Env) -> Result<Self, String> {
        let get = |names: &[&str]| -> Result<Option<String>, String> {
            first_var(env, names)
                .map(|(n, v)| proxy_url(&n, &v))
                .transpose()
        };
        let all = get(&["ALL_PROXY", "all_proxy"])?;
        let http = get(&["HTTP_PROXY", "http_proxy"])?.or_else(|| all.clone());
        let https = get(&["HTTPS_PROXY", "https_proxy"])?.or(all);
        let no_proxy = first_var(env, &["NO_PROXY", "no_proxy"])
            .map(|(_, v)| v)
            .unwrap_or_default();
        Ok(ProxyConfig {
            http,
            https,
            no_proxy,
        })
    }

    /// True when no proxy is set: every request goes direct.
    pub fn is_direct(&self) -> bool {
        self.http.is_none() && self.https.is_none()
    }

    /// One line for the startup log: the proxies (credentials hidden) and `NO_PROXY`.
    pub fn describe(&self) -> String {
        let show = |p: &Option<String>| p.as_deref().map_or("none".into(), redact_proxy);
        format!(
            "https: {}, http: {}, no_proxy: {:?}",
            show(&self.https),
            show(&self.http),
            self.no_proxy
        )
    }

    fn rules(&self) -> Rules {
        let mut ports = Vec::new();
        let mut plain = Vec::new();
        for entry in self.no_proxy.split(',').map(str::trim) {
            if entry.is_empty() {
                continue;
            }
            match port_rule(entry) {
                Some(r) => ports.push(r),
                None => plain.push(entry),
            }
        }
        let mut b = Matcher::builder().no(plain.join(","));
        if let Some(h) = &self.http {
            b = b.http(h.clone());
        }
        if let Some(h) = &self.https {
            b = b.https(h.clone());
        }
        Rules {
            cfg: self.clone(),
            matcher: b.build(),
            ports,
        }
    }

    /// The proxy URL a request to `url` goes through, `None` for a direct connection.
    pub fn proxy_for(&self, url: &Url) -> Option<String> {
        self.rules().proxy_for(url)
    }

    /// The proxy for reqwest's client builder (`None` when every request goes direct).
    pub fn to_reqwest(&self) -> Option<reqwest::Proxy> {
        if self.is_direct() {
            return None;
        }
        let rules = Arc::new(self.rules());
        Some(reqwest::Proxy::custom(move |url| rules.proxy_for(url)))
    }
}

impl Rules {
    fn proxy_for(&self, url: &Url) -> Option<String> {
        let proxy = match url.scheme() {
            "https" => self.cfg.https.as_ref()?,
            "http" => self.cfg.http.as_ref()?,
            _ => return None,
        };
        let host = url.host_str()?;
        let port = url.port_or_known_default()?;
        if self
            .ports
            .iter()
            .any(|r| r.port == port && host_matches(&r.host, host))
        {
            return None;
        }
        let uri: http::Uri = url.as_str().parse().ok()?;
        self.matcher.intercept(&uri).map(|_| proxy.clone())
    }
}

/// A `NO_PROXY` entry of the form `host:port` or `[v6]:port`; `None` for entries without a port
/// (a bare IPv6 address has colons but no port).
fn port_rule(entry: &str) -> Option<PortRule> {
    if entry.contains('/') || entry.parse::<IpAddr>().is_ok() {
        return None;
    }
    let (host, port) = if let Some(rest) = entry.strip_prefix('[') {
        let (h, p) = rest.split_once("]:")?;
        (h, p)
    } else {
        entry.rsplit_once(':')?
    };
    let port = port.parse::<u16>().ok()?;
    if host.is_empty() || host.contains(':') && host.parse::<IpAddr>().is_err() {
        return None;
    }
    Some(PortRule {
        host: host.to_ascii_lowercase(),
        port,
    })
}

/// curl's host rule: equal, or a subdomain (`example.com` and `.example.com` both match
/// `a.example.com`); IP addresses only when equal.
fn host_matches(rule: &str, host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let (Ok(a), Ok(b)) = (rule.parse::<IpAddr>(), host.parse::<IpAddr>()) {
        return a == b;
    }
    let host = host.to_ascii_lowercase();
    let bare = rule.trim_start_matches('.');
    host == bare || host.ends_with(&format!(".{bare}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::auth::MapEnv;

    fn cfg(pairs: &[(&'static str, &'static str)]) -> ProxyConfig {
        ProxyConfig::from_env(&MapEnv::of(pairs)).expect("valid")
    }

    fn via(c: &ProxyConfig, url: &str) -> Option<String> {
        c.proxy_for(&Url::parse(url).unwrap())
    }

    #[test]
    fn each_scheme_uses_its_own_variable_and_all_proxy_fills_in() {
        let c = cfg(&[
            ("HTTPS_PROXY", "http://tls-proxy:3128"),
            ("http_proxy", "plain-proxy:8080"),
        ]);
        assert_eq!(
            via(&c, "https://huggingface.co/x").as_deref(),
            Some("http://tls-proxy:3128")
        );
        assert_eq!(
            via(&c, "http://mirror:8080/x").as_deref(),
            Some("http://plain-proxy:8080")
        );
        let all = cfg(&[("ALL_PROXY", "http://p:1"), ("HTTP_PROXY", "http://h:2")]);
        assert_eq!(via(&all, "https://a/").as_deref(), Some("http://p:1"));
        assert_eq!(via(&all, "http://a/").as_deref(), Some("http://h:2"));
        assert!(cfg(&[]).is_direct());
        assert_eq!(via(&cfg(&[]), "https://a/"), None);
        let upper = cfg(&[
            ("HTTPS_PROXY", "http://up:1"),
            ("https_proxy", "http://low:2"),
        ]);
        assert_eq!(via(&upper, "https://a/").as_deref(), Some("http://up:1"));
    }

    #[test]
    fn no_proxy_takes_hosts_domains_ips_cidrs_and_host_port_forms() {
        let c = cfg(&[
            ("HTTPS_PROXY", "http://p:3128"),
            ("HTTP_PROXY", "http://p:3128"),
            (
                "NO_PROXY",
                "internal.example, .corp, 10.0.0.0/8, 192.168.1.5, mirror:8080, 127.0.0.1:18080, [::1]:8443, huggingface.co:443",
            ),
        ]);
        let direct = [
            "https://internal.example/",
            "https://a.internal.example/",
            "http://x.corp/",
            "http://10.1.2.3:9/",
            "http://192.168.1.5/",
            "http://mirror:8080/api",
            "http://127.0.0.1:18080/",
            "https://[::1]:8443/",
            "https://huggingface.co/api",
            "https://cdn.huggingface.co/x",
        ];
        for u in direct {
            assert_eq!(via(&c, u), None, "{u} should go direct");
        }
        let proxied = [
            "https://notinternal.example/",
            "http://192.168.1.6/",
            "http://mirror:8081/api",
            "http://mirror/api",
            "http://127.0.0.1:18081/",
            "https://[::1]:8444/",
            "http://huggingface.co/",
        ];
        for u in proxied {
            assert_eq!(
                via(&c, u).as_deref(),
                Some("http://p:3128"),
                "{u} should be proxied"
            );
        }
        let star = cfg(&[("HTTPS_PROXY", "http://p:1"), ("no_proxy", "*")]);
        assert_eq!(via(&star, "https://anything/"), None);
    }

    #[test]
    fn bad_proxy_values_fail_naming_the_variable_and_credentials_are_hidden_in_logs() {
        let e = ProxyConfig::from_env(&MapEnv::of(&[("HTTPS_PROXY", "socks5://p:1")])).unwrap_err();
        assert!(e.contains("HTTPS_PROXY"), "{e}");
        let e = ProxyConfig::from_env(&MapEnv::of(&[("HTTP_PROXY", "http://")])).unwrap_err();
        assert!(e.contains("HTTP_PROXY"), "{e}");
        let c = cfg(&[("HTTPS_PROXY", "http://user:s3cret@p:3128")]);
        assert!(!c.describe().contains("s3cret"), "{}", c.describe());
        assert_eq!(
            via(&c, "https://a/").as_deref(),
            Some("http://user:s3cret@p:3128"),
            "the credentials still reach reqwest"
        );
    }
}
