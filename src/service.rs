//! Services that run beside the mount, in the daemon: readiness and stopping for systemd
//! (`sd_notify`), Prometheus metrics on loopback, and the periodic throughput log line.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::fs::HubFs;
use crate::hub::HubClient;
use crate::stats::Stats;

/// Sends `msg` (e.g. `READY=1`) to systemd when `NOTIFY_SOCKET` is set; a no-op otherwise.
pub fn sd_notify(msg: &str) -> io::Result<()> {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = path.as_encoded_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(msg.as_bytes(), &addr)?;
    } else {
        sock.send_to(msg.as_bytes(), PathBuf::from(path))?;
    }
    Ok(())
}

/// Serves Prometheus text at `addr` until the runtime stops. Loopback addresses only.
pub async fn serve_metrics<C: HubClient>(
    addr: std::net::SocketAddr,
    fs: Arc<HubFs<C>>,
) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if !addr.ip().is_loopback() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--metrics-addr {addr} is not a loopback address"),
        ));
    }
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let fs = fs.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]);
            let (status, body) = if req.starts_with("GET /metrics") {
                (
                    "200 OK",
                    crate::stats::to_prometheus(fs.stats(), &fs.gauges()),
                )
            } else {
                ("404 Not Found", "try /metrics\n".to_owned())
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(resp.as_bytes()).await;
        });
    }
}

/// Logs a throughput line every `every` while bytes are being served.
pub async fn log_throughput(stats: Arc<Stats>, every: Duration) {
    let mut last = (
        Stats::get(&stats.bytes_served),
        Stats::get(&stats.bytes_fetched),
    );
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tick.tick().await;
        let now = (
            Stats::get(&stats.bytes_served),
            Stats::get(&stats.bytes_fetched),
        );
        if now.0 != last.0 {
            let secs = every.as_secs_f64();
            tracing::info!(
                served_mb_s = format!("{:.1}", (now.0 - last.0) as f64 / 1e6 / secs),
                fetched_mb_s = format!("{:.1}", (now.1 - last.1) as f64 / 1e6 / secs),
                cache_hits = Stats::get(&stats.cache_hits),
                cache_misses = Stats::get(&stats.cache_misses),
                retries = Stats::get(&stats.retries),
                "throughput"
            );
        }
        last = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_goes_to_the_socket_in_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        // SAFETY (test): the variable is read by this thread only.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        sd_notify("READY=1").unwrap();
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        sd_notify("READY=1").unwrap();
    }
}
