//! A WebRTC session's UDP socket (livekitsink's towards the room, each WHIP
//! session's towards its client).
//!
//! Registered for reading only: tokio's own `UdpSocket` also asks epoll for
//! writability, and the kernel then reports writable after every burst the
//! socket sends, waking the session's thread for nothing once per frame.
//! Sending never waits: a datagram the kernel cannot take now is dropped,
//! which WebRTC's retransmission covers like any other loss.

use std::io;
use std::net::{SocketAddr, UdpSocket};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct MediaSocket {
    socket: AsyncFd<UdpSocket>,
}

impl MediaSocket {
    /// Must be called within a tokio runtime.
    pub fn bind(address: SocketAddr) -> io::Result<Self> {
        let socket = UdpSocket::bind(address)?;
        socket.set_nonblocking(true)?;
        // SAFETY: the std socket owns its descriptor, and it stays open and
        // the same for as long as the AsyncFd holds the socket.
        let socket = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(MediaSocket { socket })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.get_ref().local_addr()
    }

    /// The next datagram and who sent it.
    pub async fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        loop {
            let mut ready = self.socket.readable().await?;
            match ready.try_io(|socket| socket.get_ref().recv_from(buf)) {
                Ok(received) => return received,
                Err(_would_block) => continue,
            }
        }
    }

    /// Sends one datagram if the kernel takes it now.
    pub fn try_send_to(&self, datagram: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.socket.get_ref().send_to(datagram, to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_go_both_ways() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
            let a = MediaSocket::bind(loopback).expect("bind a");
            let b = MediaSocket::bind(loopback).expect("bind b");
            let to_b = b.local_addr().expect("b's address");
            assert_eq!(a.try_send_to(b"ping", to_b).expect("sent"), 4);
            let mut buf = [0u8; 16];
            let (n, from) = b.recv_from(&mut buf).await.expect("received");
            assert_eq!(&buf[..n], b"ping");
            assert_eq!(from, a.local_addr().expect("a's address"));
        });
    }
}
