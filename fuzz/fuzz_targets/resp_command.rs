//! RESP commands (arrays and inline): never panics, never consumes a
//! partial command, a parsed command re-encodes to the same arguments, the
//! short way for GET and SET agrees with the general parser, and bytes fed
//! in pieces (the parser resuming where it stopped) parse as they do whole.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use net::resp::{parse_command, parse_command_resuming, parse_get_set, put_command, Progress};
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
    // The same bytes in pieces of 1 to 16 bytes.
    let whole = {
        let mut buf = BytesMut::from(data);
        let mut out = Vec::new();
        while let Ok(Some(args)) = parse_command(&mut buf, &limits) {
            out.push(args);
        }
        out
    };
    let step = 1 + data.first().map_or(0, |&b| b as usize % 16);
    let mut buf = BytesMut::new();
    let mut progress = Progress::default();
    let mut pieces = Vec::new();
    'feed: for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match parse_command_resuming(&mut buf, &limits, &mut progress) {
                Ok(Some(args)) => pieces.push(args),
                Ok(None) => break,
                Err(_) => break 'feed,
            }
        }
    }
    assert_eq!(&pieces[..], &whole[..pieces.len().min(whole.len())], "pieces parse as the whole does");
});
