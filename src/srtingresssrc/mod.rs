//! `srtingresssrc`: a live source that is an SRT listener, accepting one
//! publish (MPEG-TS) on its `stream-key`, read from the caller's `streamid`
//! (`KEY` or `#!::r=KEY[,m=publish,...]`).
//!
//! A bin: the caller's bytes go through an internal `appsrc` (live, stamped
//! on arrival) into `tsdemux`; the first video and the first audio stream,
//! each behind its parser (h264parse, h265parse, aacparse, opusparse, ...),
//! become the sometimes pads `video` and `audio` of the input contract
//! ([`crate::input`]) once their caps are known; other streams go to a
//! `fakesink`. When the caller leaves, every pad gets EOS.
//!
//! With `reconnect-grace` (and `stream-key` set) a caller that leaves once
//! media flows may come back within that many seconds: the pads stay
//! without EOS, and the returning caller's MPEG-TS, whose clock, continuity
//! counters and tables start afresh, gets an appsrc, tsdemux and parsers of
//! its own, linked to the same pads; downstream sees one stream (the first
//! caller's stream-start and segment, timestamps going on in running time
//! after the gap) and video from the new caller's first keyframe.
//!
//! Several elements in one process share one listener per port; a wrong,
//! busy or refused key gets an SRT rejection code before any media flows.
//! A caller that brings no audio or video within 15 s is ended with an error.
//! Logs name stream keys only as `key#<8 hex of SHA-256>/<len>`.
//!
//! Bus messages (element messages) of the input contract:
//! `ingress-publish-started` (input `srt`, peer; key when `stream-key` is
//! empty), `ingress-input-stats` (bytes, video-bitrate, audio-bitrate in bit/s
//! after parsing), `ingress-publish-stopped` (reason); with a grace period
//! `ingress-publish-paused` (reason, grace) when the caller left and
//! `ingress-publish-resumed` (peer) when one is back.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct SrtIngressSrc(ObjectSubclass<imp::SrtIngressSrc>) @extends gst::Bin, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "srtingresssrc",
        gst::Rank::NONE,
        SrtIngressSrc::static_type(),
    )
}
