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
        _mm512_clmulepi64_epi128, _mm512_extracti64x4_epi64, _mm512_loadu_si512, _mm512_maskz_loadu_epi8,
        _mm512_maskz_mov_epi64, _mm512_maskz_mov_epi8, _mm512_set1_epi32, _mm512_set_epi64, _mm512_ternarylogic_epi64,
        _mm512_xor_si512, _mm_and_si128, _mm_clmulepi64_si128, _mm_extract_epi32, _mm_set_epi32, _mm_set_epi64x,
        _mm_srli_si128, _mm_xor_si128,
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

    const UNKNOWN: u8 = 0;
    const ABSENT: u8 = 1;
    const PRESENT: u8 = 2;
    static FEATURES: AtomicU8 = AtomicU8::new(UNKNOWN);

    /// True when the CPU has what `update` is compiled with. One relaxed
    /// load after the first call.
    pub fn detected() -> bool {
        match FEATURES.load(Ordering::Relaxed) {
            PRESENT => true,
            ABSENT => false,
            _ => {
                let present = std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("vpclmulqdq")
                    && std::arch::is_x86_feature_detected!("pclmulqdq")
                    && std::arch::is_x86_feature_detected!("sse4.1");
                FEATURES.store(if present { PRESENT } else { ABSENT }, Ordering::Relaxed);
                present
            }
        }
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
        let load = |at: usize| {
            debug_assert!(at + 64 <= len);
            // SAFETY: every block is read at an `at` with `at + 64 <= len`,
            // since the blocks end where the input does.
            unsafe { _mm512_loadu_si512(base.add(at).cast()) }
        };

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

        let mut at = 64 - pad;
        let mut acc0 = _mm512_xor_si512(head, in_first);
        let mut acc1 = _mm512_xor_si512(load(at), in_second);
        let mut acc2 = load(at + 64);
        let mut acc3 = load(at + 128);
        at += 192;
        let by_256 = broadcast(BY_256_BYTES);
        while at + 256 <= len {
            acc0 = fold(acc0, by_256, load(at));
            acc1 = fold(acc1, by_256, load(at + 64));
            acc2 = fold(acc2, by_256, load(at + 128));
            acc3 = fold(acc3, by_256, load(at + 192));
            at += 256;
        }
        // Four accumulators into one in two steps, then the blocks left.
        let by_128 = broadcast(BY_128_BYTES);
        let by_64 = broadcast(BY_64_BYTES);
        let mut acc = fold(fold(acc0, by_128, acc2), by_64, fold(acc1, by_128, acc3));
        while at < len {
            acc = fold(acc, by_64, load(at));
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
