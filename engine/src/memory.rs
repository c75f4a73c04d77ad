//! The memory bound: what counts, and what happens when it is reached.
//!
//! Memory used is the index plus the resident bytes of every segment: the
//! pages up to the end of its records, or the 2 MiB folios for a segment
//! advised `MADV_HUGEPAGE` (all of a recycled segment's, and of the spares
//! kept for the next ones), plus the segments' record marks (1/64 of
//! each, `crate::marks`). Each write checks that one segment (and its
//! marks) of headroom remains under the bound (the room the active
//! segment may still fill and eviction's copies need), and room for the
//! index's next growth step once that step is near. When it does not:
//! - in store mode, a write that adds data fails with `OutOfMemory`
//!   (deletes, and expiries that delete, still go through: they free
//!   memory, and the headroom covers their tombstones; an expiry change
//!   that keeps the key writes a new copy of its record, so it fails like
//!   a SET, where Redis would take it);
//! - in cache mode, the oldest segment is evicted until the headroom is
//!   back.
//!
//! Eviction of a segment (docs/cache.md says why this policy): records
//! that were read since they were written or last moved, and have not
//! expired, are copied to the head with their mark cleared (a second
//! chance, as CLOCK gives); the rest leave the index; the file is deleted.
//! At most seven eighths of a segment is kept per eviction, so every
//! eviction frees at least an eighth of a segment and a write never waits
//! on more than a bounded number of them. Always the *oldest* segment: no
//! older version of any key exists, so dropping its records and tombstones
//! can never bring an older value back at recovery.

use crate::error::{Error, Result};
use crate::marks::RecordMarks;
use crate::scan::{self, Copied, Walk};
use crate::segment::HEADER_BYTES;
use crate::store::{Mode, Store};

impl Store {
    /// Index plus resident segment bytes and their marks, as the bound
    /// counts them.
    pub fn memory_used_bytes(&self) -> u64 {
        self.log.resident_bytes() + self.log.spare_bytes() + self.index.heap_bytes() as u64 + self.log.marks_bytes()
    }

    /// What one more segment adds to `memory_used_bytes` once filled: its
    /// bytes and its marks.
    pub(crate) fn segment_footprint_bytes(&self) -> u64 {
        let segment = self.log.segment_size();
        (segment + RecordMarks::bytes_for(segment)) as u64
    }

    /// Makes sure one segment of headroom remains under the bound before a
    /// write. `adds_data` is false for deletes (and expiries that delete).
    pub(crate) fn make_room(&mut self, adds_data: bool) -> Result<()> {
        self.make_room_for(0, adds_data)
    }

    /// In store mode, checks that `bytes` of records about to be written
    /// together fit under the bound beyond the usual headroom, and refuses
    /// them all at once with `OutOfMemory` if not. A multi-key write (MSET)
    /// calls it first, so that it does not stop half way for want of room.
    pub fn reserve_room(&mut self, bytes: u64) -> Result<()> {
        self.check_log_room(bytes, true)?;
        match self.config.mode {
            Mode::Store => self.make_room_for(bytes, true),
            // Each write evicts what it needs as it goes, as Redis's LRU
            // does; making room for all of them first emptied the cache,
            // then failed, for a write larger than the bound.
            Mode::Cache => Ok(()),
        }
    }

    /// `reserve_room`, and the room kept for those writes until
    /// `release_room`: other writes meanwhile must leave it free. An MSET
    /// across shards holds room on each shard between its prepare and its
    /// commit (without it, writes in between could fill a shard, and the
    /// commit stopped half way there while the other shards had written).
    pub fn hold_room(&mut self, bytes: u64) -> Result<()> {
        self.check_log_room(bytes, false)?;
        if self.config.mode == Mode::Store && self.config.memory_max_bytes.is_some() {
            self.make_room_for(bytes, true)?;
            self.held_bytes += bytes;
        }
        if !self.log.in_memory {
            self.log.held_bytes += bytes;
        }
        Ok(())
    }

    /// Gives back room taken by `hold_room`.
    pub fn release_room(&mut self, bytes: u64) {
        if self.config.mode == Mode::Store && self.config.memory_max_bytes.is_some() {
            self.held_bytes = self.held_bytes.saturating_sub(bytes);
        }
        if !self.log.in_memory {
            self.log.held_bytes = self.log.held_bytes.saturating_sub(bytes);
        }
    }

    /// Refuses writes of `bytes` that the log's segments could not all take
    /// (`Log::can_write`): found only once they were half written, an MSET
    /// stopped there.
    fn check_log_room(&self, bytes: u64, at_once: bool) -> Result<()> {
        if self.log.in_memory || self.log.can_write(bytes, at_once) {
            return Ok(());
        }
        Err(Error::LogFull { slots: self.log.max_slots() })
    }

    fn make_room_for(&mut self, bytes: u64, adds_data: bool) -> Result<()> {
        let Some(limit_bytes) = self.config.memory_max_bytes else { return Ok(()) };
        // One segment (and its marks) of headroom: room for the active
        // segment to fill, and for eviction's copies to roll into a new
        // one; and the room held for writes to come.
        let headroom = self.segment_footprint_bytes() + bytes + self.held_bytes;
        loop {
            let used_bytes = self.memory_used_bytes();
            if used_bytes + headroom + self.index.growth_reserve_bytes() as u64 <= limit_bytes {
                return Ok(());
            }
            // Spare files are a cache of pages: they go before any data.
            let evicted = match self.config.mode {
                Mode::Cache => self.evict_oldest()?,
                Mode::Store => self.log.discard_spare_files(),
            };
            if !evicted {
                // Nothing (more) can be freed now: compaction may still
                // reclaim garbage later.
                return if adds_data { Err(Error::OutOfMemory { used_bytes, limit_bytes }) } else { Ok(()) };
            }
        }
    }

    /// Evicts the oldest sealed segment. False when there is none.
    pub(crate) fn evict_oldest(&mut self) -> Result<bool> {
        let active = self.log.active;
        let victim = self
            .log
            .by_seq()
            .into_iter()
            .find(|&slot| slot != active && self.log.segment(slot).is_some_and(|s| s.header.sealed && !s.damaged));
        let Some(slot) = victim else { return Ok(false) };
        if self.compaction.as_ref().is_some_and(|c| c.slot == slot) {
            self.compaction = None;
        }
        self.compacted_waiting.retain(|c| c.slot != slot);
        if self.sweep.as_ref().is_some_and(|c| c.slot == slot) {
            self.sweep = None;
        }
        let now = self.now_ms();
        let keep_max_bytes = (self.log.segment_size() - HEADER_BYTES) / 8 * 7;
        let mut kept_bytes = 0;
        let mut pos = HEADER_BYTES;
        let mut prefetched_to = pos;
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = loop {
            let Some(seg) = self.log.segment(slot) else { break Ok(()) };
            // A record between marks is in no index entry: nothing to keep
            // or drop (orphans or not: eviction leaves no tombstones).
            pos = seg.next_marked(pos);
            if pos >= prefetched_to {
                prefetched_to = self.prefetch_index_of_records(slot, pos, crate::compaction::PREFETCH_RECORDS, true);
            }
            let Some(seg) = self.log.segment(slot) else { break Ok(()) };
            let Copied { offset, len, expires_at_ms, .. } = match scan::walk(seg, pos) {
                Walk::Record { view, .. } if view.tombstone => {
                    pos += view.len;
                    continue;
                }
                Walk::Record { offset, view } => Copied::of(offset, &view, &mut scratch),
                Walk::Damaged { resume, .. } => {
                    pos = resume;
                    continue;
                }
                Walk::Unreadable { .. } | Walk::End => break Ok(()),
            };
            pos = offset + len;
            let hash = self.prefetched_hash(slot, offset, &scratch);
            let here = self.log.loc(slot, offset);
            let Some(marked) = self.index.mark_at(hash, here) else { continue };
            let expired = expires_at_ms.is_some_and(|at| at <= now);
            if marked && !expired && kept_bytes + len <= keep_max_bytes {
                match self.move_record(here, len, &mut scratch, expires_at_ms) {
                    Ok(to) => {
                        self.log.mark_live(to, len);
                        self.index.relocate(hash, here, to, false);
                        kept_bytes += len;
                    }
                    Err(err) => break Err(err),
                }
            } else {
                self.index.remove(hash, |l| l == here);
                if expired {
                    self.counters.expired_reclaimed += 1;
                } else {
                    self.counters.evicted_keys += 1;
                }
            }
            self.log.mark_dead(here, len);
        };
        self.scratch = scratch;
        result?;
        // Whatever the walk could not read leaves the index too: the
        // segment is about to go.
        self.drop_index_entries_in(slot);
        if self.config.fsync == crate::FsyncPolicy::Always {
            // The copies must be durable before the only other copy goes.
            // Under `everysec` a crash may lose the copies of the last
            // second, as it loses that second's writes: a cache's promise.
            self.sync()?;
        }
        tracing::debug!(slot, kept_bytes, "segment evicted");
        self.log.remove_segment(slot)?;
        self.counters.evicted_segments += 1;
        Ok(true)
    }

    /// Removes every index entry that points into `slot`. Only damage
    /// found after recovery can leave any, so this is a rare full pass.
    fn drop_index_entries_in(&mut self, slot: u32) {
        if self.log.segment(slot).is_none_or(|s| s.live_bytes == 0) {
            return;
        }
        let mut doomed = Vec::new();
        self.index.scan_from(0, |hash, loc| {
            if self.log.split(loc).0 == slot {
                doomed.push((hash, loc));
            }
            std::ops::ControlFlow::Continue(())
        });
        tracing::error!(slot, keys = doomed.len(), "evicted segment held records that could not be read");
        for (hash, loc) in doomed {
            self.index.remove(hash, |l| l == loc);
            self.counters.evicted_keys += 1;
        }
    }
}
