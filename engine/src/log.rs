//! The log: the set of segments, the log address space and the write head.
//!
//! A location (`Loc`) is a byte address in 8-byte units: the segment's slot
//! times the segment size plus the offset. With 32-bit locations a shard
//! addresses 32 GiB of segments; the slot count follows from the segment
//! size.

use std::path::PathBuf;

use crate::error::{Error, Result};
use crate::index::Loc;
use crate::record::{self, RecordSpec, RecordView, RECORD_ALIGN_BYTES};
use crate::segment::{self, Paging, Segment};

/// The suffix of removed segment files awaiting deletion.
pub const DOOMED_SUFFIX: &str = ".doomed";

/// Compacted segment files kept to be recycled, at most, and at most one
/// for every four segments of the log (a log that shrank gives its spares
/// back, and one of fewer than four segments keeps none: a spare would
/// hold more memory than recycling saves there). Compaction frees victims
/// in bursts while the log rolls at a steady pace: with one kept, 7 of
/// about 40 rolls found one
/// (redis-benchmark SETs of 1 KiB values, 200k keys). Each holds its pages
/// in the page cache and its disk space; under a memory bound they count
/// as used, and go before a write is refused.
pub const SPARE_FILES_MAX: usize = 4;

/// Records of the active segment whose writeback `start_writeback` starts
/// at once.
const WRITEBACK_CHUNK_BYTES: usize = 8 << 20;

/// Bytes of log one shard can address: 2^32 locations of 8 bytes.
pub const LOG_ADDRESS_SPACE_BYTES: u64 = (1u64 << 32) * RECORD_ALIGN_BYTES as u64;
/// Fewest segments a log may be bounded to (`Config::log_max_bytes`): one
/// to fill, and the four kept from writes (`Roll`).
pub const LOG_SLOTS_MIN: u32 = 5;

/// Who an append (and the roll to a new segment it may need) is for, and
/// so how many free segment slots it must leave. A log whose every slot
/// holds live data could take no delete (a tombstone needs room too),
/// could not compact (its copies need room), and could not be opened
/// again (an open starts a new segment): so writes stop three slots short,
/// deletes two, compaction one, and only an open or FLUSHALL takes the
/// last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Roll {
    /// SETs and every other write that adds data.
    Write,
    /// A DEL's tombstone.
    Delete,
    /// The records compaction and eviction move, and compaction's
    /// tombstones.
    Compact,
    /// FLUSHALL's new segment, and an open's while the log is not tight
    /// (a tight one goes on in its newest segment: `continue_newest`).
    Last,
}

/// A log with this few slots free is down to those kept from writes.
fn tight_at(free: u32) -> bool {
    free <= Roll::Write.keeps()
}

impl Roll {
    /// Free slots this roll must leave.
    fn keeps(self) -> u32 {
        match self {
            Roll::Write => 3,
            Roll::Delete => 2,
            Roll::Compact => 1,
            Roll::Last => 0,
        }
    }
}

/// One segment file to flush on another thread.
#[derive(Debug)]
pub struct FlushTarget {
    pub slot: u32,
    pub seq: u64,
    /// End of the records when the flush was planned.
    pub end: usize,
    /// The header was dirty when the flush was planned.
    pub header: bool,
    pub file: std::fs::File,
    pub path: PathBuf,
}

#[derive(Debug)]
pub struct Log {
    pub dir: PathBuf,
    pub size_log2: u8,
    /// Segment slots the log may use (`Config::log_max_bytes`).
    pub slots_max: u32,
    /// Free slots left when the active segment was made: an append whose
    /// class keeps more (`Roll::keeps`) goes into it only once that many
    /// are free again, so that a segment made for compaction does not
    /// fill with deletes, nor one made for deletes with writes.
    pub active_floor: u32,
    /// Few slots are free: compaction runs whatever the garbage
    /// (`Store::compaction_wanted`). Refreshed by `note_tightness`.
    pub tight: bool,
    /// Bytes of records promised to writes to come (`Store::hold_room`):
    /// other writes leave the slots they may need (`can_write`).
    pub held_bytes: u64,
    /// Segments by slot; `None` is a free slot.
    pub segments: Vec<Option<Segment>>,
    /// Slot of the segment taking appends.
    pub active: u32,
    /// Sequence number the next segment gets.
    pub next_seq: u64,
    /// Sealed segments whose tail or header has not been synced.
    pub unsynced: Vec<u32>,
    /// Resident bytes of every segment but the active one (see
    /// `resident_bytes`), recounted whenever the set of segments changes.
    pub inactive_resident_bytes: u64,
    /// Heap bytes of the segments' marks (`crate::marks`), recounted with
    /// `inactive_resident_bytes`.
    pub segments_marks_bytes: u64,
    /// Segments live in anonymous memory, not files (cache mode).
    pub in_memory: bool,
    /// Removed segments kept to become the next ones (`Segment::recycle`),
    /// the newest last: one evicted memory segment, or up to
    /// `SPARE_FILES_MAX` compacted files under their doomed names, mapped
    /// still.
    pub spares: Vec<Segment>,
    /// Seal a full segment only once a flush has made its records durable
    /// (`everysec`), instead of flushing it inline when the log rolls: the
    /// roll then costs the owning thread no disk wait.
    pub seal_after_flush: bool,
    /// Segment mappings are advised `MADV_RANDOM` (`always`): see
    /// `segment::Paging`.
    pub random_access: bool,
    /// New segments may be advised `MADV_HUGEPAGE` (files, not `always`,
    /// segments of `HUGE_SEGMENT_MIN_BYTES` or more)...
    pub huge_pages: bool,
    /// ...and are, while writes come fast (`Store::tick` decides).
    pub huge_wanted: bool,
    /// Full segments waiting for that flush, then for their seal.
    pub pending_seal: Vec<u32>,
    /// Removed segment files, renamed out of the way and not yet deleted:
    /// deleting a large file takes the filesystem milliseconds, which the
    /// owning thread can leave to another (`Store::take_doomed_files`).
    pub doomed: Vec<PathBuf>,
    /// A segment created ahead of need on another thread, which the next
    /// roll takes instead of creating one (`Store::begin_prepare`).
    pub prepared: Option<Segment>,
    /// The slot and seq reserved for a segment being created elsewhere.
    pub preparing: Option<Preparing>,
    /// Seqs of compacted segments whose removal no directory flush has
    /// made durable yet: after a crash they may be back, so they still
    /// count as older segments (`has_older_than`).
    pub unsettled: Vec<u64>,
    /// Rolls that made their file segment on the owning thread (the roll
    /// at open and FLUSHALL's included).
    pub rolls_waited: u64,
    /// Segments made from a spare (`Segment::recycle`).
    pub recycled: u64,
    /// Bytes of records (padding included) in all segments, and of those
    /// the index points at: kept as they change, so that compaction can
    /// ask after every batch whether it is wanted without walking every
    /// segment (`recount_totals` after open).
    pub used_bytes_total: u64,
    pub live_bytes_total: u64,
    /// The seq of the active segment when a preparation failed: no other
    /// is tried before the log rolls past it.
    pub prepare_failed_during: Option<u64>,
}

/// A segment being created on another thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Preparing {
    pub slot: u32,
    pub seq: u64,
    /// A roll could not wait for it and created a newer segment: it is
    /// discarded when it arrives (its seq is older than the head's).
    pub stale: bool,
}

impl Log {
    pub fn max_slots(&self) -> u32 {
        self.slots_max
    }

    /// Whether a segment may be made ahead now, for the next roll: one
    /// that `Roll::Write` could make itself even while the one being made
    /// holds a slot. Made with one slot fewer free, it held the very slot
    /// its roll needed whenever the roll came before it was ready, and a
    /// SET was refused with the log a segment short of its bound.
    pub fn may_prepare(&self) -> bool {
        u64::from(self.free_slots()) > self.keeps_now(Roll::Write) + 1
    }

    /// Free slots a roll of `roll` must leave now: its class's, and while
    /// room is held (`held_bytes`) those it may need on top of what writes
    /// keep, for writes and deletes alike: the commit of an MSET between
    /// its prepare and its commit writes as a write does.
    fn keeps_now(&self, roll: Roll) -> u64 {
        let held = self.segments_for(self.held_bytes);
        match roll {
            Roll::Write | Roll::Delete if held > 0 => u64::from(Roll::Write.keeps()) + held,
            _ => u64::from(roll.keeps()),
        }
    }

    /// Slots neither in use nor taken by a segment being made ahead.
    pub fn free_slots(&self) -> u32 {
        let used = self.segments.iter().flatten().count() as u32
            + u32::from(self.preparing.is_some())
            + u32::from(self.prepared.is_some());
        self.slots_max.saturating_sub(used)
    }

    pub fn segment_size(&self) -> usize {
        1 << self.size_log2
    }

    pub fn loc(&self, slot: u32, offset: usize) -> Loc {
        let addr = (u64::from(slot) << self.size_log2) | offset as u64;
        debug_assert_eq!(addr % RECORD_ALIGN_BYTES as u64, 0);
        (addr / RECORD_ALIGN_BYTES as u64) as Loc
    }

    pub fn split(&self, loc: Loc) -> (u32, usize) {
        let addr = u64::from(loc) * RECORD_ALIGN_BYTES as u64;
        ((addr >> self.size_log2) as u32, (addr & ((1 << self.size_log2) - 1)) as usize)
    }

    pub fn segment(&self, slot: u32) -> Option<&Segment> {
        self.segments.get(slot as usize)?.as_ref()
    }

    pub fn segment_mut(&mut self, slot: u32) -> Option<&mut Segment> {
        self.segments.get_mut(slot as usize)?.as_mut()
    }

    /// The record at `loc`, its checksum checked when `verify` is set.
    pub fn view(&self, loc: Loc, verify: bool) -> Option<RecordView<'_>> {
        let (slot, offset) = self.split(loc);
        let seg = self.segment(slot)?;
        let bytes = seg.bytes().get(offset..seg.end)?;
        match record::decode(bytes, seg.crc_key, verify) {
            Ok(view) => Some(view),
            Err(err) => {
                tracing::error!(segment = %seg.path.display(), offset, ?err, "record failed its check on read; not served");
                None
            }
        }
    }

    /// Starts loading the record at `loc`: its first cache line, and the
    /// next, which a small record crosses into three times in four (a
    /// 56-byte one at an 8-byte offset past 8 in its line); the key
    /// comparison and the checksum read both.
    pub fn prefetch_record(&self, loc: Loc) {
        let (slot, offset) = self.split(loc);
        let Some(bytes) = self.segment(slot).map(Segment::bytes) else { return };
        for at in [offset, (offset | 63) + 1] {
            if let Some(byte) = bytes.get(at) {
                crate::index::prefetch_read(byte);
            }
        }
    }

    /// The key of the record at `loc`, for index comparisons.
    pub fn key_at(&self, loc: Loc) -> Option<&[u8]> {
        self.unchecked(loc).map(|v| v.key)
    }

    /// The record at `loc`, decoded without checking its CRC (for key
    /// comparisons; check with `RecordView::checksum_ok` before serving).
    pub fn unchecked(&self, loc: Loc) -> Option<RecordView<'_>> {
        let (slot, offset) = self.split(loc);
        let seg = self.segment(slot)?;
        let bytes = seg.bytes().get(offset..seg.end)?;
        record::decode(bytes, seg.crc_key, false).ok()
    }

    /// Logs a record that failed its check on read.
    pub fn report_damage(&self, loc: Loc) {
        let (slot, offset) = self.split(loc);
        let path = self.segment(slot).map(|s| s.path.display().to_string()).unwrap_or_default();
        tracing::error!(segment = %path, offset, "record failed its check on read; not served");
    }

    /// Appends a record at the head, rolling to a new segment when the
    /// active one is full.
    pub fn append(&mut self, spec: &RecordSpec<'_>, roll: Roll) -> Result<(Loc, usize)> {
        let len = spec.encoded_len();
        if len > self.segment_size() - segment::HEADER_BYTES {
            return Err(Error::ValueTooLarge { len: spec.value.len(), limit: self.segment_size() / 2 });
        }
        let loc = self.append_with(len, spec.expires_at_ms, roll, |buf, key| spec.encode_into(buf, key))?;
        if spec.tombstone {
            let (slot, _) = self.split(loc);
            if let Some(seg) = self.segment_mut(slot) {
                seg.tombstone_bytes += len as u64;
            }
        }
        Ok((loc, len))
    }

    /// Appends an encoded record verbatim (copies by compaction and
    /// eviction) from a segment keyed `crc_key`, its checksum re-keyed for
    /// the head; `expires_at_ms` is the record's expiry.
    pub fn append_raw(&mut self, raw: &[u8], crc_key: u32, expires_at_ms: Option<u64>) -> Result<Loc> {
        assert!(
            raw.len().is_multiple_of(RECORD_ALIGN_BYTES) && raw.len() <= self.segment_size() - segment::HEADER_BYTES
        );
        self.append_with(raw.len(), expires_at_ms, Roll::Compact, |buf, to| {
            buf.copy_from_slice(raw);
            record::rekey(buf, crc_key, to);
        })
    }

    /// Appends `len` bytes that `write` fills, given the checksum key of
    /// the segment they land in.
    fn append_with(
        &mut self,
        len: usize,
        expires_at_ms: Option<u64>,
        roll: Roll,
        write: impl Fn(&mut [u8], u32),
    ) -> Result<Loc> {
        if !self.active_takes(roll) {
            return Err(Error::LogFull { slots: self.max_slots() });
        }
        let active = self.active;
        let seg = self.segments[active as usize].as_mut().expect("active segment");
        let key = seg.crc_key;
        if let Some(offset) = seg.append_with(len, |buf| write(buf, key)) {
            seg.note_expiry(expires_at_ms);
            self.used_bytes_total += len as u64;
            return Ok(self.loc(active, offset));
        }
        self.roll(roll)?;
        let active = self.active;
        let seg = self.segments[active as usize].as_mut().expect("active segment");
        let key = seg.crc_key;
        let offset = seg.append_with(len, |buf| write(buf, key)).expect("a record that fits an empty segment");
        seg.note_expiry(expires_at_ms);
        self.used_bytes_total += len as u64;
        Ok(self.loc(active, offset))
    }

    /// Resident bytes of the segments and of the one made ahead of need.
    /// (A spare being recycled on another thread is not counted meanwhile:
    /// at most one segment, which the bound's headroom covers.)
    pub fn resident_bytes(&self) -> u64 {
        self.inactive_resident_bytes
            + self.segment(self.active).map_or(0, Segment::resident_bytes)
            + self.prepared.as_ref().map_or(0, Segment::resident_bytes)
    }

    /// Heap bytes of the segments' marks (`crate::marks`), the spares'
    /// and the one made ahead's included.
    pub fn marks_bytes(&self) -> u64 {
        let others = self.spares.iter().chain(&self.prepared);
        self.segments_marks_bytes + others.map(|s| s.marks_bytes() as u64).sum::<u64>()
    }

    /// Resident bytes of the spare segments.
    pub fn spare_bytes(&self) -> u64 {
        self.spares.iter().map(Segment::resident_bytes).sum()
    }

    /// Makes directory changes durable; nothing to do for memory segments.
    pub fn sync_dir(&mut self) -> Result<()> {
        if self.in_memory {
            return Ok(());
        }
        segment::sync_dir(&self.dir)?;
        self.note_dir_synced(None);
        Ok(())
    }

    /// Notes a directory flush: the spares renamed before it began have
    /// durable removed names (`Segment::removal_durable`). `only`: the
    /// seqs of the removals that a flush run elsewhere settled, when other
    /// spares may have been renamed after it began.
    pub fn note_dir_synced(&mut self, only: Option<&[u64]>) {
        for spare in &mut self.spares {
            if only.is_none_or(|seqs| seqs.contains(&spare.header.seq)) {
                spare.removal_durable = true;
            }
        }
    }

    /// Recounts `inactive_resident_bytes` after segments came or went.
    pub fn recount_resident(&mut self) {
        self.segments_marks_bytes = self.segments.iter().flatten().map(|s| s.marks_bytes() as u64).sum();
        let active = self.active as usize;
        self.inactive_resident_bytes = self
            .segments
            .iter()
            .enumerate()
            .filter(|&(slot, _)| slot != active)
            .filter_map(|(_, s)| s.as_ref())
            .map(Segment::resident_bytes)
            .sum();
    }

    /// Seals the active segment and opens a fresh one: the one made ahead
    /// of need (`Store::begin_prepare`) if it is there, else a spare
    /// recycled, else a new one.
    ///
    /// The old segment's records are made durable before its header says
    /// where they end, so that a sealed end never covers bytes the disk
    /// may not have (which recovery would take for damage). One flush per
    /// segment is cheap at any fsync policy.
    pub fn roll(&mut self, roll: Roll) -> Result<()> {
        self.drop_untakeable_prepared()?;
        let fresh = match self.prepared.take() {
            // Made ahead only while `Roll::Write` could take a slot.
            Some(ready) => ready,
            None => {
                let full = Error::LogFull { slots: self.max_slots() };
                // A segment being made ahead still holds its slot (until it
                // is done and found stale), counted here: a roll must not
                // take a slot kept for others. `may_prepare` leaves one
                // for the roll besides it.
                if u64::from(self.free_slots()) <= self.keeps_now(roll) {
                    return Err(full);
                }
                let slot = self.free_slot().ok_or(full)?;
                if !self.in_memory {
                    self.rolls_waited += 1;
                }
                let spare = self.take_spare();
                let fresh = if self.in_memory && spare.is_none() {
                    Segment::in_memory(slot, self.next_seq, self.size_log2)?
                } else {
                    Segment::make(&self.dir, slot, self.next_seq, self.size_log2, spare, false, self.paging())?
                };
                self.recycled += u64::from(fresh.header.recycled);
                self.next_seq += 1;
                if let Some(p) = &mut self.preparing {
                    p.stale = true;
                }
                fresh
            }
        };
        let slot = fresh.header.slot;
        if let Some(old) = self.segments.get_mut(self.active as usize).and_then(Option::as_mut) {
            old.appends_done();
            if self.seal_after_flush {
                // Unsealed until flushed: a crash before then leaves it to
                // recovery's torn-tail rule, which is what its state is.
                self.pending_seal.push(self.active);
            } else {
                old.sync().map_err(|source| Error::SyncFailed { path: old.path.clone(), source })?;
                old.seal();
            }
            self.unsynced.push(self.active);
        }
        if slot as usize >= self.segments.len() {
            self.segments.resize_with(slot as usize + 1, || None);
        }
        self.segments[slot as usize] = Some(fresh);
        self.active = slot;
        self.active_floor = self.free_slots();
        self.tight = tight_at(self.active_floor);
        self.recount_resident();
        Ok(())
    }

    /// Whether an append of class `roll` may go into the active segment:
    /// it was made with that many slots free, or they are free again (the
    /// count only then: it walks the slots).
    fn active_takes(&self, roll: Roll) -> bool {
        self.active_floor >= roll.keeps() || self.free_slots() >= roll.keeps()
    }

    /// Bytes still free in the active segment for an append of class
    /// `roll` (`active_takes`).
    fn active_rest(&self, roll: Roll) -> u64 {
        match self.segment(self.active) {
            Some(seg) if self.active_takes(roll) => (self.segment_size() - seg.end) as u64,
            _ => 0,
        }
    }

    /// Whether `bytes` of records can be written now besides the room held
    /// (`held_bytes`), in the free segments a write may take
    /// (`segments_for`), or, for a write done at once (`at_once`), in the
    /// rest of the active segment. That rest is not counted for room held
    /// until later: nothing keeps other writes from filling it first.
    pub fn can_write(&self, bytes: u64, at_once: bool) -> bool {
        let need = bytes + self.held_bytes;
        let here = at_once && need <= self.active_rest(Roll::Write);
        here || u64::from(self.free_slots().saturating_sub(Roll::Write.keeps())) >= self.segments_for(need)
    }

    /// Fresh segments that surely hold `bytes` of records. A record that
    /// does not fit a segment's rest goes to the next, wasting that rest:
    /// values are at most half a segment, so with its key and header a
    /// record stays under three quarters of one (at the default 64 MiB
    /// segments; keys of up to 64 KiB make the smallest ones an
    /// exception), and each segment takes at least a quarter.
    fn segments_for(&self, bytes: u64) -> u64 {
        bytes.div_ceil(((self.segment_size() - segment::HEADER_BYTES) / 4) as u64)
    }

    /// Notes whether the log is down to the slots kept from writes.
    pub fn note_tightness(&mut self) {
        self.tight = tight_at(self.free_slots());
    }

    /// Bytes compaction may still append: the rest of the active segment
    /// if it may (`active_floor`), and the free slots it may take.
    pub fn compaction_room(&self) -> u64 {
        let capacity = (self.segment_size() - segment::HEADER_BYTES) as u64;
        let free = u64::from(self.free_slots().saturating_sub(Roll::Compact.keeps()));
        self.active_rest(Roll::Compact) + free * capacity
    }

    /// Makes the newest segment the active one again, unsealed, instead of
    /// rolling to a new one: an open of a log down to the slots kept from
    /// writes, which would otherwise take one of them at every open (and
    /// with none left could not open at all).
    ///
    /// Not a segment in which this open found damage: unsealed, it would
    /// be cut at the damage, with every record after it.
    pub fn continue_newest(&mut self, damaged: &[u64]) -> Result<()> {
        let full = Error::LogFull { slots: self.max_slots() };
        let Some(&slot) = self.by_seq().last() else { return Err(full) };
        let seg = self.segment_mut(slot).expect("a listed segment");
        if damaged.contains(&seg.header.seq) || seg.damaged {
            tracing::error!(segment = %seg.path.display(), "log full, and its newest segment holds damage: not opened");
            return Err(full);
        }
        seg.unseal()?;
        self.unsynced.retain(|&s| s != slot);
        self.active = slot;
        self.active_floor = self.free_slots();
        self.recount_resident();
        Ok(())
    }

    /// Seals the active segment without opening another (clean shutdown).
    pub fn seal_active(&mut self) {
        let active = self.active;
        if let Some(seg) = self.segment_mut(active) {
            if !seg.header.sealed {
                seg.seal();
            }
        }
    }

    /// The lowest slot that neither holds a segment nor is reserved for one
    /// being prepared.
    pub fn free_slot(&self) -> Option<u32> {
        let reserved = |slot: u32| {
            self.preparing.is_some_and(|p| p.slot == slot)
                || self.prepared.as_ref().is_some_and(|s| s.header.slot == slot)
        };
        (0..self.max_slots()).find(|&slot| self.segment(slot).is_none() && !reserved(slot))
    }

    /// Counts a record's bytes as no longer live.
    /// The index must no longer point at it: its mark goes too
    /// (`crate::marks`), and a walk then drops it unseen.
    pub fn mark_dead(&mut self, loc: Loc, len: usize) {
        let (slot, offset) = self.split(loc);
        if let Some(seg) = self.segments.get_mut(slot as usize).and_then(Option::as_mut) {
            seg.unmark(offset);
            debug_assert!(seg.live_bytes >= len as u64, "live bytes never go negative");
            let dead = (len as u64).min(seg.live_bytes);
            seg.live_bytes -= dead;
            self.live_bytes_total = self.live_bytes_total.saturating_sub(dead);
        }
    }

    pub fn mark_live(&mut self, loc: Loc, len: usize) {
        let (slot, _) = self.split(loc);
        if let Some(seg) = self.segments.get_mut(slot as usize).and_then(Option::as_mut) {
            seg.live_bytes += len as u64;
            self.live_bytes_total += len as u64;
        }
    }

    /// Bytes of records in all segments, and of those the index points
    /// at, counted segment by segment.
    pub fn totals(&self) -> (u64, u64) {
        let segments = self.segments.iter().flatten();
        (segments.clone().map(|s| (s.end - segment::HEADER_BYTES) as u64).sum(), segments.map(|s| s.live_bytes).sum())
    }

    /// Sets `used_bytes_total` and `live_bytes_total` from the segments.
    pub fn recount_totals(&mut self) {
        (self.used_bytes_total, self.live_bytes_total) = self.totals();
    }

    pub fn needs_sync(&self) -> bool {
        if self.in_memory {
            return false;
        }
        !self.unsynced.is_empty()
            || !self.unsettled.is_empty()
            || self.segment(self.active).is_some_and(Segment::needs_sync)
    }

    /// Starts writing back, without waiting, what the next `sync` would
    /// write: the sealed segments not yet synced, and the active one's
    /// records once `WRITEBACK_CHUNK_BYTES` of them wait. A store that
    /// flushes on its own thread (`never`'s compaction, `everysec`) then
    /// waits for the disk only for the last few MiB, as RocksDB's
    /// `bytes_per_sync` does.
    pub fn start_writeback(&mut self) {
        if self.in_memory {
            return;
        }
        for &slot in &self.unsynced {
            if let Some(seg) = self.segments.get_mut(slot as usize).and_then(Option::as_mut) {
                seg.start_writeback(seg.end, 0);
            }
        }
        let active = self.active;
        if let Some(seg) = self.segment_mut(active) {
            seg.start_writeback(seg.end, WRITEBACK_CHUNK_BYTES);
        }
    }

    /// Makes every appended byte durable, then seals the full segments
    /// that waited for it and makes their seals durable too.
    pub fn sync(&mut self) -> std::io::Result<()> {
        for slot in std::mem::take(&mut self.unsynced) {
            if let Some(seg) = self.segment_mut(slot) {
                seg.sync()?;
            }
        }
        let active = self.active;
        if let Some(seg) = self.segment_mut(active) {
            seg.sync()?;
        }
        for slot in std::mem::take(&mut self.pending_seal) {
            if let Some(seg) = self.segment_mut(slot) {
                seg.seal();
                seg.sync()?;
            }
        }
        if !self.unsettled.is_empty() {
            segment::sync_dir_io(&self.dir)?;
            self.unsettled.clear();
            self.note_dir_synced(None);
        }
        Ok(())
    }

    /// The flushes that `sync` would do, for another thread to do with
    /// `fdatasync` (which writes back pages dirtied through the mapping):
    /// the unsynced sealed segments and the active one.
    pub fn flush_targets(&self) -> std::io::Result<Vec<FlushTarget>> {
        let mut slots = self.unsynced.clone();
        slots.push(self.active);
        let mut targets = Vec::new();
        for slot in slots {
            let Some(seg) = self.segment(slot) else { continue };
            if let Some(target) = seg.flush_target() {
                let (file, end, header) = target?;
                targets.push(FlushTarget { slot, seq: seg.header.seq, end, header, file, path: seg.path.clone() });
            }
        }
        Ok(targets)
    }

    /// True when every record up to `(seq, end)` (a segment and an offset
    /// in it) is durable: older segments entirely, that one up to `end`.
    pub fn durable_through(&self, (seq, end): (u64, usize)) -> bool {
        self.segments.iter().flatten().all(|s| match s.header.seq.cmp(&seq) {
            std::cmp::Ordering::Less => s.synced_to >= s.end,
            std::cmp::Ordering::Equal => s.synced_to >= end,
            std::cmp::Ordering::Greater => true,
        })
    }

    /// Notes flushes done elsewhere (segments since removed are skipped),
    /// and seals the full segments whose records are now durable (their
    /// headers go out with the next flush).
    pub fn flushed(&mut self, targets: &[FlushTarget]) {
        for t in targets {
            if let Some(seg) = self.segment_mut(t.slot).filter(|s| s.header.seq == t.seq) {
                seg.flushed(t.end, t.header);
            }
        }
        let mut pending = std::mem::take(&mut self.pending_seal);
        pending.retain(|&slot| match self.segment_mut(slot) {
            Some(seg) if seg.synced_to >= seg.end => {
                seg.seal();
                false
            }
            Some(_) => true,
            None => false,
        });
        self.pending_seal = pending;
        let segments = &self.segments;
        self.unsynced
            .retain(|&slot| segments.get(slot as usize).and_then(Option::as_ref).is_some_and(Segment::needs_sync));
    }

    /// Removes a segment (its file renamed out of the way, kept as a spare
    /// or deleted later) and frees its slot.
    ///
    /// The file leaves its name before the segment leaves the log. If the
    /// rename fails (a full disk, say), nothing has changed: the segment
    /// is still in the log, still counted as older than every later victim
    /// (so their tombstones are kept), and removing it can be tried again.
    /// Taken out first, a segment whose file stayed under its name was
    /// forgotten by compaction, which then dropped the tombstones that hid
    /// its records: they came back at the next open.
    pub fn remove_segment(&mut self, slot: u32) -> Result<()> {
        assert_ne!(slot, self.active, "the active segment is never removed");
        let Some(seg) = self.segments.get(slot as usize).and_then(Option::as_ref) else { return Ok(()) };
        let doomed = if seg.is_in_memory() { None } else { Some(rename_out(seg)?) };
        let seg = self.segments[slot as usize].take().expect("checked above");
        self.used_bytes_total = self.used_bytes_total.saturating_sub((seg.end - segment::HEADER_BYTES) as u64);
        self.live_bytes_total = self.live_bytes_total.saturating_sub(seg.live_bytes);
        match doomed {
            Some(doomed) => self.keep_or_delete(seg, doomed),
            None if self.spares.is_empty() => self.spares.push(seg),
            None => {}
        }
        self.unsynced.retain(|&s| s != slot);
        self.pending_seal.retain(|&s| s != slot);
        while matches!(self.segments.last(), Some(None)) {
            self.segments.pop();
        }
        self.recount_resident();
        self.note_tightness();
        Ok(())
    }

    /// Renames the file of a segment that is not in the log (a spare or a
    /// prepared one) out of the way at once, then keeps it as a spare or
    /// deletes it later (`keep_or_delete`).
    pub fn doom(&mut self, seg: Segment) -> Result<()> {
        let doomed = rename_out(&seg)?;
        self.keep_or_delete(seg, doomed);
        Ok(())
    }

    /// A segment whose file was renamed `doomed` (the slot's name is free
    /// for a new segment, and recovery deletes the file): kept, mapped, as
    /// a spare while there are fewer than `SPARE_FILES_MAX`, or deleted
    /// later.
    fn keep_or_delete(&mut self, mut seg: Segment, doomed: PathBuf) {
        let segments = self.segments.iter().flatten().count();
        let spares_max = (segments / 4).min(SPARE_FILES_MAX);
        // Under `always` a segment opened at startup may hold large folios
        // that every flush would write back whole, and a segment in 2 MiB
        // folios must not take slow writes (`segment::Paging`).
        if seg.can_recycle() && !(self.random_access && seg.opened_at_start) && self.may_take(&seg) {
            seg.path = doomed;
            self.spares.push(seg);
        } else {
            self.doomed.push(doomed);
        }
        // The oldest go first: the newest spare's pages are the likeliest
        // to be in the page cache still.
        let excess = self.spares.len().saturating_sub(spares_max);
        self.doomed.extend(self.spares.drain(..excess).map(|spare| spare.path.clone()));
    }

    /// Counts every record of a segment as dead (FLUSHALL: the records
    /// below the flush floor are gone even if their file outlives a failed
    /// removal).
    pub fn forget_live(&mut self, slot: u32) {
        if let Some(seg) = self.segments.get_mut(slot as usize).and_then(Option::as_mut) {
            self.live_bytes_total = self.live_bytes_total.saturating_sub(seg.live_bytes);
            seg.live_bytes = 0;
        }
    }

    /// How a segment made now is advised (`segment::Paging`).
    pub fn paging(&self) -> Paging {
        if self.random_access {
            Paging::Random
        } else if self.huge_pages && self.huge_wanted {
            Paging::Huge
        } else {
            Paging::Normal
        }
    }

    /// Whether `seg` may become the active segment now: not one in 2 MiB
    /// folios while writes come slowly.
    pub fn may_take(&self, seg: &Segment) -> bool {
        !seg.huge || self.paging() == Paging::Huge
    }

    /// Discards the segment made ahead if it may not become the active one
    /// now (made in 2 MiB folios while writes came fast; they no longer do).
    pub fn drop_untakeable_prepared(&mut self) -> Result<()> {
        if self.prepared.as_ref().is_none_or(|ready| self.may_take(ready)) {
            return Ok(());
        }
        match self.prepared.take() {
            Some(ready) => self.doom(ready),
            None => Ok(()),
        }
    }

    /// The newest spare, if it may become the active segment now; the ones
    /// that may not are deleted.
    pub fn take_spare(&mut self) -> Option<Segment> {
        while let Some(spare) = self.spares.pop() {
            if self.may_take(&spare) {
                return Some(spare);
            }
            self.doomed.push(spare.path.clone());
        }
        None
    }

    /// Gives up the spare files: they join the files to delete. True when
    /// there were any.
    pub fn discard_spare_files(&mut self) -> bool {
        if self.in_memory || self.spares.is_empty() {
            return false;
        }
        self.doomed.extend(self.spares.drain(..).map(|spare| spare.path.clone()));
        true
    }

    /// Live segments, oldest first.
    pub fn by_seq(&self) -> Vec<u32> {
        let mut slots: Vec<u32> =
            self.segments.iter().enumerate().filter(|(_, s)| s.is_some()).map(|(i, _)| i as u32).collect();
        slots.sort_by_key(|&slot| self.segment(slot).map(|s| s.header.seq));
        slots
    }

    /// True when some segment is older than `seq`, or was and may be back
    /// after a crash (its removal is not durable yet): a tombstone or
    /// expired record in a segment at `seq` may still hide an older version
    /// there.
    pub fn has_older_than(&self, seq: u64) -> bool {
        self.oldest_seq().is_some_and(|oldest| oldest < seq)
    }

    /// The sequence number of the oldest segment, counting those whose
    /// removal is not durable yet (see `has_older_than`).
    pub fn oldest_seq(&self) -> Option<u64> {
        self.segments.iter().flatten().map(|s| s.header.seq).chain(self.unsettled.iter().copied()).min()
    }
}

/// Renames a segment's file to its doomed name (`NNNNNN.seg.<seq>` plus
/// `DOOMED_SUFFIX`), which recovery deletes.
fn rename_out(seg: &Segment) -> Result<PathBuf> {
    let doomed = seg.path.with_extension(format!("seg.{}{DOOMED_SUFFIX}", seg.header.seq));
    std::fs::rename(&seg.path, &doomed).map_err(Error::io(format!("rename {}", seg.path.display())))?;
    Ok(doomed)
}

#[cfg(test)]
mod tests {
    use crate::{Config, FsyncPolicy, SetOptions, Store};

    fn store_with_garbage(dir: &std::path::Path, elsewhere: bool) -> Store {
        let config = Config {
            segment_size_bytes: 64 << 10,
            fsync: FsyncPolicy::Never,
            compaction_garbage_ratio_min: 0.2,
            ..Config::default()
        };
        let (mut store, _) = Store::open(dir, config).unwrap();
        if elsewhere {
            store.plan_flushes_elsewhere();
        }
        // Twelve segments of records, all overwritten: their files become
        // spares as compaction removes them.
        for v in [1u8, 2] {
            for i in 0..6000u32 {
                store.set(format!("key-{i:012}").as_bytes(), &[v; 100], SetOptions::default()).unwrap();
            }
        }
        store
    }

    fn compact(store: &mut Store) {
        for _ in 0..10_000 {
            if !store.compact_step(1 << 20).unwrap() {
                return;
            }
        }
        panic!("compaction did not finish");
    }

    fn removals_durable(store: &Store) -> Vec<bool> {
        store.log.spares.iter().map(|s| s.removal_durable).collect()
    }

    /// Under flushes planned elsewhere a spare's removal is durable
    /// exactly when no flush still has to settle it.
    fn assert_durable_unless_unsettled(store: &Store) {
        for spare in &store.log.spares {
            let unsettled = store.log.unsettled.contains(&spare.header.seq);
            assert_eq!(spare.removal_durable, !unsettled, "spare {}", spare.header.seq);
        }
    }

    /// A spare whose removed name a directory flush made durable is
    /// recycled without one more; the others get theirs first.
    #[test]
    fn spares_know_whether_their_removal_is_durable() {
        // Inline: compaction flushes the directory after each removal.
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_garbage(dir.path(), false);
        compact(&mut store);
        let durable = removals_durable(&store);
        assert!(!durable.is_empty() && durable.iter().all(|&d| d), "{durable:?}");

        // Planned elsewhere: durable once the flush that settles the
        // removal has run. Compaction waits for that flush too (for its
        // copies), so each round removes victims and keeps them unsettled.
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_garbage(dir.path(), true);
        let (mut seen_unsettled, mut seen_settled) = (false, false);
        for _ in 0..100 {
            if seen_unsettled && seen_settled {
                break;
            }
            compact(&mut store);
            assert_durable_unless_unsettled(&store);
            seen_unsettled |= removals_durable(&store).contains(&false);
            flush(&mut store);
            assert_durable_unless_unsettled(&store);
            seen_settled |= removals_durable(&store).contains(&true);
        }
        assert!(seen_unsettled && seen_settled, "{:?}", store.stats());
    }

    fn flush(store: &mut Store) {
        if let Some(job) = store.begin_sync().unwrap() {
            let took = job.run();
            store.finish_sync(job, took).unwrap();
        }
    }

    /// Compacts in small steps until `n` removals wait for a directory
    /// flush.
    fn remove_until_unsettled(store: &mut Store, n: usize) {
        for _ in 0..10_000 {
            if store.log.unsettled.len() >= n {
                return;
            }
            assert!(store.compact_step(4 << 10).unwrap(), "no victim left: {:?}", store.stats());
        }
        panic!("{n} removals never waited");
    }

    /// A flush run elsewhere makes durable only the removals made before
    /// it began (`SyncJob::settles`): a spare renamed while it ran still
    /// needs its own directory flush.
    #[test]
    fn a_flush_elsewhere_settles_only_the_removals_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_garbage(dir.path(), true);
        // Everything durable: a victim with nothing to copy goes at once.
        flush(&mut store);
        remove_until_unsettled(&mut store, 1);
        let job = store.begin_sync().unwrap().expect("a removal waits for a directory flush");
        remove_until_unsettled(&mut store, 3);
        let took = job.run();
        store.finish_sync(job, took).unwrap();
        assert_durable_unless_unsettled(&store);
        let durable = removals_durable(&store);
        assert!(durable.contains(&true) && durable.contains(&false), "{durable:?}");
    }
}
