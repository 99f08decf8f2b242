//! TLS trust like the rest of the ecosystem, and what a TLS failure means.
//!
//! The client trusts Mozilla's roots (built in), the system's store (rustls-native-certs: the
//! OpenSSL locations such as `/etc/ssl/certs`, or `SSL_CERT_FILE` / `SSL_CERT_DIR` in their
//! place, as OpenSSL reads them), and every extra PEM bundle it is given (`--ca-bundle`,
//! `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`: chosen by the config layer). A bundle that cannot be
//! read or holds no certificate is an error at start, not a silent fallback. A certificate the
//! server presents that none of these vouch for fails with [`super::HubError::Tls`], whose
//! message says which check failed and what to give hubfs.

use std::path::Path;

use super::HubError;

/// Reads a PEM bundle (one or more `BEGIN CERTIFICATE` blocks). Fails, naming the file, when it
/// cannot be read, is not PEM, or holds no certificate.
pub fn load_bundle(path: &Path) -> Result<Vec<reqwest::Certificate>, HubError> {
    let shown = path.display().to_string();
    let fail = |message: String| HubError::Tls {
        url: shown.clone(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| fail(format!("cannot read the CA bundle: {e}")))?;
    let certs = reqwest::Certificate::from_pem_bundle(&pem)
        .map_err(|e| fail(format!("the CA bundle is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(fail(
            "the CA bundle holds no certificate (expected PEM \"BEGIN CERTIFICATE\" blocks)".into(),
        ));
    }
    Ok(certs)
}

/// The TLS failure in an error's chain, if any, as a message that says what to do.
pub fn tls_failure(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(t) = err.downcast_ref::<rustls::Error>() {
            return Some(describe(t));
        }
        // io::Error's source() skips the error it wraps (often another io::Error around the
        // rustls one): go into it instead.
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => io
                .get_ref()
                .map(|i| i as &(dyn std::error::Error + 'static)),
            None => err.source(),
        };
    }
    None
}

/// The advice given with every certificate failure.
const CA_HINT: &str =
    "give the CA that signed the server's certificate with --ca-bundle FILE or SSL_CERT_FILE=FILE (PEM)";

fn describe(e: &rustls::Error) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(c) => {
            let what = match c {
                C::UnknownIssuer => "is signed by a CA hubfs does not trust (UnknownIssuer)",
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "is not valid for this host name (NotValidForName)"
                }
                C::Expired | C::ExpiredContext { .. } => "has expired (Expired)",
                C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet (NotValidYet)",
                C::Revoked => "is revoked (Revoked)",
                _ => "was refused",
            };
            format!("the server's TLS certificate {what}: {e}; {CA_HINT}")
        }
        rustls::Error::InvalidMessage(_) => format!(
            "TLS handshake failed ({e}): is the endpoint really https (and not a plain-http port)?"
        ),
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_certificate_error_inside_an_io_error_is_found_and_explained() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let io = std::io::Error::other(tls);
        let msg = tls_failure(&io).expect("found through io::Error");
        assert!(
            msg.contains("UnknownIssuer") && msg.contains("--ca-bundle"),
            "{msg}"
        );
        let plain = std::io::Error::other("connection refused");
        assert_eq!(tls_failure(&plain), None);
    }

    #[test]
    fn bundles_that_are_missing_empty_or_not_pem_fail_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "# nothing here\n").unwrap();
        for (p, want) in [(&missing, "cannot read"), (&empty, "no certificate")] {
            let e = load_bundle(p).expect_err("must fail").to_string();
            assert!(
                e.contains(want) && e.contains(&p.display().to_string()),
                "{e}"
            );
        }
    }
}
