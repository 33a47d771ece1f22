//! Arbitrary bytes as an SPS NAL unit, an avcC record and an Annex B access
//! unit (what a publisher controls): a parsed SPS or an error, never a panic;
//! a parsed picture is never empty, and the eligibility checks and the watch
//! take whatever was parsed.
#![no_main]

use gstlivekitingress::passthrough::eligibility::{check, Frame, Watch};
use gstlivekitingress::passthrough::sps::Sps;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for parsed in [
        Some(Sps::parse(data)),
        Some(Sps::from_avcc(data)),
        Sps::find_in_annex_b(data),
    ]
    .into_iter()
    .flatten()
    {
        let Ok(sps) = parsed else { continue };
        assert!(sps.width > 0 && sps.height > 0);
        if let Ok(source) = check(&sps) {
            let mut watch = Watch::new(source);
            let _ = watch.frame(Frame::default(), Some(Ok(sps)));
            let _ = watch.frame(
                Frame {
                    pts: Some(u64::MAX),
                    dts: Some(0),
                    keyframe: true,
                },
                Sps::find_in_annex_b(data),
            );
        }
    }
});
