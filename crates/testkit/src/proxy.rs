//! A TCP proxy in front of a server, for network faults: it can cut every connection (and refuse new ones
//! until restored) and delay what passes through. Tests point a client at [`TcpProxy::addr`] instead of the
//! server.
//!
//! It runs on a thread of its own with its own runtime, so it serves synchronous and asynchronous tests
//! alike, and stops when dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::HarnessError;

/// What the proxy's connections obey.
struct Faults {
    /// While set, new connections are closed at once.
    cut: AtomicBool,
    /// Milliseconds every chunk of data waits before it is passed on.
    delay_ms: AtomicU64,
    /// Bumped by every cut: open connections close when it moves.
    cuts: watch::Sender<u64>,
}

/// A proxy on a free 127.0.0.1 port forwarding to one upstream address.
pub struct TcpProxy {
    addr: SocketAddr,
    faults: Arc<Faults>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl TcpProxy {
    /// Starts forwarding a free 127.0.0.1 port to `upstream`.
    pub fn start(upstream: SocketAddr) -> Result<Self, HarnessError> {
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")
            .map_err(|e| HarnessError::io("binding the proxy", e))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| HarnessError::io("binding the proxy", e))?;
        let addr = std_listener
            .local_addr()
            .map_err(|e| HarnessError::io("binding the proxy", e))?;
        let (cuts, _) = watch::channel(0);
        let faults = Arc::new(Faults {
            cut: AtomicBool::new(false),
            delay_ms: AtomicU64::new(0),
            cuts,
        });
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HarnessError::io("starting the proxy's runtime", e))?;
        let shared = faults.clone();
        std::thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = TcpListener::from_std(std_listener) else {
                        return;
                    };
                    tokio::select! {
                        _ = stopped => {}
                        () = serve(listener, upstream, shared) => {}
                    }
                });
            })
            .map_err(|e| HarnessError::io("starting the proxy's thread", e))?;
        Ok(Self {
            addr,
            faults,
            stop: Some(stop),
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Closes every open connection and refuses new ones (accepted, then closed at once) until
    /// [`TcpProxy::restore`].
    pub fn cut(&self) {
        self.faults.cut.store(true, Ordering::SeqCst);
        self.faults.cuts.send_modify(|n| *n += 1);
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.faults.cut.store(false, Ordering::SeqCst);
    }

    /// Delays every chunk of data, both ways, by `delay` (zero: no delay).
    pub fn delay(&self, delay: Duration) {
        self.faults.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.cut();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn serve(listener: TcpListener, upstream: SocketAddr, faults: Arc<Faults>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        if faults.cut.load(Ordering::SeqCst) {
            drop(client);
            continue;
        }
        let faults = faults.clone();
        tokio::spawn(async move {
            let Ok(server) = TcpStream::connect(upstream).await else {
                return;
            };
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            let mut cuts = faults.cuts.subscribe();
            cuts.mark_unchanged();
            let (client_read, client_write) = client.into_split();
            let (server_read, server_write) = server.into_split();
            tokio::select! {
                _ = cuts.changed() => {}
                () = pipe(client_read, server_write, &faults) => {}
                () = pipe(server_read, client_write, &faults) => {}
            }
        });
    }
}

/// Copies `from` to `to`, each chunk after the delay in force, until either side closes.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    faults: &Faults,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let delay = faults.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
