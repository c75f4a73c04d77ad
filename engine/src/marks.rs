//! Which records of a segment a walk must look at: a bit for every
//! position a record can start at (`RECORD_ALIGN_BYTES`), set when a
//! record is appended there and cleared when the index stops pointing at
//! it (`Log::mark_dead`). A clear bit is a record that was overwritten,
//! deleted, moved or reclaimed; a set one is a live record, a tombstone
//! (never indexed, so never cleared), or a dead record no path cleared,
//! which a walk then looks up as it did every record before.
//!
//! Compaction walks a victim without orphans (see `Segment::orphans`) from
//! set bit to set bit: a dead record there needs no tombstone and no look
//! at the index. Without the map a walk decoded every dead record, hashed
//! its key and probed the index at random, only to drop it: about a
//! quarter of the samples of criterion's 1 KiB sets (`perf`), 1.3% with
//! it. The map costs one bit per 8 bytes of log, 1/64 of a segment, and
//! only segments made in this process's life have one: those opened at
//! startup have orphans anyway. Eviction and the expiry sweep skip the
//! same records, orphans or not: neither needs a record the index does
//! not point at.

use crate::record::RECORD_ALIGN_BYTES;

const WORD_BITS: usize = u64::BITS as usize;

/// The record starts of one segment that a walk must visit.
#[derive(Debug)]
pub struct RecordMarks {
    words: Box<[u64]>,
}

impl RecordMarks {
    /// Marks for a segment of `segment_bytes`, none set.
    pub fn new(segment_bytes: usize) -> RecordMarks {
        let positions = segment_bytes.div_ceil(RECORD_ALIGN_BYTES);
        RecordMarks { words: vec![0; positions.div_ceil(WORD_BITS)].into_boxed_slice() }
    }

    /// Heap bytes the marks of a segment of `segment_bytes` take.
    pub fn bytes_for(segment_bytes: usize) -> usize {
        segment_bytes.div_ceil(RECORD_ALIGN_BYTES * WORD_BITS) * std::mem::size_of::<u64>()
    }

    pub fn heap_bytes(&self) -> usize {
        self.words.len() * std::mem::size_of::<u64>()
    }

    fn bit(offset: usize) -> (usize, u64) {
        debug_assert!(offset.is_multiple_of(RECORD_ALIGN_BYTES), "records start aligned");
        let position = offset / RECORD_ALIGN_BYTES;
        (position / WORD_BITS, 1 << (position % WORD_BITS))
    }

    /// Notes a record appended at `offset`.
    pub fn set(&mut self, offset: usize) {
        let (word, bit) = Self::bit(offset);
        self.words[word] |= bit;
    }

    /// Notes that the index no longer points at the record at `offset`.
    pub fn clear(&mut self, offset: usize) {
        let (word, bit) = Self::bit(offset);
        if let Some(w) = self.words.get_mut(word) {
            debug_assert!(*w & bit != 0, "a record at {offset} leaves the index twice, or was never appended");
            *w &= !bit;
        }
    }

    /// Clears every mark, for the segment's next life.
    pub fn clear_all(&mut self) {
        self.words.fill(0);
    }

    /// The first marked record start at or after `from` (an aligned
    /// offset), or `end` when none is before it.
    pub fn next_from(&self, from: usize, end: usize) -> usize {
        if from >= end {
            return from;
        }
        let (mut word, bit) = Self::bit(from);
        // Bits below `from` in its word do not count.
        let mut bits = self.words.get(word).map_or(0, |w| w & !(bit - 1));
        let last_word = (end - 1) / RECORD_ALIGN_BYTES / WORD_BITS;
        loop {
            if bits != 0 {
                let at = (word * WORD_BITS + bits.trailing_zeros() as usize) * RECORD_ALIGN_BYTES;
                return at.min(end);
            }
            word += 1;
            if word > last_word {
                return end;
            }
            bits = self.words[word];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_from_finds_each_set_start_in_order_and_skips_cleared_ones() {
        let mut marks = RecordMarks::new(1 << 16);
        let starts = [32, 40, 512, 4096, 4104, 65_528];
        for &at in &starts {
            marks.set(at);
        }
        marks.clear(40);
        marks.clear(4096);
        let mut found = Vec::new();
        let mut at = 0;
        loop {
            at = marks.next_from(at, 1 << 16);
            if at >= 1 << 16 {
                break;
            }
            found.push(at);
            at += RECORD_ALIGN_BYTES;
        }
        assert_eq!(found, [32, 512, 4104, 65_528]);
    }

    #[test]
    fn next_from_stops_at_end_and_ignores_marks_past_it() {
        let mut marks = RecordMarks::new(1 << 12);
        marks.set(2048);
        assert_eq!(marks.next_from(0, 2048), 2048);
        assert_eq!(marks.next_from(0, 1024), 1024);
        assert_eq!(marks.next_from(2048, 4096), 2048);
        assert_eq!(marks.next_from(2056, 4096), 4096);
        assert_eq!(marks.next_from(4096, 4096), 4096);
    }

    #[test]
    fn a_segment_s_marks_take_a_sixty_fourth_of_it() {
        assert_eq!(RecordMarks::bytes_for(64 << 20), 1 << 20);
        assert_eq!(RecordMarks::new(64 << 20).heap_bytes(), 1 << 20);
    }
}
