//! Feeds arbitrary bytes to the client-frame decoder, in both encodings.
//!
//! The decoder sees every frame a client sends before anything else does, so it must
//! never panic, loop or blow the stack on any input: it either yields a request or a
//! `BAD_REQUEST` error. A decoded request must also survive a round trip through its
//! own encoding, which catches messages the decoder accepts but could never have been
//! produced by a well-formed client.

#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_protocol::{Encoding, decode_client};

fuzz_target!(|data: &[u8]| {
    for encoding in [Encoding::Json, Encoding::MsgPack] {
        if let Ok(req) = decode_client(data, encoding) {
            // What was decoded can be encoded again and means the same thing.
            let Ok(bytes) = switchboard_protocol::encode(&req.msg, encoding) else {
                continue;
            };
            let again = decode_client(&bytes, encoding);
            assert!(
                again.is_ok(),
                "re-encoded request does not decode: {again:?}"
            );
        }
    }
});
