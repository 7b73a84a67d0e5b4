//! A TCP proxy for one directed node-to-node link, which a test can cut and heal.
//!
//! Every node dials each peer through its own proxy (the `[peers]` table of its config), so
//! cutting the proxy for the link A -> B stops every connection A opens to B, and nothing
//! else: clients still reach B directly on its listen address.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long the proxy waits for the target to accept a connection before it gives up and
/// closes the inbound side. Short, because the targets are local processes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What the link does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    /// Traffic flows both ways.
    Open,
    /// New connections are accepted and closed at once (the dialer sees an immediate EOF),
    /// so the dialer fails fast instead of waiting for a timeout.
    Refuse,
    /// New connections are accepted and then held without forwarding a byte, like a
    /// network that silently drops packets; the dialer only notices through its timeouts.
    Blackhole,
}

/// The link's mode, and an epoch bumped at every change of mode. A connection remembers the
/// epoch it was accepted in and closes when the epoch moves on: that is how a cut drops
/// existing connections, and how a heal drops blackholed ones.
#[derive(Clone, Copy, Debug)]
struct LinkState {
    mode: LinkMode,
    epoch: u64,
}

/// One proxy: listens on an ephemeral port of 127.0.0.1 and forwards to `target`.
///
/// The proxy runs on the tokio runtime that created it. Dropping it stops the listener and
/// closes every connection it carries.
pub struct LinkProxy {
    addr: SocketAddr,
    target: SocketAddr,
    state: watch::Sender<LinkState>,
    accept_task: JoinHandle<()>,
}

impl LinkProxy {
    /// Binds 127.0.0.1:0 and starts forwarding to `target`. The port is held for the
    /// proxy's whole life, so no other process can take it between config and start.
    pub async fn start(target: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (state, rx) = watch::channel(LinkState {
            mode: LinkMode::Open,
            epoch: 0,
        });
        let accept_task = tokio::spawn(accept_loop(listener, target, rx));
        Ok(Self {
            addr,
            target,
            state,
            accept_task,
        })
    }

    /// The address to dial instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where the traffic goes.
    pub fn target(&self) -> SocketAddr {
        self.target
    }

    /// The current mode.
    pub fn mode(&self) -> LinkMode {
        self.state.borrow().mode
    }

    /// Drops every existing connection and closes new ones at once.
    pub fn cut(&self) {
        self.set_mode(LinkMode::Refuse);
    }

    /// Drops every existing connection and holds new ones without forwarding anything.
    pub fn blackhole(&self) {
        self.set_mode(LinkMode::Blackhole);
    }

    /// Lets traffic flow again (and drops connections held by a blackhole, so that their
    /// dialers reconnect).
    pub fn heal(&self) {
        self.set_mode(LinkMode::Open);
    }

    fn set_mode(&self, mode: LinkMode) {
        self.state.send_if_modified(|s| {
            if s.mode == mode {
                return false;
            }
            s.mode = mode;
            s.epoch += 1;
            true
        });
    }
}

impl Drop for LinkProxy {
    fn drop(&mut self) {
        // Connection tasks end by themselves once the sender (in `self.state`) is gone.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: SocketAddr, rx: watch::Receiver<LinkState>) {
    loop {
        let inbound = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(_) => {
                // Out of file descriptors or a connection reset before accept: transient;
                // back off briefly rather than spin.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let state = *rx.borrow();
        match state.mode {
            LinkMode::Refuse => drop(inbound),
            LinkMode::Blackhole => {
                let rx = rx.clone();
                tokio::spawn(async move {
                    until_epoch_changes(rx, state.epoch).await;
                    drop(inbound);
                });
            }
            LinkMode::Open => {
                tokio::spawn(forward(inbound, target, rx.clone(), state.epoch));
            }
        }
    }
}

async fn forward(
    mut inbound: TcpStream,
    target: SocketAddr,
    rx: watch::Receiver<LinkState>,
    epoch: u64,
) {
    let outbound = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
    let Ok(Ok(mut outbound)) = outbound else {
        return; // The target is down: the dialer sees its connection closed.
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = until_epoch_changes(rx, epoch) => {}
    }
    // Both streams drop here, closing both sides.
}

/// Returns when the link's epoch differs from `epoch`, or when the proxy is gone.
async fn until_epoch_changes(mut rx: watch::Receiver<LinkState>, epoch: u64) {
    let _ = rx.wait_for(|s| s.epoch != epoch).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server on 127.0.0.1:0; answers every byte it reads.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends `msg` and expects it echoed within a second.
    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
        s.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(1), s.read_exact(&mut buf))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        Ok(buf)
    }

    /// Whether the connection is closed by the other side within `within` (EOF or error),
    /// as opposed to staying open and silent.
    async fn closed_within(s: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 16];
        match tokio::time::timeout(within, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => true,
            Ok(Ok(_)) => panic!("unexpected data through a cut link"),
            Err(_) => false,
        }
    }

    // Property: an open link forwards bytes both ways.
    // Set-up: an echo server behind a proxy.
    // Pass: a message sent through the proxy comes back unchanged.
    #[tokio::test]
    async fn open_link_forwards() {
        let proxy = LinkProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"hello").await.unwrap(), b"hello");
        assert_eq!(proxy.mode(), LinkMode::Open);
    }

    // Property: cut() drops existing connections and refuses new ones; heal() restores
    // the link for new connections.
    // Set-up: an echo server behind a proxy, one connection established before the cut.
    // Pass: the old connection is closed within a second; a new connection during the cut
    // is closed at once without echo; after heal a new connection echoes again.
    #[tokio::test]
    async fn cut_drops_and_refuses_then_heal_restores() {
        let proxy = LinkProxy::start(echo_server().await).await.unwrap();
        let mut before = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut before, b"a").await.unwrap(), b"a");

        proxy.cut();
        assert!(closed_within(&mut before, Duration::from_secs(1)).await);
        let mut during = TcpStream::connect(proxy.addr()).await.unwrap();
        let _ = during.write_all(b"b").await;
        assert!(closed_within(&mut during, Duration::from_secs(1)).await);

        proxy.heal();
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after, b"c").await.unwrap(), b"c");
    }

    // Property: a blackholed link holds new connections open without forwarding, and heal()
    // closes them so that dialers reconnect.
    // Set-up: an echo server behind a blackholed proxy.
    // Pass: a message gets no echo and the connection stays open for 300 ms; after heal the
    // held connection is closed and a new one echoes.
    #[tokio::test]
    async fn blackhole_holds_then_heal_closes() {
        let proxy = LinkProxy::start(echo_server().await).await.unwrap();
        proxy.blackhole();
        let mut held = TcpStream::connect(proxy.addr()).await.unwrap();
        held.write_all(b"x").await.unwrap();
        assert!(!closed_within(&mut held, Duration::from_millis(300)).await);

        proxy.heal();
        assert!(closed_within(&mut held, Duration::from_secs(1)).await);
        let mut after = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut after, b"y").await.unwrap(), b"y");
    }

    // Property: dropping the proxy closes the connections it carries.
    // Set-up: one established connection through a proxy, then the proxy is dropped.
    // Pass: the connection is closed within a second.
    #[tokio::test]
    async fn drop_closes_connections() {
        let proxy = LinkProxy::start(echo_server().await).await.unwrap();
        let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(round_trip(&mut s, b"z").await.unwrap(), b"z");
        drop(proxy);
        assert!(closed_within(&mut s, Duration::from_secs(1)).await);
    }
}
