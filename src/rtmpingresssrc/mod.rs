//! `rtmpingresssrc`: a live source that is an RTMP(S) server, accepting one
//! publish on its `stream-key`.
//!
//! Sometimes pads: `video` (`video/x-h264, stream-format=avc, alignment=au` with
//! `codec_data`; Enhanced RTMP HEVC, AV1 and VP9 with their caps) and `audio`
//! (`audio/mpeg, mpegversion=4, stream-format=raw` with `codec_data`, `rate`,
//! `channels`), added when the sequence headers arrive, then `no-more-pads`.
//! Timestamps follow the publisher's clock, mapped to running time at the first
//! frame so latency stays bounded.
//!
//! Several elements in one process share one listener per port; a wrong key
//! gets `NetStream.Publish.BadName` and a closed socket. When the publisher
//! leaves, every pad gets EOS.
//!
//! Bounds: `handshake-timeout` is one deadline for everything before an
//! accepted publish (a client trickling bytes is closed at it); an accepted
//! publish that brings no audio or video sequence header within 15 s ends with
//! an error; timestamps that leave the representable range end the publish
//! with an error. Logs name stream keys only as `key#<8 hex of SHA-256>/<len>`.
//!
//! Bus messages (element messages), those of the input contract
//! ([`crate::input`]): `ingress-publish-started` (input `rtmp`, peer, app, key),
//! `ingress-input-stats` (bytes, video-bitrate, audio-bitrate in bit/s),
//! `ingress-publish-stopped` (key, reason); and its own `rtmp-metadata`
//! (onMetaData fields).

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct RtmpIngressSrc(ObjectSubclass<imp::RtmpIngressSrc>) @extends gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "rtmpingresssrc",
        gst::Rank::NONE,
        RtmpIngressSrc::static_type(),
    )
}
