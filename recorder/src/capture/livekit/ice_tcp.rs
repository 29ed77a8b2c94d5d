//! ICE over TCP, the active side (RFC 6544), for a server the recorder cannot reach over UDP: a
//! firewall that passes only TCP, or livekit-server after UDP failed while signalling worked (it then
//! offers that participant only its TCP candidates, `pkg/rtc/transportmanager.go`, cached per room and
//! identity for at least 5 minutes). str0m pairs our TCP candidate with the server's and asks to send to
//! it; this opens the connection (from the recorder's media address) and frames each packet with a
//! 2-byte length (RFC 4571), both ways.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::net::TcpSocket;
use tokio::sync::mpsc;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// RFC 4571 frames carry at most 65535 bytes.
const MAX_FRAME: usize = u16::MAX as usize;

/// One packet received on a TCP link: who sent it, and its bytes.
pub struct TcpPacket {
    pub source: SocketAddr,
    pub data: Bytes,
}

/// The open TCP links, by the server address each goes to.
pub struct TcpLinks {
    local_ip: IpAddr,
    links: HashMap<SocketAddr, mpsc::UnboundedSender<Bytes>>,
    received_tx: mpsc::UnboundedSender<TcpPacket>,
    pub received: mpsc::UnboundedReceiver<TcpPacket>,
}

impl TcpLinks {
    pub fn new(local_ip: IpAddr) -> TcpLinks {
        let (received_tx, received) = mpsc::unbounded_channel();
        TcpLinks { local_ip, links: HashMap::new(), received_tx, received }
    }

    /// Sends `data` to `destination`, connecting first if no link goes there. A link that failed is
    /// dropped here and opened again by the next send (ICE keeps retrying its checks).
    pub fn send(&mut self, destination: SocketAddr, data: &[u8]) {
        if data.len() > MAX_FRAME {
            return;
        }
        if self.links.get(&destination).is_some_and(|link| link.is_closed()) {
            self.links.remove(&destination);
        }
        let link = self.links.entry(destination).or_insert_with(|| {
            let (outgoing_tx, outgoing) = mpsc::unbounded_channel();
            tokio::spawn(run_link(self.local_ip, destination, outgoing, self.received_tx.clone()));
            outgoing_tx
        });
        let _ = link.send(Bytes::copy_from_slice(data));
    }
}

/// One link: connects, then relays both ways until either side ends. A packet whose write fails (the
/// connection broke while idle, as when the recorder's address went away) is sent again on a new
/// connection at once, rather than waiting for ICE's next check seconds later.
async fn run_link(local_ip: IpAddr, remote: SocketAddr, mut outgoing: mpsc::UnboundedReceiver<Bytes>, received: mpsc::UnboundedSender<TcpPacket>) {
    let mut unsent: Option<Bytes> = None;
    loop {
        let stream = match connect(local_ip, remote).await {
            Ok(stream) => stream,
            Err(err) => {
                tracing::debug!(%remote, %err, "ICE/TCP connection failed");
                return;
            }
        };
        tracing::info!(%remote, "ICE/TCP connection open");
        let codec = LengthDelimitedCodec::builder().length_field_length(2).max_frame_length(MAX_FRAME).new_codec();
        let (mut sink, mut frames) = Framed::new(stream, codec).split();
        if let Some(packet) = unsent.take()
            && sink.send(packet).await.is_err()
        {
            return;
        }
        let failed_write = loop {
            tokio::select! {
                packet = outgoing.recv() => match packet {
                    Some(packet) => if sink.send(packet.clone()).await.is_err() { break Some(packet) },
                    None => return,
                },
                frame = frames.next() => match frame {
                    Some(Ok(frame)) => if received.send(TcpPacket { source: remote, data: frame.freeze() }).is_err() { return },
                    _ => break None,
                },
            }
        };
        tracing::info!(%remote, "ICE/TCP connection closed");
        match failed_write {
            Some(packet) => unsent = Some(packet),
            None => return,
        }
    }
}

async fn connect(local_ip: IpAddr, remote: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let socket = if remote.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    socket.set_nodelay(true)?;
    socket.bind(SocketAddr::new(local_ip, 0))?;
    tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(remote)).await.map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Packets go out with a 2-byte length, in order, over one connection; framed replies come back
    /// with their sender.
    #[tokio::test]
    async fn packets_are_framed_both_ways_over_one_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        let mut links = TcpLinks::new("127.0.0.1".parse().unwrap());
        links.send(server, b"first");
        links.send(server, b"second packet");
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut got = vec![0u8; 2 + 5 + 2 + 13];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(got, [&[0u8, 5][..], b"first", &[0, 13], b"second packet"].concat());
        conn.write_all(&[0, 3, b'a', b'c', b'k']).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), links.received.recv()).await.unwrap().unwrap();
        assert_eq!((reply.source, &reply.data[..]), (server, &b"ack"[..]));
        assert!(tokio::time::timeout(Duration::from_millis(200), listener.accept()).await.is_err(), "one connection only");
    }

    /// A link whose connection failed is opened again by the next send.
    #[tokio::test]
    async fn a_failed_link_is_opened_again() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = listener.local_addr().unwrap();
        drop(listener);
        let mut links = TcpLinks::new("127.0.0.1".parse().unwrap());
        links.send(server, b"lost");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let listener = tokio::net::TcpListener::bind(server).await.unwrap();
        links.send(server, b"again");
        let (mut conn, _) = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await.unwrap().unwrap();
        let mut got = [0u8; 7];
        conn.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\0\x05again");
    }
}
