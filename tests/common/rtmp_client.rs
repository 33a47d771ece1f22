//! A scripted RTMP publisher for the ways a publish can go wrong that real
//! encoders only meet by accident: a connection reset right after `publish`,
//! a `publish` without `createStream`, a close in the middle of the handshake.
//! rml_rtmp's client session speaks the protocol; the test decides when to
//! stop, and how (a reset, as a network glitch would, or a close).

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

pub struct RtmpClient {
    stream: TcpStream,
    session: ClientSession,
}

impl RtmpClient {
    /// Connects to `port` on loopback and completes the handshake.
    pub fn handshake(port: u16) -> RtmpClient {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake.generate_outbound_p0_and_p1().expect("c0c1");
        stream.write_all(&c0c1).expect("send c0c1");
        let mut buf = [0u8; 4096];
        let leftover = loop {
            let n = stream.read(&mut buf).expect("read handshake");
            assert!(n > 0, "the server closed during the handshake");
            match handshake.process_bytes(&buf[..n]).expect("handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    stream.write_all(&response_bytes).expect("send");
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    stream.write_all(&response_bytes).expect("send");
                    break remaining_bytes;
                }
            }
        };
        let (session, _) = ClientSession::new(ClientSessionConfig::new()).expect("session");
        let mut client = RtmpClient { stream, session };
        if !leftover.is_empty() {
            let _ = client.handle(&leftover);
        }
        client
    }

    /// Sends the first half of the handshake (C0 and part of C1) and stops.
    pub fn half_handshake(port: u16) -> TcpStream {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let c0c1 = Handshake::new(PeerType::Client)
            .generate_outbound_p0_and_p1()
            .expect("c0c1");
        stream.write_all(&c0c1[..c0c1.len() / 2]).expect("send");
        stream
    }

    fn send(&mut self, result: ClientSessionResult) {
        if let ClientSessionResult::OutboundResponse(packet) = result {
            self.stream.write_all(&packet.bytes).expect("send");
        }
    }

    /// Feeds bytes to the session, sends what it answers, returns its events
    /// and how many packets it sent.
    fn handle(&mut self, bytes: &[u8]) -> (Vec<ClientSessionEvent>, usize) {
        let (mut events, mut sent) = (Vec::new(), 0);
        for result in self.session.handle_input(bytes).expect("rtmp input") {
            match result {
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                other => {
                    self.send(other);
                    sent += 1;
                }
            }
        }
        (events, sent)
    }

    fn read(&mut self, buf: &mut [u8]) -> usize {
        let n = self.stream.read(buf).expect("read");
        assert!(n > 0, "the server closed the connection");
        n
    }

    /// Reads until an event `done` picks something from arrives.
    fn until<T>(&mut self, mut done: impl FnMut(&ClientSessionEvent) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut buf = [0u8; 64 * 1024];
        while Instant::now() < deadline {
            let n = self.read(&mut buf);
            for event in self.handle(&buf[..n]).0 {
                if let Some(found) = done(&event) {
                    return found;
                }
            }
        }
        panic!("no answer from the RTMP server");
    }

    /// `connect` to the application.
    pub fn connect(&mut self, app: &str) {
        let request = self
            .session
            .request_connection(app.to_string())
            .expect("connect");
        self.send(request);
        self.until(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted).then_some(()));
    }

    /// `createStream` then `publish`; returns once the publish command is
    /// written, without waiting for the answer.
    pub fn send_publish(&mut self, key: &str) {
        let request = self
            .session
            .request_publishing(key.to_string(), PublishRequestType::Live)
            .expect("publish");
        self.send(request);
        // The session writes `publish` (its first packet since) as it reads
        // createStream's result.
        let mut buf = [0u8; 4096];
        loop {
            let n = self.read(&mut buf);
            if self.handle(&buf[..n]).1 > 0 {
                return;
            }
        }
    }

    /// `publish` and wait for the server's answer: Ok when accepted, the
    /// status code otherwise.
    pub fn publish(&mut self, key: &str) -> Result<(), String> {
        self.send_publish(key);
        self.until(|e| match e {
            ClientSessionEvent::PublishRequestAccepted => Some(Ok(())),
            ClientSessionEvent::UnhandleableOnStatusCode { code } => Some(Err(code.clone())),
            _ => None,
        })
    }

    /// A `publish` command on a stream that was never created.
    pub fn publish_without_create_stream(&mut self, key: &str) {
        let message = RtmpMessage::Amf0Command {
            command_name: "publish".into(),
            transaction_id: 0.0,
            command_object: Amf0Value::Null,
            additional_arguments: vec![
                Amf0Value::Utf8String(key.into()),
                Amf0Value::Utf8String("live".into()),
            ],
        };
        let payload = message
            .into_message_payload(RtmpTimestamp::new(0), 1)
            .expect("payload");
        let packet = ChunkSerializer::new()
            .serialize(&payload, true, false)
            .expect("chunk");
        self.stream.write_all(&packet.bytes).expect("send");
    }

    /// Ends the connection with a reset (SO_LINGER 0), as a network glitch does.
    pub fn reset(self) {
        reset(self.stream);
    }

    /// Waits until the server closes the connection; false if it did not
    /// within `timeout`.
    pub fn closed_within(mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        self.stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        while Instant::now() < deadline {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
                Err(_) => return true,
            }
        }
        false
    }
}

/// Closes `stream` with a TCP reset instead of a FIN.
pub fn reset(stream: TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket and a correctly sized option value.
    let rc = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER");
    drop(stream);
}
