//! One RTMP server connection as a sans-IO state machine on `rml_rtmp`: fed the
//! bytes the peer sent, it returns the bytes to answer and what happened
//! (a publish request, metadata, media). The IO loop decides on publishes.

use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult, StreamMetadata,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

/// Largest chunk size a client may set: the largest RTMP message (24-bit length).
pub const MAX_CHUNK_SIZE: u32 = 0x00ff_ffff;
/// Bytes a client may send before its publish is accepted: connect and publish
/// commands are small, so more than this is not a publisher.
pub const MAX_BYTES_BEFORE_PUBLISH: usize = 256 * 1024;

/// What the session asks of its IO loop.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    /// Bytes for the peer.
    Send(Vec<u8>),
    /// The peer wants to publish `key` on application `app`: answer with
    /// [`Session::accept_publish`] or [`Session::reject_publish`].
    PublishRequested { app: String, key: String },
    /// `@setDataFrame onMetaData`.
    Metadata(StreamMetadata),
    /// An FLV video tag body; `timestamp` in milliseconds (RTMP's 32-bit clock).
    Video { timestamp: u32, data: Bytes },
    /// An FLV audio tag body.
    Audio { timestamp: u32, data: Bytes },
    /// The peer stopped publishing (deleteStream / FCUnpublish).
    PublishFinished,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SessionError {
    #[error("RTMP handshake failed: {0}")]
    Handshake(String),
    #[error("RTMP protocol error: {0}")]
    Protocol(String),
    #[error("chunk size {0} is larger than the largest RTMP message")]
    ChunkSizeTooLarge(u32),
    #[error("more than {MAX_BYTES_BEFORE_PUBLISH} bytes before publishing")]
    TooMuchBeforePublish,
    #[error("no publish request is waiting for an answer")]
    NoPendingPublish,
}

enum Stage {
    Handshaking(Box<Handshake>),
    Connected(Box<ServerSession>),
    Failed,
}

/// A server connection's protocol state.
pub struct Session {
    stage: Stage,
    pending_publish: Option<u32>,
    publishing: bool,
    bytes_before_publish: usize,
}

impl Default for Session {
    fn default() -> Self {
        Self::new()
    }
}

thread_local! {
    static IN_GUARD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether this thread is inside [`guarded`] rml_rtmp code, where a panic is
/// contained: lets a fuzzer's panic hook tell those from panics of our own.
pub fn in_guarded_parser() -> bool {
    IN_GUARD.with(|g| g.get())
}

/// Runs rml_rtmp code, which must not take the connection's task down with it.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, SessionError> {
    IN_GUARD.with(|g| g.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    IN_GUARD.with(|g| g.set(false));
    result.map_err(|_| SessionError::Protocol(format!("malformed input broke the {what}")))
}

impl Session {
    pub fn new() -> Self {
        Session {
            stage: Stage::Handshaking(Box::new(Handshake::new(PeerType::Server))),
            pending_publish: None,
            publishing: false,
            bytes_before_publish: 0,
        }
    }

    /// Whether a publish was accepted and media flows.
    pub fn is_publishing(&self) -> bool {
        self.publishing
    }

    /// Feeds bytes from the peer.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Output>, SessionError> {
        if !self.publishing {
            self.bytes_before_publish += bytes.len();
            if self.bytes_before_publish > MAX_BYTES_BEFORE_PUBLISH {
                return Err(SessionError::TooMuchBeforePublish);
            }
        }
        let result = self.feed_inner(bytes);
        if result.is_err() {
            self.stage = Stage::Failed;
        }
        result
    }

    fn feed_inner(&mut self, bytes: &[u8]) -> Result<Vec<Output>, SessionError> {
        let mut outputs = Vec::new();
        match &mut self.stage {
            Stage::Failed => {
                return Err(SessionError::Protocol(
                    "the connection already failed".into(),
                ))
            }
            Stage::Connected(session) => {
                let results = guarded("RTMP session", || session.handle_input(bytes))?
                    .map_err(|e| SessionError::Protocol(e.to_string()))?;
                self.handle_results(results, &mut outputs)?;
            }
            Stage::Handshaking(handshake) => {
                let result = guarded("RTMP handshake", || handshake.process_bytes(bytes))?
                    .map_err(|e| SessionError::Handshake(e.to_string()))?;
                match result {
                    HandshakeProcessResult::InProgress { response_bytes } => {
                        if !response_bytes.is_empty() {
                            outputs.push(Output::Send(response_bytes));
                        }
                    }
                    HandshakeProcessResult::Completed {
                        response_bytes,
                        remaining_bytes,
                    } => {
                        if !response_bytes.is_empty() {
                            outputs.push(Output::Send(response_bytes));
                        }
                        let (session, results) = guarded("RTMP session", || {
                            ServerSession::new(ServerSessionConfig::new())
                        })?
                        .map_err(|e| SessionError::Protocol(e.to_string()))?;
                        self.stage = Stage::Connected(Box::new(session));
                        self.handle_results(results, &mut outputs)?;
                        if !remaining_bytes.is_empty() {
                            outputs.extend(self.feed_inner(&remaining_bytes)?);
                        }
                    }
                }
            }
        }
        Ok(outputs)
    }

    fn session(&mut self) -> Result<&mut ServerSession, SessionError> {
        match &mut self.stage {
            Stage::Connected(session) => Ok(session),
            _ => Err(SessionError::Protocol("not connected".into())),
        }
    }

    fn answer(&mut self, request_id: u32, outputs: &mut Vec<Output>) -> Result<(), SessionError> {
        let session = self.session()?;
        let results = guarded("RTMP session", || session.accept_request(request_id))?
            .map_err(|e| SessionError::Protocol(e.to_string()))?;
        self.handle_results(results, outputs)
    }

    fn handle_results(
        &mut self,
        results: Vec<ServerSessionResult>,
        outputs: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        for result in results {
            match result {
                ServerSessionResult::OutboundResponse(packet) => {
                    outputs.push(Output::Send(packet.bytes))
                }
                ServerSessionResult::RaisedEvent(event) => self.handle_event(event, outputs)?,
                ServerSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(())
    }

    fn handle_event(
        &mut self,
        event: ServerSessionEvent,
        outputs: &mut Vec<Output>,
    ) -> Result<(), SessionError> {
        match event {
            ServerSessionEvent::ClientChunkSizeChanged { new_chunk_size }
                if new_chunk_size > MAX_CHUNK_SIZE =>
            {
                return Err(SessionError::ChunkSizeTooLarge(new_chunk_size));
            }
            // Every application name is accepted here; the publish decides.
            ServerSessionEvent::ConnectionRequested { request_id, .. }
            | ServerSessionEvent::ReleaseStreamRequested { request_id, .. } => {
                self.answer(request_id, outputs)?
            }
            ServerSessionEvent::PublishStreamRequested {
                request_id,
                app_name,
                stream_key,
                ..
            } => {
                self.pending_publish = Some(request_id);
                outputs.push(Output::PublishRequested {
                    app: app_name,
                    key: stream_key,
                });
            }
            ServerSessionEvent::PublishStreamFinished { .. } if self.publishing => {
                self.publishing = false;
                outputs.push(Output::PublishFinished);
            }
            ServerSessionEvent::StreamMetadataChanged { metadata, .. } if self.publishing => {
                outputs.push(Output::Metadata(metadata));
            }
            ServerSessionEvent::VideoDataReceived {
                data, timestamp, ..
            } if self.publishing => {
                outputs.push(Output::Video {
                    timestamp: timestamp.value,
                    data,
                });
            }
            ServerSessionEvent::AudioDataReceived {
                data, timestamp, ..
            } if self.publishing => {
                outputs.push(Output::Audio {
                    timestamp: timestamp.value,
                    data,
                });
            }
            // Play requests, acknowledgements, pings, unknown commands: nothing to do
            // for an ingest-only server.
            _ => {}
        }
        Ok(())
    }

    /// Accepts the waiting publish: from now on media is reported.
    pub fn accept_publish(&mut self) -> Result<Vec<Output>, SessionError> {
        let request_id = self
            .pending_publish
            .take()
            .ok_or(SessionError::NoPendingPublish)?;
        let mut outputs = Vec::new();
        self.answer(request_id, &mut outputs)?;
        self.publishing = true;
        Ok(outputs)
    }

    /// Refuses the waiting publish with an RTMP error status such as
    /// `NetStream.Publish.BadName`; the caller closes the connection after sending.
    pub fn reject_publish(
        &mut self,
        code: &str,
        description: &str,
    ) -> Result<Vec<Output>, SessionError> {
        let request_id = self
            .pending_publish
            .take()
            .ok_or(SessionError::NoPendingPublish)?;
        let session = self.session()?;
        let results = guarded("RTMP session", || {
            session.reject_request(request_id, code, description)
        })?
        .map_err(|e| SessionError::Protocol(e.to_string()))?;
        let mut outputs = Vec::new();
        self.handle_results(results, &mut outputs)?;
        Ok(outputs)
    }
}

/// Feeds a fuzz input to a new session the way the `rtmp_session` fuzz target
/// does (it calls this): a valid C0+C1 first when the first byte is odd, so
/// the fuzzer reaches the chunk stream; reads of `1 + data[1]` bytes; a publish
/// accepted when asked. Returns the first error.
#[doc(hidden)]
pub fn replay_fuzz_input(data: &[u8]) -> Result<(), SessionError> {
    let mut input = Vec::new();
    if data.first().is_some_and(|b| b & 1 == 1) {
        input.push(3u8);
        input.extend(std::iter::repeat_n(0u8, 1536));
    }
    input.extend_from_slice(data);
    let mut s = Session::new();
    for piece in input.chunks(1 + usize::from(data.get(1).copied().unwrap_or(0))) {
        for output in s.feed(piece)? {
            if let Output::PublishRequested { .. } = output {
                s.accept_publish()?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_handshake_is_an_error_not_a_panic() {
        let mut s = Session::new();
        // Version byte 0x42 is not RTMP.
        let result = s.feed(&[0x42; 1537]);
        assert!(
            matches!(result, Err(SessionError::Handshake(_))),
            "{result:?}"
        );
        assert!(s.feed(&[0]).is_err(), "a failed session stays failed");
    }

    #[test]
    fn truncated_handshake_waits_for_more() {
        let mut s = Session::new();
        let result = s.feed(&[3, 0, 0]).expect("partial c0c1 is fine");
        assert!(result.iter().all(|o| matches!(o, Output::Send(_))));
    }

    #[test]
    fn floods_before_publish_are_cut_off() {
        let mut s = Session::new();
        let mut fed = 0;
        let chunk = [3u8; 4096];
        let mut last = Ok(Vec::new());
        while fed <= MAX_BYTES_BEFORE_PUBLISH && last.is_ok() {
            last = s.feed(&chunk);
            fed += chunk.len();
        }
        assert!(last.is_err());
    }

    /// Found by the fuzzer: a chunk header that shrinks a message below what
    /// was already received makes rml_rtmp 0.8's deserializer subtract past zero
    /// (a panic with overflow checks). The session turns it into an error.
    /// Inputs the fuzzer found that panic inside rml_rtmp 0.8: a message length
    /// smaller than the bytes already gathered (deserializer.rs, an overflow
    /// panic) and an AMF0 command payload shorter than it slices
    /// (amf0_command.rs). The session turns each panic into an error.
    #[test]
    fn fuzzer_found_rml_rtmp_panics_are_errors() {
        for (name, data) in [
            (
                "chunk-length-underflow",
                &include_bytes!("testdata/chunk-length-underflow.bin")[..],
            ),
            (
                "amf0-command-short-payload",
                &include_bytes!("testdata/amf0-command-short-payload.bin")[..],
            ),
        ] {
            let result = replay_fuzz_input(data);
            assert!(
                matches!(&result, Err(SessionError::Protocol(m)) if m.contains("malformed input")),
                "{name}: {result:?}"
            );
        }
    }

    #[test]
    fn answering_without_a_request_is_an_error() {
        let mut s = Session::new();
        assert_eq!(s.accept_publish(), Err(SessionError::NoPendingPublish));
    }
}
