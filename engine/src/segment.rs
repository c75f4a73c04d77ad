//! Segment files: fixed-size, preallocated, memory-mapped, append-only.
//!
//! ```text
//! Segment header, 32 bytes, little-endian:
//!  0        8         10        11      12      16       24           28
//! +--------+---------+---------+-------+-------+--------+------------+------------+
//! | magic  | version | size    | flags | slot  | seq    | sealed_end | header_crc |
//! | 8 B    | u16     | log2 u8 | u8    | u32   | u64    | u32        | u32        |
//! +--------+---------+---------+-------+-------+--------+------------+------------+
//! ```
//!
//! Records follow from byte 32 to `sealed_end` (sealed) or to the first
//! bytes that do not decode (the active segment). `seq` orders segments by
//! creation; a record is newer than another when its segment's `seq` is
//! higher, or the seq is equal and its offset higher.
//!
//! A compacted segment's file is not always deleted: the next segment may
//! be made from it (`Segment::recycle`), its pages still in the page cache
//! and mapped, so that appends neither fault in nor zero fresh memory. Its
//! old records stay behind the new ones; they never pass a check again
//! because every segment keys its records' checksums with its own `seq`
//! (`crc_key`).

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{Error, Result};
use crate::marks::RecordMarks;

pub const MAGIC: [u8; 8] = *b"RINGKVSG";
/// The version new segments are written with: record checksums keyed by
/// the segment (`crc_key`).
pub const FORMAT_VERSION: u16 = 2;
/// Version 1 segments (unkeyed checksums) are still read, and compacted
/// away like any other, but never recycled.
pub const FORMAT_VERSION_UNKEYED: u16 = 1;
pub const HEADER_BYTES: usize = 32;
const FLAG_SEALED: u8 = 1;
const FLAG_RECYCLED: u8 = 2;
/// Granularity of resident memory...
const PAGE_BYTES: u64 = 4096;
/// ...in a segment advised `MADV_HUGEPAGE` (x86-64's PMD size).
const HUGE_PAGE_BYTES: u64 = 2 << 20;
/// Smallest segment advised `MADV_HUGEPAGE`: a smaller one would be
/// faulted in whole by its header's write, in one folio.
pub const HUGE_SEGMENT_MIN_BYTES: usize = 4 << 20;
/// How far past the head an append asks the CPU to start loading the log
/// lines the next appends will overwrite (`Segment::prefetch_ahead`).
/// The log's memory was last touched a whole pass over the log ago, so
/// each line of an append was a miss the stores queued behind; the
/// hardware's prefetcher stops at every 4 KiB page, which holds four
/// 1 KiB records. Criterion's 1 KiB sets, three runs each (with
/// `prefetchw`): 441 µs per 1000 without, 397 µs at 4 KiB ahead, 382 µs
/// at 8 KiB. A read prefetch (a line no other core holds comes in
/// exclusive, ready for the stores) measured the same in
/// `engine_interleaved`: 0.75x-0.84x the `HashMap` against 0.68x-0.72x
/// without, and needs no instruction outside the x86-64 baseline.
const PREFETCH_AHEAD_BYTES: usize = 8 << 10;
const CACHE_LINE_BYTES: usize = 64;
/// Appends from this long prefetch ahead; shorter ones fill a page's
/// lines one after another, which the hardware's prefetcher follows.
const PREFETCH_AHEAD_MIN_RECORD_BYTES: usize = 256;
/// CRC-32 of the two zero bytes a zeroed region's "record" would cover
/// (meta and value length both zero). No segment has this checksum key, so
/// untouched, zeroed space never decodes as a record.
pub const ZERO_RECORD_CRC: u32 = 0x41D9_12FF;

/// The checksum key of the records of segment `seq` (format.md,
/// "Records"): distinct for any two seqs less than 2^32 - 1 apart, so a
/// recycled file's old records fail every check in its new life, and never
/// `ZERO_RECORD_CRC`. Version 1 segments have key 0 (plain CRC-32).
pub fn crc_key(version: u16, seq: u64) -> u32 {
    if version == FORMAT_VERSION_UNKEYED {
        return 0;
    }
    // `mix` is a bijection of u32; `seq` is taken modulo 2^32 - 1, so the
    // one input that would give ZERO_RECORD_CRC, u32::MAX, never occurs.
    let x = (seq % u64::from(u32::MAX)) as u32;
    mix(x) ^ mix(u32::MAX) ^ ZERO_RECORD_CRC
}

/// A bijective 32-bit mixer (xorshift-multiply rounds, each invertible):
/// consecutive seqs get keys that differ in about half their bits.
fn mix(mut x: u32) -> u32 {
    x ^= x >> 16;
    x = x.wrapping_mul(0x7feb_352d);
    x ^= x >> 15;
    x = x.wrapping_mul(0x846c_a68b);
    x ^ (x >> 16)
}

/// The fields of a segment header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// `FORMAT_VERSION`, or `FORMAT_VERSION_UNKEYED` for a segment an
    /// older build wrote (kept when it is sealed).
    pub version: u16,
    pub size_log2: u8,
    pub sealed: bool,
    /// The file was an earlier segment: bytes past the records are that
    /// segment's, not zeros.
    pub recycled: bool,
    pub slot: u32,
    pub seq: u64,
    /// End of the records when sealed; zero otherwise.
    pub sealed_end: u32,
}

const _: () = assert!(HEADER_BYTES == 8 + 2 + 1 + 1 + 4 + 8 + 4 + 4);

impl Header {
    /// The header of a new, empty segment.
    pub fn fresh(size_log2: u8, slot: u32, seq: u64, recycled: bool) -> Header {
        Header { version: FORMAT_VERSION, size_log2, sealed: false, recycled, slot, seq, sealed_end: 0 }
    }

    /// The key of this segment's record checksums.
    pub fn crc_key(&self) -> u32 {
        crc_key(self.version, self.seq)
    }

    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10] = self.size_log2;
        b[11] = if self.sealed { FLAG_SEALED } else { 0 } | if self.recycled { FLAG_RECYCLED } else { 0 };
        b[12..16].copy_from_slice(&self.slot.to_le_bytes());
        b[16..24].copy_from_slice(&self.seq.to_le_bytes());
        b[24..28].copy_from_slice(&self.sealed_end.to_le_bytes());
        let crc = crc32fast::hash(&b[..28]);
        b[28..32].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes a header, explaining what is wrong when it cannot.
    pub fn decode(b: &[u8]) -> Result<Header, String> {
        let b: &[u8; HEADER_BYTES] = b
            .get(..HEADER_BYTES)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| "shorter than a segment header".to_string())?;
        let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if b[0..8] != MAGIC {
            return Err("bad magic".into());
        }
        let stored = le32(28);
        let computed = crc32fast::hash(&b[..28]);
        if stored != computed {
            return Err(format!("header checksum mismatch: stored {stored:#010x}, computed {computed:#010x}"));
        }
        let version = u16::from_le_bytes([b[8], b[9]]);
        if version != FORMAT_VERSION && version != FORMAT_VERSION_UNKEYED {
            return Err(format!(
                "format version {version}, this build reads {FORMAT_VERSION_UNKEYED} and {FORMAT_VERSION}"
            ));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[16..24]);
        Ok(Header {
            version,
            size_log2: b[10],
            sealed: b[11] & FLAG_SEALED != 0,
            recycled: b[11] & FLAG_RECYCLED != 0,
            slot: le32(12),
            seq: u64::from_le_bytes(seq),
            sealed_end: le32(24),
        })
    }
}

/// The file name of a slot's segment.
pub fn file_name(slot: u32) -> String {
    format!("{slot:06}.seg")
}

/// Parses a segment file name back into its slot.
pub fn parse_file_name(name: &str) -> Option<u32> {
    let stem = name.strip_suffix(".seg")?;
    if stem.len() != 6 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// One mapped segment: a file, or anonymous memory in cache mode.
#[derive(Debug)]
pub struct Segment {
    pub header: Header,
    /// The file; for a segment in memory, a name for log messages.
    pub path: PathBuf,
    map: MmapMut,
    /// Kept open so the mapping and the file's lifetime are tied; `None`
    /// for a segment in memory, which nothing needs to sync.
    file: Option<File>,
    /// `header.crc_key()`, kept at hand for every read.
    pub crc_key: u32,
    /// Bytes of the mapping resident from an earlier life (a recycled
    /// memory segment), whatever its records now use.
    resident_floor: usize,
    /// End of the records: the append position of the active segment.
    pub end: usize,
    /// Lines below this were prefetched for appends (`prefetch_ahead`).
    prefetched_to: usize,
    /// The record starts a walk must visit (`crate::marks`); `None` for a
    /// segment opened at startup.
    marks: Option<RecordMarks>,
    /// Bytes of records that the index points at.
    pub live_bytes: u64,
    /// Bytes below this are known durable.
    pub synced_to: usize,
    /// Damage was found in it after recovery: never compacted or deleted.
    pub damaged: bool,
    /// Opened at startup: its pages may sit in large folios that the scan
    /// (or a fault before `advise`) read ahead, which a store that
    /// flushes every write must not append into (see `advise`).
    pub opened_at_start: bool,
    /// Its mapping is advised `MADV_HUGEPAGE` (see `advise`): it takes
    /// appends in 2 MiB folios, which only a fast writer should get.
    pub huge: bool,
    /// The header changed (sealed) since the last sync.
    header_dirty: bool,
    /// No record here expires before this (Unix ms); `u64::MAX` when none
    /// has an expiry. Kept in memory only; unknown (0) after a checkpoint
    /// load, so that the expiry sweep looks once.
    pub expiry_min_ms: u64,
    /// The expiry sweep does not walk this segment again before this time.
    pub sweep_after_ms: u64,
    /// Bytes of tombstones here. Compaction must copy them while an older
    /// segment exists, so they are not garbage to it (in memory only;
    /// zero after a checkpoint load, which costs at most one extra copy).
    pub tombstone_bytes: u64,
    /// Some record here may have left the index while it was the newest
    /// record of its key: an expiry reclaimed it, or the segment was
    /// opened at startup (what happened before is not known). Every other
    /// dead record was overwritten or deleted, so a newer record of its
    /// key (a value or a tombstone) hides the older ones, and compaction
    /// drops it without looking its key up (`Store::compact_step`).
    pub orphans: bool,
    /// Writeback of the records below this has been started
    /// (`start_writeback`), if not finished.
    writeback_to: usize,
    /// For a spare: a directory flush ran after its file took its removed
    /// name, so `recycle` need not run one first (`Log::note_dir_synced`).
    pub removal_durable: bool,
    /// A new file advised `MADV_RANDOM` for its appends' first touches,
    /// until it is full (`appends_done`; see `create_with`).
    random_for_appends: bool,
}

impl Segment {
    /// Creates and preallocates a new segment file, header written and
    /// durable, its directory entry durable too.
    /// Its mapping is advised `paging` (see `advise`). A file it could not
    /// finish is deleted (a short file under a segment's name would be
    /// taken for damage at the next open).
    pub fn create(dir: &Path, slot: u32, seq: u64, size_log2: u8, paging: Paging) -> Result<Segment> {
        let made = Segment::create_with(dir, slot, seq, size_log2, false, paging);
        if made.is_err() {
            let _ = std::fs::remove_file(dir.join(file_name(slot)));
        }
        made
    }

    /// Makes segment `slot`, `seq` from `spare` (`recycle`) when there is
    /// one, else as a new file (`create_new` when `exclusive`, else
    /// `create`); a spare that could not be recycled is logged and deleted,
    /// and a new file made instead.
    pub fn make(
        dir: &Path,
        slot: u32,
        seq: u64,
        size_log2: u8,
        spare: Option<Segment>,
        exclusive: bool,
        paging: Paging,
    ) -> Result<Segment> {
        if let Some(spare) = spare {
            match spare.recycle(dir, slot, seq) {
                Ok(recycled) => return Ok(recycled),
                Err(err) => tracing::warn!(error = %err, "could not recycle a removed segment; making a new one"),
            }
        }
        if exclusive {
            Segment::create_new(dir, slot, seq, size_log2, paging)
        } else {
            Segment::create(dir, slot, seq, size_log2, paging)
        }
    }

    /// `create`, for another thread ahead of need: it never replaces a file
    /// (the store may have been closed and opened again meanwhile, and made
    /// that slot's file itself), and a file it made and could not finish is
    /// deleted.
    pub fn create_new(dir: &Path, slot: u32, seq: u64, size_log2: u8, paging: Paging) -> Result<Segment> {
        let made = Segment::create_with(dir, slot, seq, size_log2, true, paging);
        if let Err(err) = &made {
            if !matches!(err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::AlreadyExists) {
                let _ = std::fs::remove_file(dir.join(file_name(slot)));
            }
        }
        made
    }

    fn create_with(dir: &Path, slot: u32, seq: u64, size_log2: u8, exclusive: bool, paging: Paging) -> Result<Segment> {
        let path = dir.join(file_name(slot));
        let size = 1u64 << size_log2;
        let mut options = OpenOptions::new();
        options.read(true).write(true);
        if exclusive {
            options.create_new(true);
        } else {
            options.create(true).truncate(true);
        }
        let file = options.open(&path).map_err(Error::io(format!("create {}", path.display())))?;
        preallocate(&file, size).map_err(Error::io(format!("preallocate {}", path.display())))?;
        // SAFETY: the file is ours alone (one store per directory, enforced
        // by the lock file) and is never truncated while mapped.
        let mut map = unsafe { MmapMut::map_mut(&file) }.map_err(Error::io(format!("map {}", path.display())))?;
        // A new file's faults read in zeros: without `MADV_RANDOM` the
        // kernel reads ahead, zero-filling at once the next 2 MiB folio in
        // 2 MiB folios (3-9 ms on the shard thread, 1 KiB SETs at depth
        // 16), or the disk's read-ahead window without them (8 MiB here:
        // 4.75-7.75 ms inside one fault, 2000 SETs a second). Random until
        // full (`appends_done`), each fault zero-fills its own folio only.
        // Not where the base advice was refused: random alone would fault
        // 4 KiB pages where 2 MiB folios were wanted.
        let advised = advise(&map, &path, paging);
        let random_for_appends =
            advised && paging != Paging::Random && advise_one(&map, &path, memmap2::Advice::Random);
        let header = Header::fresh(size_log2, slot, seq, false);
        map[..HEADER_BYTES].copy_from_slice(&header.encode());
        map.flush_range(0, HEADER_BYTES).map_err(Error::io(format!("sync {}", path.display())))?;
        sync_dir(dir)?;
        let marks = Some(RecordMarks::new(map.len()));
        let mut made = Segment::over(header, path, map, Some(file), HEADER_BYTES, 0, marks);
        made.huge = paging == Paging::Huge;
        made.random_for_appends = random_for_appends;
        Ok(made)
    }

    /// A segment over `map` whose records end at `end` (durable up to
    /// there), nothing in it counted live yet.
    fn over(
        header: Header,
        path: PathBuf,
        map: MmapMut,
        file: Option<File>,
        end: usize,
        resident_floor: usize,
        marks: Option<RecordMarks>,
    ) -> Segment {
        Segment {
            crc_key: header.crc_key(),
            header,
            path,
            map,
            file,
            resident_floor,
            end,
            prefetched_to: 0,
            marks,
            live_bytes: 0,
            synced_to: end,
            header_dirty: false,
            damaged: false,
            opened_at_start: false,
            huge: false,
            expiry_min_ms: u64::MAX,
            sweep_after_ms: 0,
            tombstone_bytes: 0,
            orphans: false,
            writeback_to: end,
            removal_durable: false,
            random_for_appends: false,
        }
    }

    /// Maps an existing segment file. The header is returned unchecked in
    /// the error case so recovery can decide what to do with the file.
    pub fn open(path: &Path) -> Result<Segment> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(Error::io(format!("open {}", path.display())))?;
        let len = file.metadata().map_err(Error::io(format!("stat {}", path.display())))?.len();
        if len < HEADER_BYTES as u64 || !len.is_power_of_two() {
            return Err(Error::BadSegment {
                path: path.into(),
                problem: format!("file size {len} is not a segment size"),
            });
        }
        // SAFETY: as in `create`.
        let map = unsafe { MmapMut::map_mut(&file) }.map_err(Error::io(format!("map {}", path.display())))?;
        let header = Header::decode(&map).map_err(|problem| Error::BadSegment { path: path.into(), problem })?;
        if 1u64.checked_shl(u32::from(header.size_log2)) != Some(len) {
            return Err(Error::BadSegment {
                path: path.into(),
                problem: format!("header says 2^{} bytes, file has {len}", header.size_log2),
            });
        }
        let end = if header.sealed { header.sealed_end as usize } else { HEADER_BYTES };
        if end < HEADER_BYTES || end as u64 > len {
            return Err(Error::BadSegment { path: path.into(), problem: format!("sealed end {end} out of range") });
        }
        let mut seg = Segment::over(header, path.into(), map, Some(file), end, 0, None);
        seg.opened_at_start = true;
        seg.orphans = true;
        Ok(seg)
    }

    /// A new segment in anonymous memory (cache mode): nothing reaches disk.
    pub fn in_memory(slot: u32, seq: u64, size_log2: u8) -> Result<Segment> {
        let mut map = MmapMut::map_anon(1 << size_log2).map_err(Error::io("map anonymous segment"))?;
        let header = Header::fresh(size_log2, slot, seq, false);
        map[..HEADER_BYTES].copy_from_slice(&header.encode());
        let path = PathBuf::from(format!("<memory>/{}", file_name(slot)));
        let marks = Some(RecordMarks::new(map.len()));
        Ok(Segment::over(header, path, map, None, HEADER_BYTES, 0, marks))
    }

    /// Whether a removed segment can become a new one (`recycle`): every
    /// memory segment, and a file whose records' checksums are keyed (a
    /// version 1 file's old records would pass in its new life).
    pub fn can_recycle(&self) -> bool {
        self.file.is_none() || self.header.version == FORMAT_VERSION
    }

    /// Makes segment `slot`, `seq` out of a removed one (`self`, its file
    /// renamed out of the way): its pages are resident and mapped, so
    /// appends neither fault in nor zero fresh memory (a first touch runs at
    /// 0.5-1.5 GB/s on this project's VM, docs/benchmarks.md). Its old
    /// bytes stay past the new records; their checksums are keyed by the
    /// old seq and never pass again.
    ///
    /// A file's removed name is made durable first (else a crash could
    /// bring the old name back over the new header), unless a directory
    /// flush since the rename already did (`removal_durable`: compaction
    /// flushes the directory after each removal, so this was one of three
    /// directory flushes per segment). Then it gets its new header,
    /// durable, while it still has the removed name (which recovery
    /// deletes), and is linked under the slot's name, which it never
    /// replaces: the store may have been reopened meanwhile and made that
    /// file itself. Then the old name goes and the directory is flushed. A
    /// file that could not be made is deleted.
    pub fn recycle(mut self, dir: &Path, slot: u32, seq: u64) -> Result<Segment> {
        debug_assert!(self.can_recycle());
        let resident_floor = self.resident_bytes() as usize;
        let header = Header::fresh(self.header.size_log2, slot, seq, true);
        // The old life's marks, cleared, rather than a fresh allocation's
        // first touches.
        let marks = Some(match self.marks.take() {
            Some(mut marks) => {
                marks.clear_all();
                marks
            }
            None => RecordMarks::new(self.map.len()),
        });
        if self.file.is_none() {
            self.map[..HEADER_BYTES].copy_from_slice(&header.encode());
            let path = PathBuf::from(format!("<memory>/{}", file_name(slot)));
            return Ok(Segment::over(header, path, self.map, None, HEADER_BYTES, resident_floor, marks));
        }
        let old = self.path.clone();
        let path = dir.join(file_name(slot));
        let removal = if self.removal_durable { Ok(()) } else { sync_dir(dir) };
        let made = removal
            .and_then(|()| {
                self.map[..HEADER_BYTES].copy_from_slice(&header.encode());
                self.map.flush_range(0, HEADER_BYTES).map_err(Error::io(format!("sync {}", old.display())))
            })
            .and_then(|()| std::fs::hard_link(&old, &path).map_err(Error::io(format!("link {}", path.display()))));
        if let Err(err) = made {
            let _ = std::fs::remove_file(&old);
            return Err(err);
        }
        if let Err(err) = std::fs::remove_file(&old) {
            tracing::warn!(path = %old.display(), error = %err, "could not remove a recycled file's old name; the next open will");
        }
        if let Err(err) = sync_dir(dir) {
            let _ = std::fs::remove_file(&path);
            return Err(err);
        }
        let huge = self.huge;
        let mut recycled = Segment::over(header, path, self.map, self.file, HEADER_BYTES, resident_floor, marks);
        recycled.huge = huge;
        Ok(recycled)
    }

    /// Advises the mapping `paging` once recovery's scan, the one
    /// sequential reader, is done. See `advise`.
    pub fn advise(&mut self, paging: Paging) {
        if self.file.is_some() {
            advise(&self.map, &self.path, paging);
            self.huge = paging == Paging::Huge;
        }
    }

    pub fn is_in_memory(&self) -> bool {
        self.file.is_none()
    }

    pub fn size(&self) -> usize {
        self.map.len()
    }

    /// Bytes of the mapping that can be resident: the pages up to the end
    /// of the records (the rest of the preallocated file is never touched),
    /// or more for a recycled segment; whole 2 MiB folios when `huge`.
    pub fn resident_bytes(&self) -> u64 {
        let granule = if self.huge { HUGE_PAGE_BYTES } else { PAGE_BYTES };
        (self.end.max(self.resident_floor) as u64).next_multiple_of(granule).min(self.map.len() as u64)
    }

    /// Notes a record expiring at `at` appended here.
    pub fn note_expiry(&mut self, at: Option<u64>) {
        if let Some(at) = at {
            self.expiry_min_ms = self.expiry_min_ms.min(at);
        }
    }

    /// The mapped bytes, header included.
    pub fn bytes(&self) -> &[u8] {
        &self.map
    }

    /// Appends `len` bytes that `write` fills (a record, encoded in place
    /// or copied), returning their offset, or `None` when they do not fit.
    pub fn append_with(&mut self, len: usize, write: impl FnOnce(&mut [u8])) -> Option<usize> {
        assert!(!self.header.sealed, "append to a sealed segment");
        let at = self.end;
        if len > self.map.len() - at {
            return None;
        }
        write(&mut self.map[at..at + len]);
        self.end += len;
        if let Some(marks) = &mut self.marks {
            marks.set(at);
        }
        if len >= PREFETCH_AHEAD_MIN_RECORD_BYTES {
            self.prefetch_ahead();
        }
        Some(at)
    }

    /// Notes that the index no longer points at the record at `offset`.
    pub fn unmark(&mut self, offset: usize) {
        if let Some(marks) = &mut self.marks {
            marks.clear(offset);
        }
    }

    /// The first record at or after `from` that a walk needing no dead
    /// record must visit (see `crate::marks`): `from` itself in a segment
    /// without marks, `end` when none is left.
    pub fn next_marked(&self, from: usize) -> usize {
        self.marks.as_ref().map_or(from, |marks| marks.next_from(from, self.end))
    }

    /// `next_marked`, looking no further than `span` bytes past `from`:
    /// `None` when no marked record starts there.
    pub fn next_marked_within(&self, from: usize, span: usize) -> Option<usize> {
        let limit = self.end.min(from + span);
        let at = self.marks.as_ref().map_or(from, |marks| marks.next_from(from, limit));
        Some(at).filter(|&at| at < limit)
    }

    /// Whether a walk may go from mark to mark (`next_marked`) and drop
    /// the records between unseen: they were all overwritten, deleted or
    /// moved, so none can be its key's newest record.
    pub fn skips_dead(&self) -> bool {
        self.marks.is_some() && !self.orphans
    }

    /// Drops the marks, as a segment opened at startup has none (tests
    /// that replay recovery over a segment written in the same life).
    #[cfg(test)]
    pub(crate) fn drop_marks(&mut self) {
        self.marks = None;
    }

    /// Heap bytes of the marks.
    pub fn marks_bytes(&self) -> usize {
        self.marks.as_ref().map_or(0, RecordMarks::heap_bytes)
    }

    /// Starts loading the lines up to `PREFETCH_AHEAD_BYTES` past the
    /// head that no append has asked for yet. A line whose page is not
    /// mapped is skipped by the CPU, never faulted in.
    fn prefetch_ahead(&mut self) {
        let to = (self.end + PREFETCH_AHEAD_BYTES).min(self.map.len());
        let mut line = self.end.max(self.prefetched_to).next_multiple_of(CACHE_LINE_BYTES);
        while line < to {
            crate::index::prefetch_read(&self.map[line]);
            line += CACHE_LINE_BYTES;
        }
        self.prefetched_to = self.prefetched_to.max(line);
    }

    /// Gives a segment that takes no more appends the kernel's read-ahead
    /// back (`MADV_NORMAL` clears `MADV_RANDOM`, not `MADV_HUGEPAGE`): a
    /// new file's random advice is for its appends' first touches (see
    /// `create_with`), and a cold walk of it later (compaction, the expiry
    /// sweep, after the kernel dropped its pages) reads ahead as before.
    pub fn appends_done(&mut self) {
        if std::mem::take(&mut self.random_for_appends) {
            advise_one(&self.map, &self.path, memmap2::Advice::Normal);
        }
    }

    /// Marks the segment sealed at its current end. The header reaches disk
    /// with the next `sync`.
    pub fn seal(&mut self) {
        self.header.sealed = true;
        self.header.sealed_end = u32::try_from(self.end).expect("segment sizes are at most 2^31");
        self.map[..HEADER_BYTES].copy_from_slice(&self.header.encode());
        self.header_dirty = true;
    }

    /// Takes the segment back to taking appends after its records (a full
    /// log's open, `Log::continue_newest`). Everything past them is zeroed
    /// and flushed first: a torn tail's cut may have left intact records
    /// of this same life after it, which appends in between would let
    /// recovery read as newer than the appends. Then the header says
    /// unsealed, durably, so that recovery reads on to the torn tail as
    /// for any unsealed segment.
    pub fn unseal(&mut self) -> Result<()> {
        let (end, len) = (self.end, self.map.len());
        if let Some(last) = self.map[end..].iter().rposition(|&b| b != 0) {
            self.map[end..=end + last].fill(0);
            if self.file.is_some() {
                self.map.flush_range(end, last + 1).map_err(Error::io(format!("sync {}", self.path.display())))?;
            }
        }
        debug_assert!(self.map[end..len].iter().all(|&b| b == 0));
        if self.header.sealed {
            self.header.sealed = false;
            self.header.sealed_end = 0;
            self.map[..HEADER_BYTES].copy_from_slice(&self.header.encode());
            if self.file.is_some() {
                self.map.flush_range(0, HEADER_BYTES).map_err(Error::io(format!("sync {}", self.path.display())))?;
            }
        }
        self.header_dirty = false;
        Ok(())
    }

    /// Forces the unsynced part of the segment to disk.
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.file.is_none() {
            self.synced_to = self.end;
            self.header_dirty = false;
            return Ok(());
        }
        if self.synced_to < self.end {
            self.map.flush_range(self.synced_to, self.end - self.synced_to)?;
            self.synced_to = self.end;
        }
        if self.header_dirty {
            self.map.flush_range(0, HEADER_BYTES)?;
            self.header_dirty = false;
        }
        Ok(())
    }

    /// Starts writing back the records below `to` (rounded down to whole
    /// 2 MiB folios, so that appends never land in a folio being cleaned)
    /// that no sync or earlier call covers, once there are at least
    /// `min_bytes` of them, and does not wait for it
    /// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`): a later `sync` waits for
    /// less. A failure is only logged: the sync writes them anyway and
    /// reports its own errors.
    pub fn start_writeback(&mut self, to: usize, min_bytes: usize) {
        let Some(file) = &self.file else { return };
        let from = self.synced_to.max(self.writeback_to);
        let to = to.min(self.end) / HUGE_PAGE_BYTES as usize * HUGE_PAGE_BYTES as usize;
        if to <= from || to - from < min_bytes {
            return;
        }
        // SAFETY: a plain syscall on a descriptor this segment owns.
        let rc = unsafe {
            libc::sync_file_range(file.as_raw_fd(), from as i64, (to - from) as i64, libc::SYNC_FILE_RANGE_WRITE)
        };
        if rc == 0 {
            self.writeback_to = to;
        } else {
            tracing::debug!(path = %self.path.display(), error = %std::io::Error::last_os_error(), "could not start writeback");
        }
    }

    pub fn needs_sync(&self) -> bool {
        self.synced_to < self.end || self.header_dirty
    }

    /// What a flush on another thread needs: the file opened anew, the
    /// end of the records and whether the header is dirty now. `None` for
    /// a memory segment or one with nothing to flush.
    ///
    /// A file of its own, not a duplicate descriptor: the kernel reports a
    /// writeback error once to each open file, so flushes that run at once
    /// through one open file could see it reported to one of them only,
    /// and another return success for pages that never reached the disk.
    /// Each open file sees every error that happens after it was opened
    /// (or that nobody saw yet).
    pub fn flush_target(&self) -> Option<std::io::Result<(File, usize, bool)>> {
        self.file.as_ref().filter(|_| self.needs_sync())?;
        Some(File::open(&self.path).map(|f| (f, self.end, self.header_dirty)))
    }

    /// Notes a flush done elsewhere: bytes below `end` are durable, and the
    /// header too when `header` (a header changes once, at sealing, so a
    /// header dirty when the flush started is the one it wrote).
    pub fn flushed(&mut self, end: usize, header: bool) {
        self.synced_to = self.synced_to.max(end);
        if header {
            self.header_dirty = false;
        }
    }
}

/// How a segment file's mapping is advised (`advise`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// `MADV_RANDOM`, for stores that flush every write (`always`): a
    /// fault on a page not in the page cache then reads that page only.
    /// Without it the kernel reads ahead around the fault (`read_ahead_kb`,
    /// 8 MiB on this project's disk) into large folios, zero-filled past
    /// the records, and every append that lands in one dirties the whole
    /// folio: each group commit then wrote 2.1 MB on average (up to 4 MiB)
    /// instead of the 4-8 KiB it had changed, and acknowledged writes fell
    /// from about 147k/s over 5 seconds to 107k/s over 8 and 81k-84k/s over
    /// 15, as the appends reached the folios read ahead (docs/benchmarks.md,
    /// session 7). The hint does not split folios already cached: segments
    /// opened at startup are not recycled under `always` (`Log::doom`).
    Random,
    /// `MADV_HUGEPAGE`, for a store written fast that does not flush every
    /// write: a fault brings in a 2 MiB folio that the kernel maps with one
    /// page-table entry, so appends fault once per 2 MiB and reads of a
    /// large log miss the TLB far less. Measured in session 8: in-process
    /// gets 7% faster at 1 KiB and 2-4% at 32 B (`engine_interleaved`),
    /// redis-benchmark's 1 KiB SETs at depth 16 641k-680k against
    /// 556k-599k per server CPU-s. The cost is that a flush writes back
    /// whole dirty folios: written slowly, a store would write 2 MiB to the
    /// disk for every flush of a few records (10 SETs a second under
    /// `everysec` wrote 22 MiB in 11 s, against 88-132 KiB without the
    /// hint). So only segments made while writes come fast get it, and a
    /// store whose writes slow down leaves such a segment early
    /// (`Store::tick`, `HUGE_PAGES_RATE_MIN_BYTES`).
    ///
    /// A new file, of this paging or none, is advised `MADV_RANDOM` too
    /// until it is full (`Segment::create_with`, `Segment::appends_done`).
    /// Session 14, 1 KiB SETs at depth 16 over 100k keys (a log that keeps
    /// no spare, so mostly new files), twelve runs each: p99 3.0-3.4 ms
    /// against 3.2-7.7, max 4.9-14.6 ms against 8.2-18.6, for 1.2% more CPU
    /// per SET (more, smaller faults).
    Huge,
    /// No advice.
    Normal,
}

/// Applies `paging` to a segment file's mapping; false when the kernel
/// refused the advice, which only loses the hint.
fn advise(map: &MmapMut, path: &Path, paging: Paging) -> bool {
    match paging {
        Paging::Random => advise_one(map, path, memmap2::Advice::Random),
        Paging::Huge => advise_one(map, path, memmap2::Advice::HugePage),
        Paging::Normal => true,
    }
}

fn advise_one(map: &MmapMut, path: &Path, advice: memmap2::Advice) -> bool {
    let advised = map.advise(advice);
    if let Err(err) = &advised {
        tracing::warn!(segment = %path.display(), error = %err, ?advice, "madvise failed");
    }
    advised.is_ok()
}

fn preallocate(file: &File, size: u64) -> std::io::Result<()> {
    let len = libc::off_t::try_from(size).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: plain syscall on an open descriptor we own.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    match rc {
        0 => Ok(()),
        // Filesystems without fallocate (some tmpfs versions) fall back to
        // a sparse file: correct, only without the space reservation.
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(size),
        errno => Err(std::io::Error::from_raw_os_error(errno)),
    }
}

/// Makes directory entries (created, renamed or removed files) durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    sync_dir_io(dir).map_err(Error::io(format!("sync directory {}", dir.display())))
}

/// `sync_dir` with the bare I/O error.
pub fn sync_dir_io(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_detects_damage() {
        let h = Header { sealed: true, sealed_end: 4096, ..Header::fresh(20, 7, 99, true) };
        let bytes = h.encode();
        assert_eq!(Header::decode(&bytes), Ok(h));
        let old = Header { version: FORMAT_VERSION_UNKEYED, recycled: false, ..h };
        assert_eq!(Header::decode(&old.encode()), Ok(old));
        for bit in 0..HEADER_BYTES * 8 {
            let mut bad = bytes;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert!(Header::decode(&bad).is_err(), "bit {bit}");
        }
    }

    #[test]
    fn crc_keys_differ_between_nearby_segments_and_never_let_zeros_decode() {
        assert_eq!(crc32fast::hash(&[0, 0]), ZERO_RECORD_CRC);
        assert_eq!(crc_key(FORMAT_VERSION_UNKEYED, 5), 0);
        let mut seen = std::collections::HashSet::new();
        for seq in (0..1 << 20).chain(u64::from(u32::MAX) - 1000..u64::from(u32::MAX) + 1000) {
            let key = crc_key(FORMAT_VERSION, seq);
            assert_ne!(key, ZERO_RECORD_CRC, "seq {seq}");
            if seq < 1 << 20 {
                assert!(seen.insert(key), "seq {seq} repeats a key");
            }
        }
        // The seq that would map to the zero record's CRC is skipped by
        // the modulus: u32::MAX wraps to 0.
        assert_eq!(crc_key(FORMAT_VERSION, u64::from(u32::MAX)), crc_key(FORMAT_VERSION, 0));
    }

    #[test]
    fn file_names_round_trip() {
        assert_eq!(parse_file_name(&file_name(42)), Some(42));
        assert_eq!(parse_file_name("000042.seg.tmp"), None);
        assert_eq!(parse_file_name("42.seg"), None);
    }
}
