//! Log records read back from disk: decoding arbitrary bytes never panics,
//! a record that decodes with its CRC checked lies within the input, and
//! re-encoding it under the same checksum key gives the same checksum.
//! The first four input bytes are the segment's checksum key.
#![no_main]

use engine::record::{decode, RecordSpec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((key, data)) = input.split_first_chunk::<4>() else { return };
    let key = u32::from_le_bytes(*key);
    if let Ok(view) = decode(data, key, true) {
        let spec = RecordSpec { key: view.key, value: view.value, expires_at_ms: view.expires_at_ms, tombstone: view.tombstone };
        let mut again = vec![0u8; spec.encoded_len()];
        spec.encode_into(&mut again, key);
        assert_eq!(again.len(), view.len);
        let unpadded = data.len().min(view.len);
        assert_eq!(&again[..unpadded.min(again.len())][..4], &data[..4], "same checksum");
    }
    let _ = decode(data, key, false);
});
