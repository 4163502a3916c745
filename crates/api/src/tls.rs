//! HTTPS for the listener (rustls): certificate and key from PEM files, reloaded when the files change, so
//! a renewed certificate is served without a restart.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use axum::Router;
use axum_server::Handle;
use axum_server::tls_rustls::RustlsConfig;
use serde::Deserialize;

/// The listener's certificate.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain (leaf first).
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// Seconds between checks for changed files (0: never reload).
    #[serde(default = "default_reload_secs")]
    pub reload_secs: u64,
}

fn default_reload_secs() -> u64 {
    30
}

fn modified(settings: &TlsSettings) -> Option<(SystemTime, SystemTime)> {
    let cert = std::fs::metadata(&settings.cert_file).ok()?.modified().ok()?;
    let key = std::fs::metadata(&settings.key_file).ok()?.modified().ok()?;
    Some((cert, key))
}

/// Serves `app` over TLS on `listener` until `shutdown` completes, then lets in-flight requests finish
/// (at most 10 s).
pub async fn serve_tls(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: TlsSettings,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // rustls needs a process-wide crypto provider; ring is the one built in (an installed one is kept).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = RustlsConfig::from_pem_file(&tls.cert_file, &tls.key_file).await?;
    if tls.reload_secs > 0 {
        let (config, tls) = (config.clone(), tls.clone());
        tokio::spawn(async move {
            let mut seen = modified(&tls);
            let mut tick = tokio::time::interval(Duration::from_secs(tls.reload_secs));
            loop {
                tick.tick().await;
                let now = modified(&tls);
                if now.is_none() || now == seen {
                    continue;
                }
                match config.reload_from_pem_file(&tls.cert_file, &tls.key_file).await {
                    Ok(()) => {
                        tracing::info!(cert = %tls.cert_file.display(), "reloaded the TLS certificate");
                        seen = now;
                    }
                    // A half-written pair fails to load: keep serving the old one and try again next tick.
                    Err(e) => tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "the new TLS certificate could not be loaded"
                    ),
                }
            }
        });
    }
    let handle: Handle<SocketAddr> = Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        stopper.graceful_shutdown(Some(Duration::from_secs(10)));
    });
    let listener = listener.into_std()?;
    listener.set_nonblocking(true)?;
    axum_server::from_tcp_rustls(listener, config)?
        .handle(handle)
        .serve(app.into_make_service_with_connect_info::<SocketAddr>())
        .await
}
