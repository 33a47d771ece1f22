//! `whipingresssrc`: a live source that takes one WHIP publish (RFC 9725)
//! on its `stream-key`, from browsers, OBS or any WHIP client, and gives the
//! client's encoded media as it came (no decoding).
//!
//! A bin: each of the client's tracks goes through an internal `appsrc`
//! (stamped from RTP time: the first frame at its arrival's running time,
//! the next ones by their RTP distance) and, for H.264, `h264parse`; the
//! sometimes pads of the input contract ([`crate::input`]) are `video`
//! (`video/x-h264, stream-format=byte-stream, alignment=au` with width and
//! height from the SPS, or `video/x-vp8` with width and height from the
//! first keyframe) and `audio` (`audio/x-opus`), added once their caps are
//! known, then `no-more-pads`. A simulcast client (several rids on its
//! video m-line) gets one pad `video_{rid}` per encoding instead of
//! `video`, each with its own size: the layers of one track, as they came.
//! The frame rate measured from RTP time goes into the video caps after
//! the first second (VP8 carries none).
//!
//! Upstream force-key-unit events on a video pad (livekitsink's room
//! keyframe requests) become PLI to the client for that pad's rid. When the session ends (DELETE on its
//! resource, DTLS close, ICE consent lost, 15 s of silence) every pad gets
//! EOS. Several elements share one HTTP listener per port
//! ([`crate::whip::listener`]); a wrong or refused key is answered over
//! HTTP (404 / 403 / 409) before any ICE or DTLS.
//!
//! Bus messages of the input contract: `ingress-publish-started` (input
//! `whip`, peer; key when `stream-key` is empty), `ingress-input-stats`,
//! `ingress-publish-stopped` (reason).

use gst::glib;
use gst::prelude::*;

mod framerate;
mod imp;

glib::wrapper! {
    pub struct WhipIngressSrc(ObjectSubclass<imp::WhipIngressSrc>) @extends gst::Bin, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "whipingresssrc",
        gst::Rank::NONE,
        WhipIngressSrc::static_type(),
    )
}
