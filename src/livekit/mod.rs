//! The LiveKit client core beneath `livekitsink`: joining a room over the
//! signal connection (`livekit-signaling`), sending media over WebRTC (str0m),
//! and the track model. No GStreamer types live here.

pub mod layer_sync;
pub mod negotiation;
pub mod publisher;
pub(crate) mod session;
pub mod signalling;
pub mod stats;
pub mod token;
pub mod tracks;
pub mod trickle;
