//! `urlingresssrc`: pulls a URL and gives the ingress pipeline its media
//! under the input contract ([`crate::input`]).
//!
//! What GStreamer can fetch, it takes: `http(s)://` files (MP4, MPEG-TS,
//! FLV, MKV, ...) and HLS playlists, `srt://` (caller), `rtsp(s)://` and
//! `rtmp(s)://`, through `urisourcebin` (souphttpsrc + hlsdemux, srtsrc,
//! rtspsrc, rtmpsrc) and one `parsebin` per stream it gives. The first video
//! and the first audio stream become the sometimes pads `video` and `audio`
//! with parsed, encoded caps; other streams are dropped. A source that is not
//! live (a file over HTTP) is paced to the clock, so a file plays at its own
//! speed, as a live input would arrive.
//!
//! Connecting is retried: a live source (`rtsp`, `srt`, `rtmp`) that cannot
//! be reached yet is tried again with a growing pause (1 s doubling to 8 s)
//! for `retry-timeout` seconds before its error is posted. A failure once
//! media flows, and any failure of a file or playlist, is posted at once.
//!
//! Bus messages (element messages, those of the input contract):
//! `ingress-publish-started` (input `url`, peer: the URL's host) when the
//! first stream appears, `ingress-input-stats` every 2 s, and
//! `ingress-publish-stopped` (reason) when every stream has ended. Then EOS
//! on every pad.

use gst::glib;
use gst::prelude::*;

mod imp;

glib::wrapper! {
    pub struct UrlIngressSrc(ObjectSubclass<imp::UrlIngressSrc>) @extends gst::Bin, gst::Element, gst::Object;
}

pub fn register(plugin: &gst::Plugin) -> Result<(), glib::BoolError> {
    gst::Element::register(
        Some(plugin),
        "urlingresssrc",
        gst::Rank::NONE,
        UrlIngressSrc::static_type(),
    )
}
