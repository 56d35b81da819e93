//! The bridge's frame and handshake decoders on arbitrary bytes from the network.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shmport_zenoh::frame::{self, Frame, Hello};

fuzz_target!(|data: &[u8]| {
    let (frames, _) = frame::decode_all(data);
    let mut claimed = 0usize;
    for f in &frames {
        if let Frame::Msg(h) = f {
            assert!(h.inline.len() <= h.archive_len as usize);
            claimed += h.inline.len();
        }
        if let Frame::Chunk { bytes, .. } = f {
            assert!(!bytes.is_empty());
            claimed += bytes.len();
        }
    }
    assert!(claimed <= data.len());
    let _ = Hello::decode(data);
});
