//! The expiry sweep: reclaiming expired keys nobody reads.
//!
//! Each segment knows the earliest expiry among its records. A tick walks
//! a bounded number of bytes of one segment whose earliest expiry has
//! passed, dropping from the index every record it points at that has
//! expired, and learns the segment's next earliest expiry. Their bytes are
//! then dead, and compaction (or eviction) gives the memory back. A
//! segment is walked again at the earliest a second later, so keys with
//! spread-out expiries cost one walk a second at most, not one per key.
//!
//! An expired record is not replaced by a tombstone: recovery treats an
//! expired record as a deletion, and compaction writes a tombstone if the
//! segment goes while older versions remain.

use crate::scan::{self, Walk};
use crate::segment::HEADER_BYTES;
use crate::store::Store;

/// A segment is swept again no sooner than this after its last sweep.
const SWEEP_INTERVAL_MS: u64 = 1000;

/// Progress through the segment being swept.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub(crate) slot: u32,
    seq: u64,
    pos: usize,
    /// Earliest expiry seen so far among records still indexed.
    next_expiry_ms: u64,
}

impl Store {
    fn pick_sweep(&self, now: u64) -> Option<Cursor> {
        let (slot, seg) = self.log.segments.iter().enumerate().find_map(|(slot, s)| {
            let due = |s: &crate::segment::Segment| {
                // A second after the last sweep, or at once when the clock
                // stepped back past that (it waited for the clock to
                // catch up).
                s.sweep_after_ms <= now || s.sweep_after_ms > now.saturating_add(SWEEP_INTERVAL_MS)
            };
            s.as_ref().filter(|s| s.expiry_min_ms <= now && due(s)).map(|s| (slot, s))
        })?;
        Some(Cursor { slot: slot as u32, seq: seg.header.seq, pos: HEADER_BYTES, next_expiry_ms: u64::MAX })
    }

    /// Walks up to `budget_bytes` of records looking for expired keys.
    pub(crate) fn sweep_step(&mut self, budget_bytes: usize) {
        if self.poisoned.is_some() {
            return;
        }
        let now = self.now_ms();
        let Some(mut cur) = self.sweep.take().or_else(|| self.pick_sweep(now)) else { return };
        let mut walked = 0;
        loop {
            // The segment may have been compacted, evicted or flushed away.
            let Some(seg) = self.log.segment(cur.slot).filter(|s| s.header.seq == cur.seq) else { return };
            if walked >= budget_bytes {
                self.sweep = Some(cur);
                return;
            }
            // A record between marks is in no index entry: nothing expires.
            let next = seg.next_marked(cur.pos);
            walked += next - cur.pos;
            cur.pos = next;
            let (offset, len, expires_at_ms, hash) = match scan::walk(seg, cur.pos) {
                Walk::Record { offset, view } => match view.expires_at_ms {
                    Some(at) if !view.tombstone => (offset, view.len, at, self.index_hash(view.key)),
                    _ => {
                        cur.pos = offset + view.len;
                        walked += view.len;
                        continue;
                    }
                },
                Walk::Damaged { resume, .. } => {
                    cur.pos = resume;
                    continue;
                }
                Walk::Unreadable { .. } | Walk::End => break,
            };
            cur.pos = offset + len;
            walked += len;
            let here = self.log.loc(cur.slot, offset);
            if expires_at_ms > now {
                if self.index.mark_at(hash, here).is_some() {
                    cur.next_expiry_ms = cur.next_expiry_ms.min(expires_at_ms);
                }
            } else if self.index.remove(hash, |l| l == here).is_some() {
                self.log.mark_dead(here, len);
                self.counters.expired_reclaimed += 1;
                if let Some(seg) = self.log.segment_mut(cur.slot) {
                    seg.orphans = true;
                }
            }
        }
        if let Some(seg) = self.log.segment_mut(cur.slot) {
            seg.expiry_min_ms = cur.next_expiry_ms;
            seg.sweep_after_ms = now + SWEEP_INTERVAL_MS;
        }
    }
}
