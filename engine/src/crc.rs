//! The records' checksum: CRC-32 as IEEE 802.3 defines it (the polynomial,
//! bit order and values of `crc32fast`, which the format names).
//!
//! Inputs of [`WIDE_MIN_BYTES`] and more, on an x86-64 CPU with AVX-512
//! (F, BW, VL) and VPCLMULQDQ, take a kernel written here; everything else
//! goes to `crc32fast`. The values are the same either way (the tests
//! below compare every length up to 1,200 bytes and random inputs to
//! 64 KiB).
//!
//! Why by hand: a GET checks the CRC of a record that is usually cold, and
//! for 256 B to 2 KiB `crc32fast` runs an AVX2 kernel of eight 128-bit
//! streams with a serial collapse, some 200 µops that sit in the
//! out-of-order window until the record's lines arrive, so the next
//! lookups queue behind them. This one folds four 512-bit accumulators
//! (64 µops for 1 KiB) and collapses them in three steps. A probe of
//! random 1 KiB lookups in a 1 GiB buffer, CRC then copy, on this
//! project's Xeon: 164-173 ns a lookup with `crc32fast`, 98-102 ns with
//! this kernel, 63-75 ns for the copy alone; in cache, 1,050 bytes take
//! 17.1 ns against 24.8 ns (docs/benchmarks.md, session 11).

/// Shortest input the wide kernel takes: it needs four 64-byte blocks
/// (the first may be partial), and below about 300 bytes its fixed cost
/// (the collapse and the final reduction) outweighs its speed in cache.
pub const WIDE_MIN_BYTES: usize = 256;

/// The CRC-32 of `bytes`.
pub fn hash(bytes: &[u8]) -> u32 {
    update(0, bytes)
}

/// The CRC-32 of some bytes `a` followed by `bytes`, where `crc` is the
/// CRC-32 of `a` (0 for none).
pub fn update(crc: u32, bytes: &[u8]) -> u32 {
    #[cfg(target_arch = "x86_64")]
    if bytes.len() >= WIDE_MIN_BYTES && wide::detected() {
        // SAFETY: `detected` found every feature the kernel is compiled
        // with, and the input is long enough for it.
        return unsafe { wide::update(crc, bytes) };
    }
    let mut hasher = crc32fast::Hasher::new_with_initial(crc);
    hasher.update(bytes);
    hasher.finalize()
}

/// The CRC-32 of a record's header (the low `header_len` bytes of
/// `header`, little-endian), key and value, in one pass where the wide
/// kernel takes them (a header and key of at most [`HEAD_MAX_BYTES`], a
/// long value). Taken apart, the header's and key's CRC went to
/// `crc32fast`'s tables, whose last bytes are a chain of dependent lookups
/// in tables that a 1 KiB append pushes out of L1: 7-9% of a 1 KiB set in
/// `perf`, for some 20 bytes.
pub fn hash_record(header: u128, header_len: usize, key: &[u8], value: &[u8]) -> u32 {
    assert!(header_len <= 16, "a header of at most 16 bytes");
    #[cfg(target_arch = "x86_64")]
    if header_len + key.len() <= HEAD_MAX_BYTES && value.len() >= WIDE_MIN_BYTES && wide::record_detected() {
        // SAFETY: `record_detected` found every feature the kernel is
        // compiled with, and the lengths are what it asks.
        return unsafe { wide::record(!0, header, header_len, key, value) };
    }
    update(update(hash(&header.to_le_bytes()[..header_len]), key), value)
}

/// Longest header and key `hash_record` takes in one pass with the value.
pub const HEAD_MAX_BYTES: usize = 64;

#[cfg(target_arch = "x86_64")]
mod wide {
    //! The fold, after Intel's "Fast CRC Computation for Generic
    //! Polynomials Using PCLMULQDQ" (Gopal et al., 2009), in 512-bit
    //! registers. In the bit-reflected form a CRC-32 uses, a 128-bit lane
    //! `x` that lies `d` bits before a lane `y` of the input is folded into
    //! it as `y ^ clmul(x.lo, K(d + 32)) ^ clmul(x.hi, K(d - 32))`, where
    //! `K(n)` is x^n mod P, bit-reflected and shifted left by one.

    use std::arch::x86_64::{
        __m128i, __m512i, _mm256_castsi256_si128, _mm256_extracti128_si256, _mm256_xor_si256, _mm512_castsi512_si256,
        _mm512_clmulepi64_epi128, _mm512_extracti64x4_epi64, _mm512_loadu_si512, _mm512_maskz_compress_epi8,
        _mm512_maskz_expand_epi8, _mm512_maskz_loadu_epi8, _mm512_maskz_mov_epi64, _mm512_maskz_mov_epi8,
        _mm512_set1_epi32, _mm512_set_epi64, _mm512_ternarylogic_epi64, _mm512_xor_si512, _mm512_zextsi128_si512,
        _mm_and_si128, _mm_clmulepi64_si128, _mm_extract_epi32, _mm_set_epi32, _mm_set_epi64x, _mm_srli_si128,
        _mm_xor_si128,
    };
    use std::sync::atomic::{AtomicU8, Ordering};

    /// The CRC-32 polynomial with its x^32 term.
    const POLY: u64 = 0x1_04C1_1DB7;
    /// P(x), bit-reflected over 33 bits, for the Barrett reduction.
    const POLY_REFLECTED: i64 = 0x1_DB71_0641;
    /// floor(x^64 / P(x)), bit-reflected over 33 bits, for the Barrett
    /// reduction (checked by `barrett_constants_are_derived_from_the_polynomial`).
    const MU_REFLECTED: i64 = 0x1_F701_1641;

    /// x^n mod P(x), bit-reflected, shifted left by one: the key that
    /// folds a lane forward by `n - 32` or `n + 32` bits (see the module
    /// doc).
    const fn key(n: u32) -> i64 {
        let mut rem: u64 = 1;
        let mut i = 0;
        while i < n {
            rem <<= 1;
            if rem & (1 << 32) != 0 {
                rem ^= POLY;
            }
            i += 1;
        }
        ((rem as u32).reverse_bits() as i64) << 1
    }

    /// Keys for a fold over `bits`, low lane first.
    const fn fold_keys(bits: u32) -> [i64; 2] {
        [key(bits + 32), key(bits - 32)]
    }

    const BY_64_BYTES: [i64; 2] = fold_keys(512);
    const BY_128_BYTES: [i64; 2] = fold_keys(1024);
    const BY_256_BYTES: [i64; 2] = fold_keys(2048);
    /// The last block's four lanes, folded onto its last one: by 48, 32
    /// and 16 bytes (the last lane is taken as it is).
    const LANES: [[i64; 2]; 3] = [fold_keys(384), fold_keys(256), fold_keys(128)];
    /// 128 bits down to 64 (with the implied 32-bit shift), then 32.
    const BY_96_BITS: i64 = key(96);
    const BY_64_BITS: i64 = key(64);

    /// What `FEATURES` holds once the CPU was asked: `update`'s features,
    /// and `record`'s (those and AVX512-VBMI2).
    const KNOWN: u8 = 1;
    const WIDE: u8 = 2;
    const RECORD: u8 = 4;
    static FEATURES: AtomicU8 = AtomicU8::new(0);

    fn features() -> u8 {
        let known = FEATURES.load(Ordering::Relaxed);
        if known & KNOWN != 0 {
            return known;
        }
        let wide = std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("vpclmulqdq")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
            && std::arch::is_x86_feature_detected!("sse4.1");
        let record = wide && std::arch::is_x86_feature_detected!("avx512vbmi2");
        let found = KNOWN | if wide { WIDE } else { 0 } | if record { RECORD } else { 0 };
        FEATURES.store(found, Ordering::Relaxed);
        found
    }

    /// True when the CPU has what `update` is compiled with. One relaxed
    /// load after the first call.
    pub fn detected() -> bool {
        features() & WIDE != 0
    }

    /// True when the CPU has what `record` is compiled with.
    pub fn record_detected() -> bool {
        features() & RECORD != 0
    }

    /// Both 64-bit keys in each of the four lanes.
    #[target_feature(enable = "avx512f")]
    fn broadcast(keys: [i64; 2]) -> __m512i {
        let [lo, hi] = keys;
        _mm512_set_epi64(hi, lo, hi, lo, hi, lo, hi, lo)
    }

    /// Each lane of `acc` folded forward by the distance `keys` are for,
    /// onto `next`.
    #[target_feature(enable = "avx512f,vpclmulqdq")]
    fn fold(acc: __m512i, keys: __m512i, next: __m512i) -> __m512i {
        let lo = _mm512_clmulepi64_epi128(acc, keys, 0x00);
        let hi = _mm512_clmulepi64_epi128(acc, keys, 0x11);
        // 0x96: the three-way exclusive or.
        _mm512_ternarylogic_epi64(lo, hi, next, 0x96)
    }

    /// `update` for `bytes.len() >= WIDE_MIN_BYTES`.
    ///
    /// The input is read as whole 64-byte blocks that end where it ends:
    /// the first block is `pad` zero bytes and then the input's first
    /// `64 - pad`. Leading zeros leave a CRC's polynomial unchanged once
    /// the initial register (`!crc`) is taken apart from them: it is XORed
    /// into the input's first four bytes, wherever the padding puts them
    /// (into the second block too, for `pad > 60`).
    ///
    /// # Safety
    /// The CPU must have the features `detected` checks, and
    /// `bytes.len() >= WIDE_MIN_BYTES`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn update(crc: u32, bytes: &[u8]) -> u32 {
        let len = bytes.len();
        assert!(len >= super::WIDE_MIN_BYTES, "the caller checks the length");
        let pad = (64 - len % 64) % 64;
        let base = bytes.as_ptr();

        // The register's bytes, at their offsets in each dword: byte `j` of
        // a block holds byte `(j - pad) % 4` of the register.
        let register = _mm512_set1_epi32((!crc).rotate_left(8 * (pad % 4) as u32) as i32);
        let first_four = 0xF_u128 << pad;
        let in_first = _mm512_maskz_mov_epi8(first_four as u64, register);
        let in_second = _mm512_maskz_mov_epi8((first_four >> 64) as u64, register);
        // SAFETY: the mask leaves out the `pad` bytes before the input, so
        // only `bytes[..64 - pad]` is read: a masked-off byte is never
        // accessed and cannot fault. The address is formed with
        // `wrapping_sub`, never dereferenced as it is.
        let head = unsafe { _mm512_maskz_loadu_epi8(!0u64 << pad, base.wrapping_sub(pad).cast()) };
        // SAFETY: blocks 1 to 3 lie within the input, which is at least
        // four blocks long with the padding.
        let (second, third, fourth) = unsafe { (load(base, 64 - pad), load(base, 128 - pad), load(base, 192 - pad)) };
        let first = [_mm512_xor_si512(head, in_first), _mm512_xor_si512(second, in_second), third, fourth];
        // SAFETY: as above, for the blocks after the first four.
        unsafe { fold_blocks(first, base, 256 - pad, len) }
    }

    /// The CRC, from `!register`, of a record's header (the low
    /// `header_len` bytes of `header`, little-endian), key and value, in
    /// one pass. The blocks that hold the header and key (and the
    /// register, XORed into the stream's first four bytes) are put
    /// together in registers: the header's bytes moved into place
    /// (`vpexpandb`, `vpcompressb`), the key's and the value's loaded
    /// under masks from where they lie. Nothing is read back from memory
    /// just written, which would wait for every store before it (a copy
    /// of the same bytes to the stack first cost 4% of a 1 KiB set).
    ///
    /// # Safety
    /// The CPU must have the features `record_detected` checks,
    /// `header_len <= 16`, `header_len + key.len() <= HEAD_MAX_BYTES` and
    /// `value.len() >= WIDE_MIN_BYTES`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vbmi2,vpclmulqdq,pclmulqdq,sse4.1")]
    pub unsafe fn record(register: u32, header: u128, header_len: usize, key: &[u8], value: &[u8]) -> u32 {
        let (hl, head) = (header_len, header_len + key.len());
        assert!(
            hl <= 16 && head <= super::HEAD_MAX_BYTES && value.len() >= super::WIDE_MIN_BYTES,
            "the caller checks the lengths"
        );
        let pad = (64 - (head + value.len()) % 64) % 64;
        // The stream is `pad` zeros, the header, the key, the value, in
        // whole blocks. The first one or two hold the header and key
        // (`pad < 64`, `head <= 64`) and the register's four bytes.
        let lead = pad + head;
        let staged_blocks = (pad + head.max(4)).div_ceil(64);
        // Bits `from..to` of the two blocks' positions.
        let span = |from: usize, to: usize| if from < to { (!0u128 >> (128 - (to - from))) << from } else { 0 };
        let (header_at, key_at, value_at) = (span(pad, pad + hl), span(pad + hl, lead), span(lead, 128));
        let register_at = span(pad, pad + 4);
        let header = _mm512_zextsi128_si512(_mm_set_epi64x((header >> 64) as i64, header as i64));
        let register = _mm512_set1_epi32(register.rotate_left(8 * (pad % 4) as u32) as i32);
        let stage = |b: usize| {
            let (from, within) = (64 * b, |bits: u128| (bits >> (64 * b)) as u64);
            // The header's bytes from `64 * b - pad` on, packed from the
            // block's start (`compress`) or spread to where it starts.
            let header_part = if b == 0 {
                _mm512_maskz_expand_epi8(within(header_at), header)
            } else {
                _mm512_maskz_compress_epi8(span(64 - pad, hl) as u64, header)
            };
            // SAFETY: the masks leave out every byte outside the key and
            // the value, so only their own bytes are read (a masked-off
            // byte is never accessed and cannot fault); the addresses are
            // formed with wrapping arithmetic, never dereferenced as they
            // are.
            let (key_part, value_part) = unsafe {
                (
                    _mm512_maskz_loadu_epi8(
                        within(key_at),
                        key.as_ptr().wrapping_add(from).wrapping_sub(pad + hl).cast(),
                    ),
                    _mm512_maskz_loadu_epi8(
                        within(value_at),
                        value.as_ptr().wrapping_add(from).wrapping_sub(lead).cast(),
                    ),
                )
            };
            let in_register = _mm512_maskz_mov_epi8(within(register_at), register);
            // 0xFE: the three-way or.
            _mm512_xor_si512(_mm512_ternarylogic_epi64(header_part, key_part, value_part, 0xFE), in_register)
        };
        let base = value.as_ptr();
        // SAFETY: a block past the staged ones lies at `64 * k - lead >= 0`
        // in `value`, whose end is the last block's end.
        let block = |k: usize| if k < staged_blocks { stage(k) } else { unsafe { load(base, 64 * k - lead) } };
        let first = [block(0), block(1), block(2), block(3)];
        // SAFETY: as above, for the blocks after the first four.
        unsafe { fold_blocks(first, base, 256 - lead, value.len()) }
    }

    /// The 64 bytes at `base + at`.
    ///
    /// # Safety
    /// They must be readable.
    #[target_feature(enable = "avx512f")]
    unsafe fn load(base: *const u8, at: usize) -> __m512i {
        // SAFETY: the caller's.
        unsafe { _mm512_loadu_si512(base.add(at).cast()) }
    }

    /// The CRC of a stream of whole blocks: the first four given, the
    /// rest read from `base + at` up to `base + end`.
    ///
    /// # Safety
    /// `base[at..end]` must be readable and a whole number of blocks.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,vpclmulqdq,pclmulqdq,sse4.1")]
    #[inline]
    unsafe fn fold_blocks(first: [__m512i; 4], base: *const u8, mut at: usize, end: usize) -> u32 {
        debug_assert_eq!((end - at) % 64, 0);
        let [mut acc0, mut acc1, mut acc2, mut acc3] = first;
        // SAFETY: every block is read below `end`, as the caller vouches.
        let block = |at: usize| unsafe { load(base, at) };
        let by_256 = broadcast(BY_256_BYTES);
        while at + 256 <= end {
            acc0 = fold(acc0, by_256, block(at));
            acc1 = fold(acc1, by_256, block(at + 64));
            acc2 = fold(acc2, by_256, block(at + 128));
            acc3 = fold(acc3, by_256, block(at + 192));
            at += 256;
        }
        // Four accumulators into one in two steps, then the blocks left.
        let by_128 = broadcast(BY_128_BYTES);
        let by_64 = broadcast(BY_64_BYTES);
        let mut acc = fold(fold(acc0, by_128, acc2), by_64, fold(acc1, by_128, acc3));
        while at < end {
            acc = fold(acc, by_64, block(at));
            at += 64;
        }

        // The last block's lanes onto its last, then the four lanes XORed.
        let [l0, l1, l2] = LANES;
        let lane_keys = _mm512_set_epi64(0, 0, l2[1], l2[0], l1[1], l1[0], l0[1], l0[0]);
        let last_lane = _mm512_maskz_mov_epi64(0b1100_0000, acc);
        let lanes = fold(acc, lane_keys, last_lane);
        let half = _mm256_xor_si256(_mm512_castsi512_si256(lanes), _mm512_extracti64x4_epi64::<1>(lanes));
        reduce(_mm_xor_si128(_mm256_castsi256_si128(half), _mm256_extracti128_si256::<1>(half)))
    }

    /// The CRC (complemented, as `crc32fast` gives it) of 128 folded bits:
    /// down to 64 bits, then a Barrett reduction to 32.
    #[target_feature(enable = "pclmulqdq,sse4.1")]
    fn reduce(x: __m128i) -> u32 {
        let low_32 = _mm_set_epi32(0, 0, 0, !0);
        let x = _mm_xor_si128(_mm_clmulepi64_si128(x, _mm_set_epi64x(BY_96_BITS, 0), 0x10), _mm_srli_si128(x, 8));
        let x = _mm_xor_si128(
            _mm_clmulepi64_si128(_mm_and_si128(x, low_32), _mm_set_epi64x(0, BY_64_BITS), 0x00),
            _mm_srli_si128(x, 4),
        );
        let barrett = _mm_set_epi64x(MU_REFLECTED, POLY_REFLECTED);
        let t1 = _mm_clmulepi64_si128(_mm_and_si128(x, low_32), barrett, 0x10);
        let t2 = _mm_clmulepi64_si128(_mm_and_si128(t1, low_32), barrett, 0x00);
        !(_mm_extract_epi32(_mm_xor_si128(x, t2), 1) as u32)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn reflect33(v: u64) -> i64 {
            (v.reverse_bits() >> 31) as i64
        }

        #[test]
        fn barrett_constants_are_derived_from_the_polynomial() {
            assert_eq!(reflect33(POLY), POLY_REFLECTED);
            // floor(x^64 / P) by long division over GF(2).
            let (mut rem, mut quotient) = (1u128 << 64, 0u64);
            for bit in (0..=32).rev() {
                if rem & (1u128 << (bit + 32)) != 0 {
                    rem ^= u128::from(POLY) << bit;
                    quotient |= 1 << bit;
                }
            }
            assert_eq!(reflect33(quotient), MU_REFLECTED);
        }

        #[test]
        fn fold_keys_match_the_published_ones() {
            // The fold-by-4 and fold-by-1 keys of the Intel paper's CRC-32.
            assert_eq!(fold_keys(512), [0x1_5444_2bd4, 0x1_c6e4_1596]);
            assert_eq!(fold_keys(128), [0x1_7519_97d0, 0x0_ccaa_009e]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(crc: u32, bytes: &[u8]) -> u32 {
        let mut hasher = crc32fast::Hasher::new_with_initial(crc);
        hasher.update(bytes);
        hasher.finalize()
    }

    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn every_length_and_alignment_matches_crc32fast() {
        let data = noise(1300, 7);
        for len in 0..=1200 {
            for offset in [0, 1, 3, 17, 63] {
                let bytes = &data[offset..offset + len];
                for crc in [0, 0xFFFF_FFFF, 0x1234_5678] {
                    assert_eq!(update(crc, bytes), reference(crc, bytes), "len {len} offset {offset} crc {crc:#x}");
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_wide_kernel_is_what_long_inputs_take_here() {
        if !wide::detected() {
            eprintln!("this CPU lacks AVX-512 or VPCLMULQDQ: the wide kernel is not tested here");
            return;
        }
        let data = noise(5000, 11);
        for len in [WIDE_MIN_BYTES, 257, 319, 320, 1050, 4096, 4999] {
            let bytes = &data[..len];
            // SAFETY: detected above; the lengths are at least the minimum.
            assert_eq!(unsafe { wide::update(0, bytes) }, crc32fast::hash(bytes), "len {len}");
        }
    }

    /// A header of `len` bytes taken from `bytes`, as `hash_record` takes it.
    fn header_of(bytes: &[u8], len: usize) -> u128 {
        let mut word = [0u8; 16];
        word[..len].copy_from_slice(&bytes[..len]);
        u128::from_le_bytes(word)
    }

    #[test]
    fn a_record_in_one_pass_matches_its_concatenation() {
        let data = noise(1400, 13);
        for header_len in [0, 1, 2, 3, 4, 5, 8, 13, 16] {
            let header = header_of(&data[1300..], header_len);
            for key_len in 0..=HEAD_MAX_BYTES + 2 - header_len {
                let key = &data[..key_len];
                for value_len in (0..=330).chain([383, 384, 385, 1024, 1030, 1300]) {
                    let value = &data[100..100 + value_len];
                    let whole = reference(0, &[&data[1300..1300 + header_len], key, value].concat());
                    assert_eq!(
                        hash_record(header, header_len, key, value),
                        whole,
                        "header {header_len} key {key_len} value {value_len}"
                    );
                }
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn records_take_the_wide_kernel_here() {
        if !wide::record_detected() {
            eprintln!("this CPU lacks AVX-512 VBMI2 or VPCLMULQDQ: the record kernel is not tested here");
            return;
        }
        let data = noise(2000, 17);
        for header_len in 0..=16 {
            let header = header_of(&data[1900..], header_len);
            for key_len in 0..=HEAD_MAX_BYTES - header_len {
                for value_len in [WIDE_MIN_BYTES, 257, 300, 319, 320, 1024, 1050] {
                    let (key, value) = (&data[..key_len], &data[200..200 + value_len]);
                    let whole = [&data[1900..1900 + header_len], key, value].concat();
                    for crc in [0, 0xFFFF_FFFF, 0x1234_5678] {
                        // SAFETY: detected above; the lengths are what it asks.
                        let wide = unsafe { wide::record(!crc, header, header_len, key, value) };
                        assert_eq!(wide, reference(crc, &whole), "header {header_len} key {key_len} value {value_len}");
                    }
                }
            }
        }
    }

    #[test]
    fn all_zeros_and_all_ones_match() {
        for len in [256, 300, 1024, 65_536] {
            for fill in [0u8, 0xFF] {
                let bytes = vec![fill; len];
                assert_eq!(hash(&bytes), crc32fast::hash(&bytes), "len {len} fill {fill:#x}");
            }
        }
    }

    proptest! {
        #[test]
        fn pieces_chain_like_the_whole(bytes in proptest::collection::vec(any::<u8>(), 0..66_000), split in any::<prop::sample::Index>()) {
            let at = split.index(bytes.len() + 1);
            let whole = crc32fast::hash(&bytes);
            prop_assert_eq!(hash(&bytes), whole);
            prop_assert_eq!(update(hash(&bytes[..at]), &bytes[at..]), whole);
        }
    }
}
