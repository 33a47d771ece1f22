//! Arbitrary FLV audio and video tag bodies: parsed or refused, never a panic.
#![no_main]

use bytes::Bytes;
use gstlivekitingress::rtmp::flv;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    let _ = flv::parse_video(&bytes);
    if let Ok(flv::AudioTag::AacConfig(config)) = flv::parse_audio(&bytes) {
        let _ = flv::aac_config_rate_channels(&config);
    }
});
