//! RESP replies (the client side used by `ringkv bench`): never panics,
//! nesting is bounded, incomplete input consumes nothing.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use net::resp::parse_reply;
use net::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { frame_max_bytes: 1 << 20, args_max: 1 << 16, ..Limits::default() };
    let mut buf = BytesMut::from(data);
    for _ in 0..data.len() + 1 {
        let before = buf.len();
        match parse_reply(&mut buf, &limits) {
            Ok(Some(_)) => assert!(buf.len() < before),
            Ok(None) => {
                assert_eq!(buf.len(), before);
                break;
            }
            Err(_) => break,
        }
    }
});
