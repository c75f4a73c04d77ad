//! Native request frames: decoding arbitrary bytes never panics, consumes
//! only whole frames, every decoded request re-encodes to a frame that
//! decodes to the same request, and the short way for plain GETs and SETs
//! (`decode_get_set`) agrees with the general way on every frame it takes.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use net::native::{decode_get_set, decode_request, put_request, KeyOpWire, Request, RequestBody};
use net::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { frame_max_bytes: 1 << 20, ..Limits::default() };
    let mut buf = BytesMut::from(data);
    // Bounded: each round consumes at least one 10-byte frame or stops.
    for _ in 0..data.len() / 10 + 1 {
        let before = buf.len();
        let short = decode_get_set(&buf, &limits).map(|g| {
            let key = Bytes::copy_from_slice(&buf[g.key.clone()]);
            let body = if g.set {
                KeyOpWire::Set { key, value: Bytes::copy_from_slice(&buf[g.value.clone()]), ttl_ms: 0, flags: 0 }
            } else {
                KeyOpWire::Get(key)
            };
            (Request { id: g.id, body: RequestBody::Key(body) }, g.end)
        });
        match decode_request(&mut buf, &limits) {
            Ok(Some(request)) => {
                assert!(buf.len() < before);
                if let Some((expected, end)) = &short {
                    assert_eq!(&request, expected, "the short way read another request");
                    assert_eq!(before - buf.len(), *end, "the short way read another length");
                }
                let mut again = BytesMut::new();
                put_request(&mut again, request.id, &request.body);
                let decoded = decode_request(&mut again, &limits).expect("re-encoded frame decodes").expect("complete");
                assert_eq!(decoded, request);
            }
            Ok(None) | Err(_) => {
                assert!(short.is_none(), "the short way took a frame the general way does not");
                break;
            }
        }
    }
});
