//! Decoding an input stream with plain elements chosen from the registry: a
//! parser (when one takes the caps) and the best-ranked decoder.
//!
//! Why not decodebin: the ingress adds its branches from the source's streaming
//! thread while the pipeline plays, and decodebin prerolls asynchronously; a
//! playing live pipeline that gets such a child loses its state and waits for a
//! preroll the other branch may never deliver (seen as a stalled second branch).
//! A parser and a decoder change state synchronously.

use gst::prelude::*;

fn best<'a>(
    kind: gst::ElementFactoryType,
    accepts: impl Fn(&gst::ElementFactory) -> bool + 'a,
) -> Option<gst::ElementFactory> {
    let mut factories: Vec<gst::ElementFactory> =
        gst::ElementFactory::factories_with_type(kind, gst::Rank::MARGINAL)
            .into_iter()
            .filter(|f| accepts(f))
            .collect();
    factories.sort_by_key(|f| std::cmp::Reverse(f.rank()));
    factories.into_iter().next()
}

/// The caps with the fields that only say how the stream is framed removed, so
/// a decoder behind a parser can be found.
fn unframed(caps: &gst::Caps) -> gst::Caps {
    let mut loose = caps.copy();
    if let Some(s) = loose.make_mut().structure_mut(0) {
        s.remove_fields([
            "stream-format",
            "alignment",
            "codec_data",
            "parsed",
            "framed",
        ]);
    }
    loose
}

/// Parser and decoder factories for `caps`, or why there are none.
pub fn decoder_factories(caps: &gst::Caps) -> Result<Vec<gst::ElementFactory>, String> {
    let loose = unframed(caps);
    let decoder = best(gst::ElementFactoryType::DECODER, |f| {
        f.can_sink_any_caps(&loose)
    })
    .ok_or_else(|| {
        let name = caps
            .structure(0)
            .map(|s| s.name().to_string())
            .unwrap_or_default();
        format!("no decoder for {name} is installed")
    })?;
    let parser = best(gst::ElementFactoryType::PARSER, |f| {
        f.can_sink_any_caps(caps)
    });
    Ok(parser.into_iter().chain(std::iter::once(decoder)).collect())
}

/// The best-ranked parser that takes `caps`, created (a demuxer's pads made
/// into the input contract's parsed pads), or `None` when there is none.
pub fn parser_for(caps: &gst::Caps) -> Option<gst::Element> {
    best(gst::ElementFactoryType::PARSER, |f| {
        f.can_sink_any_caps(caps)
    })?
    .create()
    .build()
    .ok()
}

/// Parser and decoder elements for `caps`, not yet linked.
pub fn decoder_chain(caps: &gst::Caps) -> Result<Vec<gst::Element>, String> {
    decoder_factories(caps)?
        .iter()
        .map(|f| {
            f.create()
                .build()
                .map_err(|e| format!("cannot create {}: {e}", f.name()))
        })
        .collect()
}
