//! A TCP forwarder in front of Azurite that a test can switch between working, refusing and hanging:
//! "storage is down" without stopping the one Azurite the other tests of the binary share.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards to the target.
    Up,
    /// Closes new connections at once and cuts open ones.
    Refuse,
    /// Accepts connections and never answers (a storage endpoint that hangs).
    BlackHole,
    /// Forwards, holding one chunk of a request in four this long first (a storage endpoint that
    /// is slow now and then).
    Slow(std::time::Duration),
}

pub struct ToggleProxy {
    pub addr: SocketAddr,
    mode: watch::Sender<Mode>,
}

impl ToggleProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (mode, watcher) = watch::channel(Mode::Up);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let now = *watcher.borrow();
                let mut watcher = watcher.clone();
                match now {
                    Mode::Refuse => drop(inbound),
                    Mode::BlackHole => {
                        // Hold the connection open, reading nothing, until the mode changes.
                        tokio::spawn(async move {
                            let _ = watcher.wait_for(|m| *m != Mode::BlackHole).await;
                            drop(inbound);
                        });
                    }
                    Mode::Slow(delay) => {
                        tokio::spawn(async move {
                            let Ok(outbound) = TcpStream::connect(target).await else {
                                return;
                            };
                            let (mut in_read, mut in_write) = inbound.into_split();
                            let (mut out_read, mut out_write) = outbound.into_split();
                            let requests = async {
                                use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
                                let mut buf = vec![0u8; 64 * 1024];
                                while let Ok(n) = in_read.read(&mut buf).await {
                                    if n == 0 {
                                        break;
                                    }
                                    if fastrand::u8(..4) == 0 {
                                        tokio::time::sleep(delay).await;
                                    }
                                    if out_write.write_all(&buf[..n]).await.is_err() {
                                        break;
                                    }
                                }
                            };
                            let answers = tokio::io::copy(&mut out_read, &mut in_write);
                            tokio::select! {
                                _ = futures::future::join(requests, answers) => {}
                                _ = watcher.wait_for(|m| *m == Mode::Refuse) => {}
                            }
                        });
                    }
                    Mode::Up => {
                        tokio::spawn(async move {
                            let Ok(mut outbound) = TcpStream::connect(target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                                _ = watcher.wait_for(|m| *m != Mode::Up) => {} // cut connections that were open
                            }
                        });
                    }
                }
            }
        });
        Self { addr, mode }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    pub fn set_up(&self, up: bool) {
        self.set(if up { Mode::Up } else { Mode::Refuse });
    }
}
