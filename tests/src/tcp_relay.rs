//! A TCP relay in front of a server whose open connections a test can cut at once, and which can refuse
//! new ones for a while (signalling that drops, then cannot reach the server, while the server stays up
//! and the media path is untouched).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub struct TcpRelay {
    pub port: u16,
    cuts: watch::Sender<u32>,
    refuse_until: Arc<Mutex<Option<Instant>>>,
}

impl TcpRelay {
    /// Relays connections to `127.0.0.1:<to_port>` from a free loopback port.
    pub async fn start(to_port: u16) -> TcpRelay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cuts, _) = watch::channel(0u32);
        let refuse_until: Arc<Mutex<Option<Instant>>> = Arc::default();
        let (subscribe, refusing) = (cuts.clone(), refuse_until.clone());
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if refusing.lock().unwrap().is_some_and(|until| Instant::now() < until) {
                    continue; // dropped: the client sees its connection closed at once
                }
                let mut cut = subscribe.subscribe();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", to_port)).await else { return };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        // Both sockets are dropped here: each side sees its peer close the connection.
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        TcpRelay { port, cuts, refuse_until }
    }

    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}", self.port)
    }

    /// Closes every connection relayed now, and refuses new ones for `refuse_for`.
    pub fn cut(&self, refuse_for: Duration) {
        *self.refuse_until.lock().unwrap() = Some(Instant::now() + refuse_for);
        self.cuts.send_modify(|n| *n += 1);
    }
}
