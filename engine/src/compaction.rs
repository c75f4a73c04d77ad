//! Compaction: reclaiming the space of overwritten, deleted and expired
//! records, in bounded steps the shard thread interleaves with requests.
//!
//! The victim is the sealed segment with the most garbage (at least the
//! configured fraction). Its live records are copied to the head and the
//! index repointed; then the copies are synced and the file deleted. A
//! record that is not live and whose key has no live version is replaced
//! by a tombstone at the head while older segments exist, because an older
//! version of that key could otherwise come back at the next recovery.

use std::ops::ControlFlow;

use crate::error::Result;
use crate::index::Loc;
use crate::record::{RecordSpec, RECORD_ALIGN_BYTES};
use crate::scan::{self, Copied, Walk};
use crate::segment::HEADER_BYTES;
use crate::store::Store;

/// Records whose index slots a segment walk loads ahead.
pub(crate) const PREFETCH_RECORDS: usize = 16;
/// Records from this long have the headers of the records after them
/// prefetched by a walk (`prefetch_index_of_records`); shorter ones share
/// lines, which the hardware's prefetcher follows.
const PREFETCH_HEADERS_MIN_RECORD_BYTES: usize = 256;
/// How far past a record a walk that skips dead records
/// (`Segment::skips_dead`) looks for the next ones to prefetch: 128 words
/// of marks. The walk itself goes on at the pace of its budget.
const PREFETCH_SKIP_SPAN_BYTES: usize = 64 << 10;
/// Victims whose copies may wait for a flush at once while compaction goes
/// on with the next (`Store::compacted_waiting`).
const VICTIMS_WAITING_MAX: usize = 4;
/// A victim this much garbage is taken as soon as it is there, however
/// little garbage the log holds in all: it costs a walk of its headers and
/// copies at most a byte for every nine it frees. Left until the log's garbage
/// passed its live data, the segments of keys overwritten in bursts (a
/// hot set, a batch rewritten) made the log grow to twice the live data in
/// fresh segments whose pages the kernel zeroes first.
const CHEAP_VICTIM_GARBAGE: f64 = 0.9;
/// A log down to the slots kept from writes (`Log::tight`) takes victims
/// from this much garbage: below it, the copies of a segment that holds
/// little more than an unused tail would leave tails of their own, and a
/// full, idle shard would compact forever.
const TIGHT_VICTIM_GARBAGE: f64 = 0.25;
/// After a look for a victim almost all garbage found none, the next waits
/// until writes filled this fraction of a segment (`cheap_victim_waits`).
const CHEAP_VICTIM_RECHECK_SEGMENT_FRACTION: usize = 16;

/// A victim holding at least one record for every this many index slots
/// is compacted from the index (`Cursor::by_index`) rather than by a walk
/// of its records. A walk decodes every record, dead or alive, hashes its
/// key and probes the index at random (a cache miss, overlapped by the
/// prefetch, and for long records another for the header); a pass over
/// the index reads its slots in order, eight to a cache line, and touches
/// only the live records.
const SLOTS_PER_RECORD_FOR_INDEX_PASS: u64 = 16;
/// An index pass also needs a table at least this full (keys per slot, as
/// a fraction `1 / n`): one step visits a bounded number of entries, and
/// the empty slots between them are read too. A table left nearly empty
/// by deletes (it shrinks only at an open) would make each step read most
/// of it.
const SLOTS_PER_KEY_FOR_INDEX_PASS_MAX: u64 = 4;
/// A table of at most this many slots (512 KiB) is read whole in some
/// tens of microseconds: an index pass over it pays however empty it is.
const INDEX_PASS_SLOTS_ANY_FILL: u64 = 1 << 16;
/// Index entries one step of an index pass visits at most: some tens of
/// microseconds of reads in order.
const INDEX_PASS_VISITS_MAX: usize = 16 * 1024;
/// Live records an index pass gathers before moving them: their headers
/// are prefetched together, so their cache misses overlap.
const INDEX_PASS_BATCH_RECORDS: usize = 32;

/// Progress through the current victim.
#[derive(Debug, Clone)]
pub struct Cursor {
    pub(crate) slot: u32,
    seq: u64,
    pos: usize,
    /// Some segment older than the victim exists.
    has_older: bool,
    /// Every record is copied; the victim goes once the log is durable up
    /// to this point (segment seq, end), which `everysec`'s flush brings.
    durable_at: Option<(u64, usize)>,
    /// The victim's live records are found from the index, in hash order:
    /// the next hash to visit. `None` for a walk of its records (`pos`).
    by_index: Option<u64>,
    /// The bytes below this, in the run of dead records that starts at
    /// `pos`, count as examined already (`compact_step`'s skip).
    paid_to: usize,
}

impl Cursor {
    /// Every record is copied; deleting the victim waits for a flush.
    pub(crate) fn awaits_flush(&self) -> bool {
        self.durable_at.is_some()
    }
}

impl Store {
    /// Runs the compaction that the writes since the last call owe, so
    /// that compaction keeps pace with any write rate. The owner calls it
    /// after each batch of writes, which thus pays for its own garbage (as
    /// a garbage collector's allocation assist does). Paced by a timer
    /// instead (16 steps every 10 ms), compaction fell behind
    /// redis-benchmark SETs of 1 KiB values (430 MB/s written) and the log
    /// grew to ten times its live data (docs/benchmarks.md).
    ///
    /// Nothing is owed while compaction is not wanted (`compaction_wanted`:
    /// the timer's steps take care of it): the older the victims, the
    /// more garbage they hold and the less compaction copies for each byte
    /// it frees. Beyond that, a victim is at least
    /// `compaction_garbage_ratio_min` garbage, so examining
    /// `written / ratio` bytes frees at least what was written. With no
    /// victim (garbage spread thinner than the ratio) the debt is dropped.
    pub fn compact_owed(&mut self) -> Result<()> {
        let written = self.counters.written_bytes - self.counters.written_bytes_paced;
        self.counters.written_bytes_paced = self.counters.written_bytes;
        if written == 0 || !self.compaction_wanted() {
            return Ok(());
        }
        let ratio = self.config.compaction_garbage_ratio_min.max(0.1);
        let mut owed = (written as f64 / ratio) as usize;
        // Bounded: a victim finishing, the next one starting.
        for step in 0..8 {
            // A cheap victim done, the next one waits until compaction is
            // wanted again.
            if owed == 0 || step > 0 && self.compaction.is_none() && !self.compaction_wanted() {
                break;
            }
            let before = self.counters.compacted_bytes;
            let more = self.compact_step(owed)?;
            if !more {
                break;
            }
            owed = owed.saturating_sub((self.counters.compacted_bytes - before) as usize);
        }
        Ok(())
    }

    /// Whether compaction should run while writes come in: once the log
    /// holds more garbage than live records, once a write would be
    /// three quarters of the way to the memory bound's refusal (what
    /// `make_room` counts: memory used, a segment of headroom, the index's
    /// next growth), or once some victim is almost all garbage
    /// (`CHEAP_VICTIM_GARBAGE`). Below that, victims are left to gather
    /// garbage: the older a victim, the more of it is garbage and the less
    /// compaction copies for each byte it frees.
    pub(crate) fn compaction_wanted(&self) -> bool {
        if self.log.tight {
            return true;
        }
        if let Some(limit) = self.config.memory_max_bytes {
            let needed =
                self.memory_used_bytes() + self.segment_footprint_bytes() + self.index.growth_reserve_bytes() as u64;
            if needed >= limit / 4 * 3 {
                return true;
            }
        }
        let (live, used) = (self.log.live_bytes_total, self.log.used_bytes_total);
        used - live.min(used) > live || self.cheap_victim_waits()
    }

    /// Whether some victim is almost all garbage (`CHEAP_VICTIM_GARBAGE`).
    /// Looking walks every segment, and `compact_owed` asks after every
    /// batch of writes: after a look that found none, the next waits for
    /// `CHEAP_VICTIM_RECHECK_SEGMENT_FRACTION` of a segment of writes,
    /// which is what makes a victim cheaper.
    fn cheap_victim_waits(&self) -> bool {
        let written = self.counters.written_bytes;
        let recheck = (self.log.segment_size() / CHEAP_VICTIM_RECHECK_SEGMENT_FRACTION) as u64;
        if written.saturating_sub(self.counters.cheap_victim_none_at.get()) < recheck {
            return false;
        }
        let found = self.best_victim().is_some_and(|(garbage, _)| garbage >= CHEAP_VICTIM_GARBAGE);
        if !found {
            self.counters.cheap_victim_none_at.set(written);
        }
        found
    }

    /// Removes the victims whose copies a flush has made durable since
    /// they were copied: the waiting ones, and a cursor that waits because
    /// the waiting list was full. Runs whether or not compaction is wanted
    /// (`tick`, `finish_sync`), so that a victim copied while idle does not
    /// stay, and keep asking for flushes, once writes resume.
    pub(crate) fn settle_compacted(&mut self) -> Result<()> {
        self.remove_waiting_victims()?;
        if let Some(cur) = self.compaction.take_if(|c| c.durable_at.is_some_and(|m| self.log.durable_through(m))) {
            self.finish_victim(cur)?;
        }
        Ok(())
    }

    fn pick_victim(&self) -> Option<Cursor> {
        let (garbage, slot) = self.best_victim()?;
        let seg = self.log.segment(slot)?;
        let seq = seg.header.seq;
        let has_older = self.log.has_older_than(seq);
        let by_index = (garbage >= CHEAP_VICTIM_GARBAGE && self.index_pass_pays(seg, has_older)).then_some(0);
        Some(Cursor { slot, seq, pos: HEADER_BYTES, has_older, durable_at: None, by_index, paid_to: 0 })
    }

    /// Whether the victim `seg` is better compacted from the index than by
    /// a walk of its records (`SLOTS_PER_RECORD_FOR_INDEX_PASS`,
    /// `SLOTS_PER_KEY_FOR_INDEX_PASS_MAX`). The caller asks only for
    /// victims almost all garbage: a pass in hash order copies a live
    /// record at once, where a walk in log order reaches it as late as it
    /// can, and keys rewritten in the order they were written die at the
    /// walk's pace. Under a memory bound, 32-byte values rewritten in order
    /// (`overwrites_under_a_bound_are_never_refused_while_garbage_can_go`),
    /// a pass over victims half garbage copied 25 KiB of each 64 KiB, a
    /// walk 0.4 KiB, and writes were refused.
    ///
    /// A pass never sees a dead record, so every dead record must be one
    /// that can go without a look: none may have left the index as its
    /// key's newest record (`orphans`), and there must be no tombstones to
    /// keep (they are kept while an older segment exists).
    fn index_pass_pays(&self, seg: &crate::segment::Segment, has_older: bool) -> bool {
        if seg.orphans || has_older && seg.tombstone_bytes > 0 {
            return false;
        }
        let (keys, slots) = (self.index.len() as u64, self.index.slots() as u64);
        let record_bytes = (self.log.live_bytes_total / keys.max(1)).max(crate::record::RECORD_ALIGN_BYTES as u64);
        let records = (seg.end - HEADER_BYTES) as u64 / record_bytes;
        let full_enough = keys * SLOTS_PER_KEY_FOR_INDEX_PASS_MAX >= slots || slots <= INDEX_PASS_SLOTS_ANY_FILL;
        records * SLOTS_PER_RECORD_FOR_INDEX_PASS >= slots && full_enough
    }

    /// Room in the log that compacting `seg` may take: its live records and
    /// the tombstones kept while an older segment exists; with orphans, a
    /// tombstone for any dead record, at worst one record no longer than
    /// each it holds.
    fn compaction_need(seg: &crate::segment::Segment, has_older: bool) -> u64 {
        let kept = if has_older { seg.tombstone_bytes } else { 0 };
        if seg.orphans && has_older {
            (seg.end - HEADER_BYTES) as u64
        } else {
            seg.live_bytes + kept
        }
    }

    /// The sealed segment with the largest share of garbage, at least
    /// `compaction_garbage_ratio_min`, and that share. In a log down to
    /// the slots kept from writes (`Log::tight`) a quarter will do
    /// (`TIGHT_VICTIM_GARBAGE`), from a victim whose copies fit the room
    /// compaction has: the space it frees is all the log can get back.
    fn best_victim(&self) -> Option<(f64, u32)> {
        let capacity = (self.log.segment_size() - HEADER_BYTES) as f64;
        let (ratio_min, room) = if self.log.tight {
            (TIGHT_VICTIM_GARBAGE, self.log.compaction_room())
        } else {
            (self.config.compaction_garbage_ratio_min, u64::MAX)
        };
        let oldest = self.log.oldest_seq();
        let mut best: Option<(f64, u32)> = None;
        for (slot, seg) in self.log.segments.iter().enumerate() {
            let Some(seg) = seg else { continue };
            let waiting = self.compacted_waiting.iter().any(|c| c.slot == slot as u32);
            if slot as u32 == self.log.active || !seg.header.sealed || seg.damaged || waiting {
                continue;
            }
            // Tombstones are copied, not dropped, while an older segment
            // exists: counting them as garbage would compact a segment of
            // tombstones into another one, forever.
            let has_older = oldest.is_some_and(|oldest| oldest < seg.header.seq);
            let kept = if has_older { seg.tombstone_bytes } else { 0 };
            let garbage = 1.0 - (seg.live_bytes + kept) as f64 / capacity;
            let fits = Self::compaction_need(seg, has_older) <= room;
            if garbage >= ratio_min && fits && best.is_none_or(|(g, _)| garbage > g) {
                best = Some((garbage, slot as u32));
            }
        }
        best
    }

    /// Examines up to `budget_bytes` of the victim's records. Returns true
    /// while there is more to do.
    pub fn compact_step(&mut self, budget_bytes: usize) -> Result<bool> {
        if self.poisoned.is_some() {
            return Ok(false);
        }
        self.remove_waiting_victims()?;
        let Some(mut cur) = self.compaction.take().or_else(|| self.pick_victim()) else {
            return Ok(false);
        };
        if cur.durable_at.is_some() {
            return self.finish_victim(cur);
        }
        if cur.by_index.is_some() {
            return self.compact_from_index(cur, budget_bytes);
        }
        let now = self.now_ms();
        let mut examined = 0;
        let mut prefetched_to = cur.pos;
        let mut scratch = std::mem::take(&mut self.scratch);
        let result = loop {
            if self.log.segment(cur.slot).is_none() {
                break Ok(false);
            }
            if examined >= budget_bytes {
                self.compaction = Some(cur);
                break Ok(true);
            }
            let Some(seg) = self.log.segment(cur.slot) else { break Ok(false) };
            let orphans = seg.orphans;
            // Records between marks were overwritten, deleted or moved:
            // they are dropped unseen, but paid for as if walked. Keys
            // rewritten in the order they were written die in log order,
            // at the pace of the writes that pay for this walk; a walk
            // that jumped ahead would copy records about to die (the
            // `cache` test's overwrites under a bound were refused).
            let skip_dead = seg.skips_dead();
            if skip_dead {
                // Marks below `paid_to` were found clear, and a sealed
                // segment gains none.
                let from = cur.paid_to.max(cur.pos);
                let room = (budget_bytes - examined).next_multiple_of(RECORD_ALIGN_BYTES);
                let next = seg.next_marked_within(from, room).unwrap_or(seg.end);
                let paid_to = next.min(from + room);
                examined += paid_to.saturating_sub(from);
                self.counters.compacted_bytes += paid_to.saturating_sub(from) as u64;
                cur.paid_to = paid_to;
                if paid_to < next {
                    self.compaction = Some(cur);
                    break Ok(true);
                }
                #[cfg(debug_assertions)]
                self.assert_unseen_records_dead(cur.slot, cur.pos, next);
                cur.pos = next;
            }
            if cur.pos >= prefetched_to {
                prefetched_to = self.prefetch_index_of_records(cur.slot, cur.pos, PREFETCH_RECORDS, skip_dead);
            }
            let Some(seg) = self.log.segment(cur.slot) else { break Ok(false) };
            let Copied { offset, len, tombstone, .. } = match scan::walk(seg, cur.pos) {
                Walk::Record { offset, view } => Copied::of(offset, &view, &mut scratch),
                Walk::Damaged { offset, resume } => {
                    // Damage found at recovery was never indexed, so
                    // nothing live is lost here; `finish_victim` checks.
                    tracing::warn!(segment = %seg.path.display(), offset, "compaction skips a damaged record");
                    cur.pos = resume;
                    continue;
                }
                Walk::Unreadable { offset } => {
                    tracing::error!(segment = %seg.path.display(), offset, "record decodes only when checked");
                    break Ok(false);
                }
                Walk::End => break self.finish_victim(cur.clone()),
            };
            let hash = self.prefetched_hash(cur.slot, offset, &scratch);
            let here = self.log.loc(cur.slot, offset);
            let live = !tombstone && self.index.get(hash, |l| l == here).is_some();
            if live {
                if let Err(err) = self.compact_live(hash, here, now, cur.has_older, &mut scratch) {
                    // Resumed at this record, not from the start, which
                    // would write its tombstones again.
                    self.compaction = Some(cur);
                    break Err(err);
                }
            } else {
                // A dead record that may be its key's newest leaves a
                // tombstone behind if older segments may hold its key and
                // no live record does: a tombstone, or any record in a
                // segment with orphans. The others were overwritten or
                // deleted: looking their key up cost a cache miss for every
                // dead record.
                let (log, key) = (&self.log, scratch.as_slice());
                let unhidden = (tombstone || orphans) && self.index.get(hash, |l| log.key_at(l) == Some(key)).is_none();
                if cur.has_older && unhidden {
                    let tomb = RecordSpec { key, value: &[], expires_at_ms: None, tombstone: true };
                    if let Err(err) = self.append(&tomb, crate::log::Roll::Compact) {
                        self.compaction = Some(cur);
                        break Err(err);
                    }
                }
            }
            cur.pos = offset + len;
            examined += len;
            self.counters.compacted_bytes += len as u64;
        };
        self.scratch = scratch;
        result
    }

    /// Moves the record at `loc`, which the index points at (hash `hash`),
    /// out of its victim; or, if it has expired, reclaims it, leaving a
    /// tombstone while older segments may hold its key. The tombstone is
    /// written before the record leaves the index, as a DEL's is: if it
    /// cannot be, the record is still there for the next step.
    fn compact_live(&mut self, hash: u32, loc: Loc, now: u64, has_older: bool, scratch: &mut Vec<u8>) -> Result<()> {
        let Some(view) = self.log.unchecked(loc) else {
            // Left live in the victim, which is then kept (`remove_victim`).
            tracing::error!(loc, "an indexed record does not decode; its segment is kept");
            return Ok(());
        };
        let (len, expires_at_ms) = (view.len, view.expires_at_ms);
        if expires_at_ms.is_none_or(|at| at > now) {
            let to = self.move_record(loc, len, scratch, expires_at_ms)?;
            self.log.mark_live(to, len);
            self.log.mark_dead(loc, len);
            let moved = self.index.relocate(hash, loc, to, true);
            debug_assert!(moved, "live record is in the index");
            return Ok(());
        }
        if has_older {
            scratch.clear();
            scratch.extend_from_slice(view.key);
            let tomb = RecordSpec { key: scratch, value: &[], expires_at_ms: None, tombstone: true };
            self.append(&tomb, crate::log::Roll::Compact)?;
        }
        self.index.remove(hash, |l| l == loc);
        self.log.mark_dead(loc, len);
        self.counters.expired_reclaimed += 1;
        Ok(())
    }

    /// `compact_step` for a victim compacted from the index
    /// (`Cursor::by_index`): the index's entries are visited in hash
    /// order, those in the victim gathered and moved. Keys written
    /// meanwhile go to the head, never into the victim, and an entry moved
    /// within the index (its table growing) keeps its hash, so one pass in
    /// hash order finds every record still live in the victim. Progress
    /// through the hash space counts as progress through the victim's
    /// bytes, for the pace `compact_owed` keeps.
    fn compact_from_index(&mut self, mut cur: Cursor, budget_bytes: usize) -> Result<bool> {
        let now = self.now_ms();
        let mut found = std::mem::take(&mut self.index_pass_found);
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut examined = 0;
        let result = 'steps: loop {
            let (Some(seg), Some(from)) = (self.log.segment(cur.slot), cur.by_index) else { break Ok(false) };
            if seg.orphans {
                // The expiry sweep reclaimed a record here since the victim
                // was picked: its key may need a tombstone now, which only
                // a walk of every record finds. Records already moved are
                // dead here and are dropped by the walk. The walk may need
                // more room than the pass did: in a tight log where it does
                // not fit, the victim is left for `best_victim` to size
                // again.
                let room = if self.log.tight { self.log.compaction_room() } else { u64::MAX };
                cur.by_index = None;
                if Self::compaction_need(seg, cur.has_older) <= room {
                    self.compaction = Some(cur);
                }
                break Ok(true);
            }
            if examined >= budget_bytes {
                self.compaction = Some(cur);
                break Ok(true);
            }
            let victim_bytes = (seg.end - HEADER_BYTES) as u64;
            found.clear();
            let (log, slot, mut visits) = (&self.log, cur.slot, 0);
            let next = self.index.scan_from(from, |hash, loc| {
                visits += 1;
                if log.split(loc).0 == slot {
                    found.push((hash, loc));
                }
                if found.len() >= INDEX_PASS_BATCH_RECORDS || visits >= INDEX_PASS_VISITS_MAX {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            found.iter().for_each(|&(_, loc)| self.log.prefetch_record(loc));
            for &(hash, loc) in &found {
                if let Err(err) = self.compact_live(hash, loc, now, cur.has_older, &mut scratch) {
                    // Resumed at this entry: those before it are moved.
                    cur.by_index = Some(u64::from(hash));
                    self.compaction = Some(cur);
                    break 'steps Err(err);
                }
            }
            let covered = ((u128::from(next.unwrap_or(1 << 32) - from) * u128::from(victim_bytes)) >> 32) as u64;
            examined += covered as usize;
            self.counters.compacted_bytes += covered;
            match next {
                Some(hash) => cur.by_index = Some(hash),
                None => break self.finish_victim(cur),
            }
        };
        self.index_pass_found = found;
        self.scratch = scratch;
        result
    }

    /// Starts loading the index slots of up to `count` records of segment
    /// `slot` from `pos`, and returns where they end. A walk over a segment
    /// looks up every record's key at random in the index: with the slots
    /// of the next records loading meanwhile, their cache misses overlap.
    /// Measured under redis-benchmark `-t set,get -P 16 -r 1000000`: the
    /// compaction loop went from 22% to 4% of the shard's CPU profile, and
    /// ops per server CPU-second rose 3–6% (docs/benchmarks.md). The hashes
    /// are kept for the walk (`prefetched_hash`), which then hashes no key
    /// a second time.
    ///
    /// With `skip_dead` (the walk goes from mark to mark, `Segment::next_marked`)
    /// the records are the next `count` marked ones, their headers
    /// prefetched together first.
    pub(crate) fn prefetch_index_of_records(
        &mut self,
        slot: u32,
        mut pos: usize,
        count: usize,
        skip_dead: bool,
    ) -> usize {
        self.prefetched_hashes.clear();
        let Some(seg) = self.log.segment(slot) else { return pos };
        if skip_dead {
            let mut at = pos;
            for _ in 0..count {
                let Some(next) = seg.next_marked_within(at, PREFETCH_SKIP_SPAN_BYTES) else { break };
                crate::index::prefetch_read(&seg.bytes()[next]);
                at = next + RECORD_ALIGN_BYTES;
            }
        }
        let mut last_len = 0;
        for _ in 0..count {
            if skip_dead {
                match seg.next_marked_within(pos, PREFETCH_SKIP_SPAN_BYTES) {
                    Some(next) => pos = next,
                    None => break,
                }
            }
            match scan::walk(seg, pos) {
                Walk::Record { view, .. } => {
                    let hash = crate::store::index_hash_with(self.index_seed, view.key);
                    self.index.prefetch(hash);
                    self.prefetched_hashes.push_back((slot, pos, hash));
                    pos += view.len;
                    last_len = view.len;
                }
                Walk::Damaged { resume, .. } => pos = resume,
                Walk::Unreadable { .. } | Walk::End => break,
            }
        }
        if skip_dead {
            return pos;
        }
        // The headers of the next `count` records, guessed as long as the
        // last: each header was a cache miss the next decode waited for
        // (long records put one or two in a page, where the hardware's
        // prefetcher stops), and the walk ahead above goes one record at a
        // time. A wrong guess costs a wasted line.
        if last_len >= PREFETCH_HEADERS_MIN_RECORD_BYTES {
            let bytes = seg.bytes();
            for at in (1..=count).map(|k| pos + k * last_len).take_while(|&at| at < seg.end) {
                crate::index::prefetch_read(&bytes[at]);
            }
        }
        pos
    }

    /// Checks, in debug builds, what a walk that skipped the records of
    /// `slot` from `from` to `to` relied on: none was a tombstone or
    /// pointed at by the index.
    #[cfg(debug_assertions)]
    fn assert_unseen_records_dead(&self, slot: u32, mut from: usize, to: usize) {
        let Some(seg) = self.log.segment(slot) else { return };
        while from < to {
            let Walk::Record { view, .. } = scan::walk(seg, from) else { return };
            let here = self.log.loc(slot, from);
            assert!(!view.tombstone, "a tombstone at {from} of slot {slot} was skipped");
            let hash = self.index_hash(view.key);
            assert!(
                self.index.get(hash, |l| l == here).is_none(),
                "a live record at {from} of slot {slot} was skipped"
            );
            from += view.len;
        }
    }

    /// The index hash of the key of the record at `offset` of `slot`, as
    /// `prefetch_index_of_records` computed it (records are walked in
    /// order), or computed now.
    pub(crate) fn prefetched_hash(&mut self, slot: u32, offset: usize, key: &[u8]) -> u32 {
        while let Some(&(s, o, hash)) = self.prefetched_hashes.front() {
            if s != slot || o > offset {
                break;
            }
            self.prefetched_hashes.pop_front();
            if o == offset {
                debug_assert_eq!(hash, self.index_hash(key));
                return hash;
            }
        }
        self.index_hash(key)
    }

    /// Makes the copies durable, then deletes the victim.
    /// Under `everysec` (and `never` for a caller that plans flushes) the
    /// copies become durable with the next flush, off the owning thread:
    /// the victim waits for it in `compacted_waiting` while compaction goes
    /// on with the next one. Otherwise they are flushed here.
    fn finish_victim(&mut self, mut cur: Cursor) -> Result<bool> {
        if self.log.seal_after_flush {
            let mark = *cur.durable_at.get_or_insert_with(|| {
                let active = self.log.segment(self.log.active).expect("active segment");
                (active.header.seq, active.end)
            });
            if !self.log.durable_through(mark) {
                if self.compacted_waiting.len() < VICTIMS_WAITING_MAX {
                    self.compacted_waiting.push(cur);
                    return Ok(self.pick_victim().is_some());
                }
                self.compaction = Some(cur);
                return Ok(false);
            }
        } else {
            self.sync()?;
        }
        self.remove_victim(cur)
    }

    /// Removes the waiting victims whose copies a flush made durable.
    fn remove_waiting_victims(&mut self) -> Result<()> {
        let durable = |log: &crate::log::Log, c: &Cursor| c.durable_at.is_some_and(|mark| log.durable_through(mark));
        while let Some(i) = self.compacted_waiting.iter().position(|c| durable(&self.log, c)) {
            let cur = self.compacted_waiting.swap_remove(i);
            self.remove_victim(cur)?;
        }
        Ok(())
    }

    /// Deletes a victim whose every record was copied and made durable.
    fn remove_victim(&mut self, cur: Cursor) -> Result<bool> {
        let left = self.log.segment(cur.slot).map_or(0, |s| s.live_bytes);
        if left != 0 {
            // A live record could not be read back (damage after recovery).
            // Keep the segment for inspection rather than delete a record
            // the index still points at.
            tracing::error!(slot = cur.slot, live_bytes = left, "live records left in a compacted segment; kept");
            if let Some(seg) = self.log.segment_mut(cur.slot) {
                seg.damaged = true;
            }
            return Ok(false);
        }
        tracing::debug!(slot = cur.slot, seq = cur.seq, from_index = cur.by_index.is_some(), "segment compacted");
        self.log.remove_segment(cur.slot)?;
        if self.log.seal_after_flush {
            // The removal becomes durable with the next flush, which
            // flushes the directory too (`sync_due` asks for it): a
            // directory flush on this thread took 2-8 ms (`perf sched`).
            // Until then the segment still counts as older than the next
            // victims (`has_older_than`), whose tombstones are kept.
            self.log.unsettled.push(cur.seq);
        } else {
            self.log.sync_dir()?;
        }
        self.counters.compactions += 1;
        self.counters.compactions_from_index += u64::from(cur.by_index.is_some());
        Ok(self.pick_victim().is_some())
    }
}
