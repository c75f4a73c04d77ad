//! RESP commands (arrays and inline): never panics, never consumes a
//! partial command, and a parsed command re-encodes to the same arguments.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use net::resp::{parse_command, put_command};
use net::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { frame_max_bytes: 1 << 20, args_max: 1 << 16, ..Limits::default() };
    let mut buf = BytesMut::from(data);
    for _ in 0..data.len() + 1 {
        let before = buf.len();
        match parse_command(&mut buf, &limits) {
            Ok(Some(args)) => {
                assert!(buf.len() < before, "a parsed command consumes bytes");
                if !args.is_empty() {
                    let refs: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                    let mut again = BytesMut::new();
                    put_command(&mut again, &refs);
                    let parsed = parse_command(&mut again, &limits).expect("re-encoded").expect("complete");
                    assert_eq!(parsed, args);
                }
            }
            Ok(None) => {
                assert_eq!(buf.len(), before, "an incomplete command consumes nothing");
                break;
            }
            Err(_) => break,
        }
    }
});
