//! Records: the unit of the log. Layout (little-endian), drawn in
//! docs/format.md:
//!
//! ```text
//!  0        4              (varint)      (varint)     [8, if EXPIRES]
//! +--------+--------------+-------------+------------+-----+-------+---------+
//! | crc32  | meta         | value_len   | expires_ms | key | value | padding |
//! +--------+--------------+-------------+------------+-----+-------+---------+
//! meta = key_len << 2 | EXPIRES << 1 | TOMBSTONE
//! crc32 = CRC-32 of every byte from `meta` to the end of `value`, XOR the
//! segment's checksum key.
//! ```
//!
//! The checksum key (`segment::crc_key`) differs for every segment a file
//! has been, so the records a recycled file still holds from an earlier
//! life never pass for records of its new one.
//!
//! Records start on 8-byte boundaries so that the index can address them in
//! 8-byte units; padding bytes are zero. A 16-byte key with a 32-byte value
//! takes 6 header bytes and 2 padding bytes: 56 bytes in all.

use crate::crc;

/// Every record starts at a multiple of this.
pub const RECORD_ALIGN_BYTES: usize = 8;
/// Longest key a record can hold. Keys are compared often and hashed on
/// every request; Redis allows more, memcached allows 250.
pub const KEY_LEN_MAX_BYTES: usize = 64 * 1024;
/// Bytes of the CRC field that opens every record.
const CRC_BYTES: usize = 4;
/// Longest varint we accept: five 7-bit groups hold any u32.
const VARINT_MAX_BYTES: usize = 5;
/// Smallest header: crc, a one-byte meta and a one-byte value length.
pub const HEADER_MIN_BYTES: usize = CRC_BYTES + 2;
const _: () = assert!(HEADER_MIN_BYTES == 6);
/// Largest header: crc, two five-byte varints and the expiry.
pub const HEADER_MAX_BYTES: usize = CRC_BYTES + 2 * VARINT_MAX_BYTES + 8;
const _: () = assert!(HEADER_MAX_BYTES == 22);
/// What this build writes after the checksum is shorter: the key length's
/// varint takes three bytes at most, so the fields fit a 16-byte word
/// (`RecordSpec::header_word`).
const _: () = assert!(varint_len((KEY_LEN_MAX_BYTES as u32) << 2 | 3) + VARINT_MAX_BYTES + 8 <= 16);

/// Values from this long have their checksum taken before they are copied
/// into the log (`RecordSpec::encode_into`).
const CRC_FROM_SOURCE_MIN_BYTES: usize = 256;

const FLAG_TOMBSTONE: u32 = 1;
const FLAG_EXPIRES: u32 = 2;

/// A record as the writer describes it.
#[derive(Debug, Clone, Copy)]
pub struct RecordSpec<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// Absolute expiry in Unix milliseconds.
    pub expires_at_ms: Option<u64>,
    pub tombstone: bool,
}

impl RecordSpec<'_> {
    /// Bytes this record occupies in the log, padding included.
    pub fn encoded_len(&self) -> usize {
        align_up(CRC_BYTES + self.header_word().1 + self.key.len() + self.value.len())
    }

    fn meta(&self) -> u32 {
        let mut meta = (self.key.len() as u32) << 2;
        if self.tombstone {
            meta |= FLAG_TOMBSTONE;
        }
        if self.expires_at_ms.is_some() {
            meta |= FLAG_EXPIRES;
        }
        meta
    }

    /// The header's fields after the checksum, as the low bytes of a
    /// little-endian word, and how many bytes they take (at most 16).
    fn header_word(&self) -> (u128, usize) {
        let (meta, meta_len) = varint_word(self.meta());
        let (value_len, value_len_len) = varint_word(self.value.len() as u32);
        let mut word = u128::from(meta) | u128::from(value_len) << (8 * meta_len);
        let mut len = meta_len + value_len_len;
        if let Some(ms) = self.expires_at_ms {
            word |= u128::from(ms) << (8 * len);
            len += 8;
        }
        (word, len)
    }

    /// Writes the record into `out`, which must be exactly
    /// `encoded_len()` bytes, its checksum keyed with `crc_key`.
    ///
    /// A long value's checksum is taken from bytes in the cache, before
    /// they are copied out: the caller's key and value, and the header
    /// still in registers (`crc::hash_record`). `out` is log memory whose
    /// lines may still be on their way in, and a checksum read back from
    /// it waited for them: for the value that was 25% of a 1 KiB set in
    /// `perf` (sets of 1 KiB interleaved with the `HashMap`'s went from
    /// 0.442x of its rate to 0.464x-0.484x, docs/benchmarks.md). A short
    /// one is checked in place with the header, in one pass: taken in
    /// three pieces, 32-byte SETs served 1% fewer operations per CPU-s at
    /// pipeline depth 16.
    pub fn encode_into(&self, out: &mut [u8], crc_key: u32) {
        assert_eq!(out.len(), self.encoded_len(), "record buffer size");
        assert!(self.key.len() <= KEY_LEN_MAX_BYTES, "key length checked by the caller");
        let (header, header_len) = self.header_word();
        let at = CRC_BYTES + header_len;
        let value_at = at + self.key.len();
        let value_end = value_at + self.value.len();
        // The whole word where the record has room for it (its bytes past
        // the header are zero, and the key, value and padding overwrite
        // them): one store instead of a copy of variable length.
        match out.get_mut(CRC_BYTES..CRC_BYTES + 16) {
            Some(word) => word.copy_from_slice(&header.to_le_bytes()),
            None => out[CRC_BYTES..at].copy_from_slice(&header.to_le_bytes()[..header_len]),
        }
        out[at..value_at].copy_from_slice(self.key);
        let crc = if self.value.len() < CRC_FROM_SOURCE_MIN_BYTES {
            out[value_at..value_end].copy_from_slice(self.value);
            crc::hash(&out[CRC_BYTES..value_end])
        } else {
            let crc = crc::hash_record(header, header_len, self.key, self.value);
            out[value_at..value_end].copy_from_slice(self.value);
            crc
        };
        out[..CRC_BYTES].copy_from_slice(&(crc ^ crc_key).to_le_bytes());
        // Padding is zero, whatever a reused mapping held there before.
        out[value_end..].fill(0);
    }
}

/// A record read back from the log. It borrows the mapping: values are
/// never copied on the engine's side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub key: &'a [u8],
    pub value: &'a [u8],
    pub expires_at_ms: Option<u64>,
    pub tombstone: bool,
    /// Bytes the record occupies, padding included.
    pub len: usize,
    /// The checksum as stored, the bytes it covers and the key of the
    /// segment it was read from, so that a record decoded unchecked (to
    /// compare keys) can be checked later without decoding it again.
    pub stored_crc: u32,
    pub covered: &'a [u8],
    pub crc_key: u32,
}

impl RecordView<'_> {
    /// True when the stored checksum matches the bytes.
    pub fn checksum_ok(&self) -> bool {
        crc::hash(self.covered) ^ self.crc_key == self.stored_crc
    }

    /// True when the record has an expiry at or before `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        matches!(self.expires_at_ms, Some(at) if at <= now_ms)
    }
}

/// Why bytes did not decode as a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The header or body runs past the end of the readable bytes.
    Truncated,
    /// A length field is impossible (over a limit, or a varint too long).
    BadLength,
    /// The bytes are complete but the checksum does not match.
    ChecksumMismatch { stored: u32, computed: u32 },
}

/// Decodes the record at the start of `buf`, a segment's bytes whose
/// checksum key is `crc_key`, checking its CRC when `verify` is set. `buf`
/// runs to the end of the readable region, so a record that would cross it
/// is `Truncated`.
pub fn decode(buf: &[u8], crc_key: u32, verify: bool) -> Result<RecordView<'_>, DecodeError> {
    let stored = u32::from_le_bytes(
        buf.get(..CRC_BYTES).ok_or(DecodeError::Truncated)?.try_into().map_err(|_| DecodeError::Truncated)?,
    );
    let mut at = CRC_BYTES;
    let meta = get_varint(buf, &mut at)?;
    let value_len = get_varint(buf, &mut at)? as usize;
    let key_len = (meta >> 2) as usize;
    if key_len > KEY_LEN_MAX_BYTES {
        return Err(DecodeError::BadLength);
    }
    let expires_at_ms = if meta & FLAG_EXPIRES != 0 {
        let bytes = buf.get(at..at + 8).ok_or(DecodeError::Truncated)?;
        at += 8;
        Some(u64::from_le_bytes(bytes.try_into().map_err(|_| DecodeError::Truncated)?))
    } else {
        None
    };
    let body_end = at.checked_add(key_len).and_then(|n| n.checked_add(value_len)).ok_or(DecodeError::BadLength)?;
    if body_end > buf.len() {
        return Err(DecodeError::Truncated);
    }
    if verify {
        let computed = crc::hash(&buf[CRC_BYTES..body_end]) ^ crc_key;
        if computed != stored {
            return Err(DecodeError::ChecksumMismatch { stored, computed });
        }
    }
    Ok(RecordView {
        key: &buf[at..at + key_len],
        value: &buf[at + key_len..body_end],
        expires_at_ms,
        tombstone: meta & FLAG_TOMBSTONE != 0,
        len: align_up(body_end),
        stored_crc: stored,
        covered: &buf[CRC_BYTES..body_end],
        crc_key,
    })
}

/// Moves an encoded record (`raw`, whole) from a segment keyed `from` to
/// one keyed `to` without computing its checksum anew: the stored CRC is
/// re-keyed, so a record damaged before the copy still fails its check
/// after it instead of being laundered under a fresh checksum.
pub fn rekey(raw: &mut [u8], from: u32, to: u32) {
    let Some(field) = raw.get_mut(..CRC_BYTES) else { return };
    let stored = u32::from_le_bytes([field[0], field[1], field[2], field[3]]);
    field.copy_from_slice(&(stored ^ from ^ to).to_le_bytes());
}

/// Rounds a byte count up to the record alignment.
pub const fn align_up(n: usize) -> usize {
    (n + RECORD_ALIGN_BYTES - 1) & !(RECORD_ALIGN_BYTES - 1)
}

const fn varint_len(mut v: u32) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// `v` as a varint, in the low bytes of a little-endian word, and its
/// length.
fn varint_word(mut v: u32) -> (u64, usize) {
    let mut word = 0u64;
    let mut len = 0;
    while v >= 0x80 {
        word |= u64::from(v as u8 | 0x80) << (8 * len);
        v >>= 7;
        len += 1;
    }
    (word | u64::from(v) << (8 * len), len + 1)
}

fn get_varint(buf: &[u8], at: &mut usize) -> Result<u32, DecodeError> {
    let mut v: u32 = 0;
    for i in 0..VARINT_MAX_BYTES {
        let b = *buf.get(*at).ok_or(DecodeError::Truncated)?;
        *at += 1;
        let group = u32::from(b & 0x7f);
        if i == VARINT_MAX_BYTES - 1 && group > 0x0f {
            return Err(DecodeError::BadLength);
        }
        v |= group << (7 * i);
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(DecodeError::BadLength)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment's checksum key, as `segment::crc_key` makes them.
    const KEY: u32 = 0x5eed_0f0e;

    fn roundtrip(spec: RecordSpec<'_>) {
        // Log memory that held something else before.
        let mut buf = vec![0xFFu8; spec.encoded_len()];
        spec.encode_into(&mut buf, KEY);
        assert_eq!(buf.len() % RECORD_ALIGN_BYTES, 0);
        let view = decode(&buf, KEY, true).expect("decodes");
        let body_end = view.covered.len() + CRC_BYTES;
        assert!(buf[body_end..].iter().all(|&b| b == 0), "padding is zero");
        assert_eq!(view.key, spec.key);
        assert_eq!(view.value, spec.value);
        assert_eq!(view.expires_at_ms, spec.expires_at_ms);
        assert_eq!(view.tombstone, spec.tombstone);
        assert_eq!(view.len, buf.len());
    }

    #[test]
    fn small_record_is_56_bytes() {
        let spec = RecordSpec { key: &[7; 16], value: &[9; 32], expires_at_ms: None, tombstone: false };
        assert_eq!(spec.encoded_len(), 56);
        roundtrip(spec);
    }

    #[test]
    fn round_trips_edge_shapes() {
        roundtrip(RecordSpec { key: b"", value: b"", expires_at_ms: None, tombstone: false });
        roundtrip(RecordSpec { key: b"k", value: b"", expires_at_ms: Some(u64::MAX), tombstone: false });
        roundtrip(RecordSpec { key: b"gone", value: b"", expires_at_ms: None, tombstone: true });
        let big_key = vec![1u8; KEY_LEN_MAX_BYTES];
        let big_value = vec![2u8; 300_000];
        roundtrip(RecordSpec { key: &big_key, value: &big_value, expires_at_ms: Some(5), tombstone: false });
    }

    #[test]
    fn round_trips_every_key_length_around_the_one_pass_checksum() {
        let key = [3u8; 80];
        let value: Vec<u8> = (0..1100u32).map(|i| (i * 7) as u8).collect();
        for key_len in 0..=key.len() {
            for value_len in [0, 1, 255, 256, 257, 1024, 1031] {
                for expires_at_ms in [None, Some(1_700_000_000_000)] {
                    let spec = RecordSpec {
                        key: &key[..key_len],
                        value: &value[..value_len],
                        expires_at_ms,
                        tombstone: false,
                    };
                    roundtrip(spec);
                }
            }
        }
    }

    #[test]
    fn zeroed_bytes_never_decode() {
        let zeros = [0u8; 64];
        assert!(matches!(decode(&zeros, KEY, true), Err(DecodeError::ChecksumMismatch { .. })));
        assert!(matches!(decode(&zeros, 0, true), Err(DecodeError::ChecksumMismatch { .. })));
    }

    #[test]
    fn a_record_passes_only_under_its_own_key() {
        let spec = RecordSpec { key: b"key", value: b"value", expires_at_ms: None, tombstone: false };
        let mut buf = vec![0u8; spec.encoded_len()];
        spec.encode_into(&mut buf, KEY);
        assert!(decode(&buf, KEY, true).is_ok());
        for other in [0, KEY ^ 1, KEY ^ 0x8000_0000, !KEY] {
            assert!(
                matches!(decode(&buf, other, true), Err(DecodeError::ChecksumMismatch { .. })),
                "passed under {other:#x}"
            );
            // Decoded unchecked (for a key comparison), it is still caught.
            assert!(!decode(&buf, other, false).expect("lengths decode").checksum_ok());
        }
    }

    #[test]
    fn rekeyed_records_pass_under_the_new_key_and_keep_their_damage() {
        let spec = RecordSpec { key: b"moved", value: &[5; 40], expires_at_ms: Some(9), tombstone: false };
        let mut buf = vec![0u8; spec.encoded_len()];
        spec.encode_into(&mut buf, KEY);
        let mut direct = vec![0u8; spec.encoded_len()];
        spec.encode_into(&mut direct, 77);
        let mut moved = buf.clone();
        rekey(&mut moved, KEY, 77);
        assert_eq!(moved, direct, "re-keying equals encoding under the new key");
        assert!(decode(&moved, 77, true).is_ok());
        assert!(decode(&moved, KEY, true).is_err());
        let mut damaged = buf.clone();
        damaged[20] ^= 4;
        rekey(&mut damaged, KEY, 77);
        assert!(decode(&damaged, 77, true).is_err(), "damage survives the move");
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let spec = RecordSpec { key: b"key", value: b"value!", expires_at_ms: Some(1234), tombstone: false };
        let mut clean = vec![0u8; spec.encoded_len()];
        spec.encode_into(&mut clean, KEY);
        let body_end = clean.len() - clean.iter().rev().take_while(|&&b| b == 0).count();
        for bit in 0..body_end * 8 {
            let mut bad = clean.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(decode(&bad, KEY, true).is_err(), "flip of bit {bit} went unnoticed");
        }
    }

    #[test]
    fn truncation_is_reported_not_panicked() {
        let spec = RecordSpec { key: b"key", value: &[3; 100], expires_at_ms: None, tombstone: false };
        let mut buf = vec![0u8; spec.encoded_len()];
        spec.encode_into(&mut buf, KEY);
        for cut in 0..buf.len() - 8 {
            assert!(decode(&buf[..cut], KEY, true).is_err());
        }
    }
}
