//! WHIP push (RFC 9725): the HTTP side (offers, session resources) and the
//! WebRTC side (str0m as an ICE-lite answerer, one UDP socket per session),
//! without GStreamer types. `whipingresssrc` claims stream keys here as
//! `srtingresssrc` does on the SRT listener.
//!
//! - [`listener`]: per-port listener: the key claims, the HTTP routes
//!   (`POST {base}/{key}` with an SDP offer, `DELETE` / `PATCH` on the
//!   session resource), a listener's own HTTP server or one mounted in the
//!   service's.
//! - [`offer`]: what an offer sends (simulcast rids) and, against the
//!   answer, which of its media has no codec the room takes.
//! - [`session`]: one WHIP session's IO loop: UDP socket, str0m, frames out
//!   to the element, keyframe requests in; its end (DELETE, DTLS close, ICE
//!   consent lost, silence).

pub mod listener;
pub mod offer;
pub mod session;
