//! The RTMP server core beneath `rtmpingresssrc`: the protocol as a sans-IO
//! session ([`session`]), FLV tag parsing ([`flv`]), timestamp extension
//! ([`clock`]) and mapping ([`timestamps`]), the shared listener that
//! dispatches publishes by stream key ([`listener`]) with its bounds on
//! connections that have not published yet ([`admission`]), and the one way
//! stream keys are written in logs ([`redact`]). No GStreamer types live here.

pub mod admission;
pub mod clock;
pub mod flv;
pub mod listener;
pub mod redact;
pub mod session;
pub mod timestamps;
