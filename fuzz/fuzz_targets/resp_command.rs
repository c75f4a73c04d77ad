//! RESP commands (arrays and inline): never panics, never consumes a
//! partial command, a parsed command re-encodes to the same arguments, and
//! the short way for GET and SET agrees with the general parser.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use net::resp::{parse_command, parse_get_set, put_command};
use net::Limits;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { frame_max_bytes: 1 << 20, args_max: 1 << 16, ..Limits::default() };
    let mut buf = BytesMut::from(data);
    for _ in 0..data.len() + 1 {
        let before = buf.len();
        let short = parse_get_set(&buf, limits.frame_max_bytes).map(|g| {
            let mut args = vec![buf[8..11].to_vec(), buf[g.key].to_vec()];
            if g.set {
                args.push(buf[g.value].to_vec());
            }
            (args, g.end)
        });
        let parsed = parse_command(&mut buf, &limits);
        if let Some((args, end)) = short {
            let general = parsed.as_ref().ok().and_then(Option::as_ref).expect("the general parser agrees");
            assert_eq!(general.iter().map(|a| a.to_vec()).collect::<Vec<_>>(), args);
            assert_eq!(before - buf.len(), end);
        }
        match parsed {
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
