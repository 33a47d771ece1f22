//! A raw RTMP publisher driven step by step, for the ways a publish can go
//! wrong that real encoders only meet by accident: a connection reset right
//! after `publish` or after the accept, a `publish` without `createStream`,
//! a close in the middle of the handshake, a client that trickles or never
//! reads. rml_rtmp builds the handshake and the messages; the test decides
//! what to send, when, and how to leave (a reset, as a network glitch does).

use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::messages::RtmpMessage;
use rml_rtmp::rml_amf0::Amf0Value;
use rml_rtmp::time::RtmpTimestamp;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A raw RTMP client driven step by step.
pub struct RawClient {
    pub stream: TcpStream,
    serializer: ChunkSerializer,
    pub received: Vec<u8>,
    /// RTMP messages' bytes written so far (after the handshake).
    pub sent: usize,
}

impl RawClient {
    pub fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        RawClient {
            stream,
            serializer: ChunkSerializer::new(),
            received: Vec::new(),
            sent: 0,
        }
    }

    pub fn handshake(&mut self) {
        let mut handshake = Handshake::new(PeerType::Client);
        let c0c1 = handshake.generate_outbound_p0_and_p1().expect("c0c1");
        self.stream.write_all(&c0c1).expect("send c0c1");
        let mut buf = [0u8; 4096];
        loop {
            let n = self.stream.read(&mut buf).expect("read handshake");
            assert!(n > 0, "server closed during the handshake");
            match handshake.process_bytes(&buf[..n]).expect("handshake") {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    self.stream.write_all(&response_bytes).expect("send");
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    self.stream.write_all(&response_bytes).expect("send c2");
                    self.received.extend(remaining_bytes);
                    return;
                }
            }
        }
    }

    pub fn send(
        &mut self,
        message: RtmpMessage,
        timestamp: u32,
        stream_id: u32,
    ) -> std::io::Result<()> {
        let payload = message
            .into_message_payload(RtmpTimestamp::new(timestamp), stream_id)
            .expect("payload");
        let packet = self
            .serializer
            .serialize(&payload, false, false)
            .expect("serialize");
        self.stream.write_all(&packet.bytes)?;
        self.sent += packet.bytes.len();
        Ok(())
    }

    pub fn command(
        &mut self,
        name: &str,
        txn: f64,
        object: Amf0Value,
        args: Vec<Amf0Value>,
        stream_id: u32,
    ) -> std::io::Result<()> {
        self.send(
            RtmpMessage::Amf0Command {
                command_name: name.into(),
                transaction_id: txn,
                command_object: object,
                additional_arguments: args,
            },
            0,
            stream_id,
        )
    }

    pub fn connect_app(&mut self, app: &str) -> std::io::Result<()> {
        let mut props = HashMap::new();
        props.insert("app".to_string(), Amf0Value::Utf8String(app.into()));
        props.insert(
            "type".to_string(),
            Amf0Value::Utf8String("nonprivate".into()),
        );
        props.insert(
            "tcUrl".to_string(),
            Amf0Value::Utf8String(format!("rtmp://127.0.0.1/{app}")),
        );
        self.command("connect", 1.0, Amf0Value::Object(props), vec![], 0)
    }

    pub fn create_stream(&mut self) -> std::io::Result<()> {
        self.command("createStream", 2.0, Amf0Value::Null, vec![], 0)
    }

    pub fn publish(&mut self, key: &str, stream_id: u32) -> std::io::Result<()> {
        self.command(
            "publish",
            3.0,
            Amf0Value::Null,
            vec![
                Amf0Value::Utf8String(key.into()),
                Amf0Value::Utf8String("live".into()),
            ],
            stream_id,
        )
    }

    /// connect, createStream (stream 1) and publish `key`. The server
    /// answers `connect` after reading it, so the client waits for that (as
    /// real publishers do) before going on.
    pub fn start_publish(&mut self, key: &str) {
        self.handshake();
        self.connect_app("live").expect("connect");
        assert!(self.wait_for(b"NetConnection.Connect.Success"), "connected");
        self.create_stream().expect("createStream");
        self.publish(key, 1).expect("publish");
    }

    /// Reads until what the server sent contains `needle` (true) or the
    /// connection ends or times out (false).
    pub fn wait_for(&mut self, needle: &[u8]) -> bool {
        let mut buf = [0u8; 4096];
        loop {
            if self.received.windows(needle.len()).any(|w| w == needle) {
                return true;
            }
            match self.stream.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => self.received.extend_from_slice(&buf[..n]),
            }
        }
    }

    /// Closes with a TCP reset (SO_LINGER 0) instead of a FIN.
    pub fn reset(self) {
        socket2::SockRef::from(&self.stream)
            .set_linger(Some(Duration::ZERO))
            .expect("linger");
        drop(self.stream);
    }
}

impl RawClient {
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
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => return true,
            }
        }
        false
    }
}
