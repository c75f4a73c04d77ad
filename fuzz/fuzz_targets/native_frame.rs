//! Native request frames: decoding arbitrary bytes never panics, consumes
//! only whole frames, and every decoded request re-encodes to a frame that
//! decodes to the same request.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use net::native::{decode_request, put_request};
use net::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { frame_max_bytes: 1 << 20, ..Limits::default() };
    let mut buf = BytesMut::from(data);
    // Bounded: each round consumes at least one 10-byte frame or stops.
    for _ in 0..data.len() / 10 + 1 {
        let before = buf.len();
        match decode_request(&mut buf, &limits) {
            Ok(Some(request)) => {
                assert!(buf.len() < before);
                let mut again = BytesMut::new();
                put_request(&mut again, request.id, &request.body);
                let decoded = decode_request(&mut again, &limits).expect("re-encoded frame decodes").expect("complete");
                assert_eq!(decoded, request);
            }
            Ok(None) | Err(_) => break,
        }
    }
});
