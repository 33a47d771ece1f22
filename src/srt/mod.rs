//! The SRT listener beneath `srtingresssrc`: one SRT socket per address and
//! port, shared by the elements on it, each claiming a stream key
//! ([`listener`]); the stream key read from the caller's `streamid`
//! ([`streamid`]); and the SRT rejection code for each refusal. The SRT
//! protocol itself is `srt-tokio`'s. No GStreamer types live here.

pub mod listener;
pub mod streamid;
