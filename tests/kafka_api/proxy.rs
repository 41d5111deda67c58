//! A TCP proxy between real clients and the server that records the bytes going each way,
//! for the producer and fuzz tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A TCP proxy that records the bytes going each way, per connection: what a real client sends
/// (to replay and mutate) and what the server answers (to find stored batches in it).
/// One proxied connection's bytes: (client to server, server to client).
type Captured = Arc<Mutex<(Vec<u8>, Vec<u8>)>>;

pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    pub(crate) connections: Arc<Mutex<Vec<Captured>>>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) fn start(listener: TcpListener, upstream: SocketAddr) -> Proxy {
        let addr = listener.local_addr().unwrap();
        let connections: Arc<Mutex<Vec<Captured>>> = Default::default();
        let all = connections.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let captured = Arc::new(Mutex::new((Vec::new(), Vec::new())));
                all.lock().unwrap().push(captured.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(Proxy::pipe(cr, sw, captured.clone(), true));
                tokio::spawn(Proxy::pipe(sr, cw, captured, false));
            }
        });
        Proxy {
            addr,
            connections,
            task,
        }
    }

    pub(crate) async fn pipe(
        mut from: tokio::net::tcp::OwnedReadHalf,
        mut to: tokio::net::tcp::OwnedWriteHalf,
        captured: Captured,
        up: bool,
    ) {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            {
                let mut c = captured.lock().unwrap();
                let side = if up { &mut c.0 } else { &mut c.1 };
                side.extend_from_slice(&buf[..n]);
            }
            if to.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = to.shutdown().await;
    }

    /// Every whole request clients sent, length prefix included.
    pub(crate) fn requests(&self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        for c in self.connections.lock().unwrap().iter() {
            let up = c.lock().unwrap().0.clone();
            let mut pos = 0;
            while pos + 4 <= up.len() {
                let len = i32::from_be_bytes(up[pos..pos + 4].try_into().unwrap()) as usize;
                if pos + 4 + len > up.len() {
                    break;
                }
                frames.push(up[pos..pos + 4 + len].to_vec());
                pos += 4 + len;
            }
        }
        frames
    }

    /// Everything the server sent, all connections end to end.
    pub(crate) fn responses(&self) -> Vec<u8> {
        self.connections
            .lock()
            .unwrap()
            .iter()
            .flat_map(|c| c.lock().unwrap().1.clone())
            .collect()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
