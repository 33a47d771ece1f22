//! The RTMP server core beneath `rtmpingresssrc`: the protocol as a sans-IO
//! session ([`session`]), FLV tag parsing ([`flv`]), timestamp extension
//! ([`clock`]), and the shared listener that dispatches publishes by stream key
//! ([`listener`]). No GStreamer types live here.

pub mod clock;
pub mod flv;
pub mod listener;
pub mod session;
