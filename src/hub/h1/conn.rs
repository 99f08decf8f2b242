//! The direct client's connections: where one goes (scheme, host, port), plain or TLS (with the
//! same trust as reqwest's), and the idle ones kept per origin for reuse.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use url::Url;

use crate::hub::HubError;

/// How long an idle connection is kept for reuse.
pub const IDLE_FOR: Duration = Duration::from_secs(30);

/// Where a connection goes: scheme, host, port.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Origin {
    tls: bool,
    host: String,
    port: u16,
}

impl Origin {
    pub(super) fn of(url: &Url) -> Option<Origin> {
        let tls = match url.scheme() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let host = match url.host()? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        Some(Origin {
            tls,
            host,
            port: url.port_or_known_default()?,
        })
    }
}

/// A connection, plain or TLS.
pub(super) enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// The TLS settings the direct client uses: the same trust as reqwest's (Mozilla's roots built
/// in, the system's store, the extra bundles; see [`super::tls`]), rustls with ring, HTTP/1.1.
fn tls_config(bundles: &[PathBuf]) -> Result<rustls::ClientConfig, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for path in bundles {
        let pem = std::fs::read(path)
            .map_err(|e| format!("cannot read the CA bundle {}: {e}", path.display()))?;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            let cert =
                cert.map_err(|e| format!("the CA bundle {} is not PEM: {e}", path.display()))?;
            roots
                .add(cert)
                .map_err(|e| format!("a certificate of {} is unusable: {e}", path.display()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(cfg)
}

/// Makes connections: TCP, and TLS over it for https (its settings made at the first https
/// connection, as reading the system's store takes a while).
pub(super) struct Connector {
    ca_bundles: Vec<PathBuf>,
    tls: OnceLock<Result<tokio_rustls::TlsConnector, String>>,
}

impl Connector {
    /// A connector trusting what reqwest trusts plus `ca_bundles`.
    pub(super) fn new(ca_bundles: Vec<PathBuf>) -> Self {
        Connector {
            ca_bundles,
            tls: OnceLock::new(),
        }
    }

    fn tls(&self) -> Result<&tokio_rustls::TlsConnector, String> {
        self.tls
            .get_or_init(|| {
                tls_config(&self.ca_bundles).map(|c| tokio_rustls::TlsConnector::from(Arc::new(c)))
            })
            .as_ref()
            .map_err(Clone::clone)
    }

    /// A new connection to `origin` (`shown` names it in errors).
    pub(super) async fn connect(&self, origin: &Origin, shown: &str) -> Result<Io, HubError> {
        let tcp = TcpStream::connect((origin.host.as_str(), origin.port))
            .await
            .map_err(|e| io_error(shown, &e, "cannot connect"))?;
        // Small requests go out at once (as reqwest's are).
        let _ = tcp.set_nodelay(true);
        if !origin.tls {
            return Ok(Io::Plain(tcp));
        }
        let connector = self.tls().map_err(|message| HubError::Tls {
            url: shown.to_owned(),
            message,
        })?;
        let name = rustls::pki_types::ServerName::try_from(origin.host.clone()).map_err(|e| {
            HubError::Tls {
                url: shown.to_owned(),
                message: format!("not a TLS server name: {e}"),
            }
        })?;
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| io_error(shown, &e, "TLS handshake failed"))?;
        Ok(Io::Tls(Box::new(tls)))
    }
}

/// Idle connections kept for reuse: at most `max_idle` per origin, each for [`IDLE_FOR`].
pub(super) struct IdlePool {
    idle: Mutex<HashMap<Origin, Vec<(Io, Instant)>>>,
    max_idle: usize,
}

impl IdlePool {
    /// An empty pool keeping at most `max_idle` connections per origin.
    pub(super) fn new(max_idle: usize) -> Self {
        IdlePool {
            idle: Mutex::new(HashMap::new()),
            max_idle,
        }
    }

    /// Idle connections to `origin` now.
    pub(super) fn count(&self, origin: &Origin) -> usize {
        self.idle.lock().get(origin).map_or(0, Vec::len)
    }

    /// The most recently idle connection to `origin` not idle too long, if any.
    pub(super) fn take(&self, origin: &Origin) -> Option<Io> {
        let mut idle = self.idle.lock();
        let list = idle.get_mut(origin)?;
        while let Some((io, since)) = list.pop() {
            if since.elapsed() < IDLE_FOR {
                return Some(io);
            }
        }
        None
    }

    /// Keeps `io`, whose last answer was read to its end, for the next request to `origin`.
    pub(super) fn put(&self, origin: Origin, io: Io) {
        let mut idle = self.idle.lock();
        let list = idle.entry(origin).or_default();
        list.retain(|(_, since)| since.elapsed() < IDLE_FOR);
        if list.len() < self.max_idle {
            list.push((io, Instant::now()));
        }
    }
}

/// An I/O error as the client's error: a TLS failure (see [`crate::hub::tls::tls_failure`]) or a
/// network one, with `what` in front.
pub(super) fn io_error(url: &str, e: &io::Error, what: &str) -> HubError {
    match crate::hub::tls::tls_failure(e) {
        Some(message) => HubError::Tls {
            url: url.to_owned(),
            message,
        },
        None => HubError::Network {
            url: url.to_owned(),
            message: format!("{what}: {e}"),
        },
    }
}
