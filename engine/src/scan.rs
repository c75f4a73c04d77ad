//! Walking the records of one segment, deciding what bytes that do not
//! decode mean. Used by recovery, compaction, eviction and the expiry
//! sweep.

use crate::record::{self, RecordView, HEADER_MIN_BYTES};
use crate::segment::Segment;

/// What the bytes at a position are.
#[derive(Debug)]
pub enum Step<'a> {
    /// A record whose checksum holds.
    Record { offset: usize, view: RecordView<'a> },
    /// Bytes that are not a valid record, followed by more records: a
    /// damaged record in the middle. Resume at `resume`.
    Corrupt { offset: usize, resume: usize },
    /// No more records. `clean` is false when the end is a torn or damaged
    /// tail rather than untouched (zeroed) space or the sealed end. In an
    /// unsealed recycled segment the bytes past the records are the file's
    /// earlier life, which a torn write cannot be told from: its end is
    /// taken as clean (the cut is the same either way).
    End { offset: usize, clean: bool },
}

/// Decodes the step at `pos` of segment `seg`, whose records may run to
/// `limit`: the sealed end of a sealed segment (where every byte before it
/// was once a good record) or the file end of an unsealed one.
#[inline]
pub fn next(seg: &Segment, pos: usize, limit: usize, sealed: bool) -> Step<'_> {
    let (bytes, key) = (seg.bytes(), seg.crc_key);
    let stale_past_end = !sealed && seg.header.recycled;
    let limit = limit.min(bytes.len());
    if pos >= limit || limit - pos < HEADER_MIN_BYTES {
        let clean =
            sealed && pos == limit || stale_past_end || !sealed && bytes[pos.min(limit)..limit].iter().all(|&b| b == 0);
        return Step::End { offset: pos, clean };
    }
    let here = &bytes[pos..limit];
    if let Ok(view) = record::decode(here, key, true) {
        return Step::Record { offset: pos, view };
    }
    if !sealed && here.iter().all(|&b| b == 0) {
        return Step::End { offset: pos, clean: true };
    }
    // The header may still be right and only the body damaged: if its
    // lengths lead to a good record (or exactly to the sealed end), skip
    // just this one.
    if let Ok(guess) = record::decode(here, key, false) {
        let resume = pos + guess.len;
        let next_is_good = resume < limit && record::decode(&bytes[resume..limit], key, true).is_ok();
        if next_is_good || (sealed && resume == limit) {
            return Step::Corrupt { offset: pos, resume };
        }
    }
    if sealed {
        Step::Corrupt { offset: pos, resume: limit }
    } else {
        Step::End { offset: pos, clean: stale_past_end }
    }
}

/// One step of walking the records of a segment in use (compaction,
/// eviction, the expiry sweep). Records are decoded without their CRC:
/// walkers read headers and copy records verbatim, checksum included, so
/// damage stays detectable instead of being laundered under a fresh one.
#[derive(Debug)]
pub enum Walk<'a> {
    Record {
        offset: usize,
        view: RecordView<'a>,
    },
    /// A damaged record; continue at `resume`.
    Damaged {
        offset: usize,
        resume: usize,
    },
    /// Bytes that decode only when checked: the walk cannot go on.
    Unreadable {
        offset: usize,
    },
    End,
}

/// The step at `pos` of a segment in use (its records end at `seg.end`).
pub fn walk(seg: &Segment, pos: usize) -> Walk<'_> {
    if let Some(Ok(view)) = seg.bytes().get(pos..seg.end).map(|b| record::decode(b, seg.crc_key, false)) {
        return Walk::Record { offset: pos, view };
    }
    match next(seg, pos, seg.end, true) {
        Step::Corrupt { offset, resume } => Walk::Damaged { offset, resume },
        Step::Record { offset, .. } => Walk::Unreadable { offset },
        Step::End { .. } => Walk::End,
    }
}

/// A record found by a walker, its key copied out of the segment into a
/// scratch buffer, so that the log can change (appends, rolls) while the
/// walker handles it. Only the key: most records a walker meets are dead,
/// and copying each whole (`Copied::of` did, 1 KiB values and all) read
/// every byte of a victim from memory to throw it away. A record that
/// moves is copied then (`Store::move_record`).
#[derive(Debug, Clone)]
pub struct Copied {
    pub offset: usize,
    pub len: usize,
    pub tombstone: bool,
    pub expires_at_ms: Option<u64>,
}

impl Copied {
    /// The record `view` found at `offset`, its key copied into `key`.
    pub fn of(offset: usize, view: &RecordView<'_>, key: &mut Vec<u8>) -> Copied {
        key.clear();
        key.extend_from_slice(view.key);
        Copied { offset, len: view.len, tombstone: view.tombstone, expires_at_ms: view.expires_at_ms }
    }
}
