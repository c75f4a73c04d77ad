//! Opening a store: finding the segments, loading the checkpoint or
//! scanning every record, and deciding what damaged bytes mean.
//!
//! Rules, in the order they apply:
//! 1. Segments below the flush floor (FLUSHALL) are deleted.
//! 2. A segment whose header is all zeros (or that is shorter than a
//!    header, all zeros) was being created when the process died: it holds
//!    nothing and is deleted. Any other bad header is renamed `*.corrupt`
//!    (`*.corrupt.N` beside earlier ones of the slot), kept for inspection,
//!    and reported.
//! 3. A valid checkpoint that matches the segments exactly gives the index.
//! 4. Otherwise segments are scanned oldest first, every CRC checked; the
//!    newest version of a key wins and tombstones hide older versions.
//!    The records found are sorted by hash (a stable radix sort), so that
//!    versions of a key sit together in log order and the index is filled
//!    front to back.
//!    A damaged record is reported and never served; in a segment that was
//!    never sealed, bad bytes with nothing good after them are a torn tail
//!    and are cut off (`TolerateCorruptTail`).
//! 5. Every unsealed segment is sealed where its good records end, and a
//!    fresh active segment is created.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::index::{Index, Loc};
use crate::log::Log;
use crate::scan::{self, Step};
use crate::segment::{self, Segment, HEADER_BYTES};
use crate::store::{Config, Counters, Mode, Store};

const FLOOR_FILE: &str = "FLUSHED";
const LOCK_FILE: &str = "LOCK";

/// Damaged bytes found while opening.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    pub segment: PathBuf,
    pub seq: u64,
    pub offset: usize,
    pub bytes: usize,
}

/// What opening the store found.
#[derive(Debug, Clone, Default)]
pub struct RecoveryReport {
    /// The index came from the clean-shutdown checkpoint.
    pub hint_used: bool,
    /// Why a checkpoint that existed was not used.
    pub hint_rejected: Option<String>,
    pub segments: usize,
    pub records: u64,
    pub bytes_scanned: u64,
    /// Damaged records in the middle of a segment, skipped.
    pub corrupt: Vec<Damage>,
    /// Torn tails cut off the end of unsealed segments.
    pub torn: Vec<Damage>,
    /// Segment files with unreadable headers, renamed `*.corrupt` (or
    /// `*.corrupt.N`).
    pub quarantined: Vec<PathBuf>,
    pub duration: Duration,
}

pub(crate) fn open(dir: &Path, config: Config) -> Result<(Store, RecoveryReport)> {
    let started = Instant::now();
    let size_log2 = config.validate()?;
    fs::create_dir_all(dir).map_err(Error::io(format!("create {}", dir.display())))?;
    let lock = lock_dir(dir)?;
    let in_memory = config.mode == Mode::Cache;
    if in_memory
        && fs::read_dir(dir)
            .map_err(Error::io(format!("list {}", dir.display())))?
            .flatten()
            .any(|e| e.file_name().to_str().and_then(segment::parse_file_name).is_some())
    {
        // Never discard a store's data by starting a cache over it.
        return Err(Error::Config(format!(
            "{} holds segment files; cache mode keeps its data in memory: give it an empty directory",
            dir.display()
        )));
    }
    let floor = read_floor(dir)?;
    let mut report = RecoveryReport::default();
    let mut log = Log {
        dir: dir.to_path_buf(),
        size_log2,
        slots_max: u32::try_from(config.log_max_bytes >> size_log2).unwrap_or(u32::MAX),
        active_floor: 0,
        tight: false,
        held_bytes: 0,
        segments: Vec::new(),
        active: u32::MAX,
        next_seq: floor.unwrap_or(0),
        unsynced: Vec::new(),
        inactive_resident_bytes: 0,
        segments_marks_bytes: 0,
        in_memory,
        spares: Vec::new(),
        seal_after_flush: config.fsync == crate::FsyncPolicy::EverySec && !in_memory,
        random_access: config.fsync == crate::FsyncPolicy::Always && !in_memory,
        huge_pages: config.fsync != crate::FsyncPolicy::Always
            && !in_memory
            && (1usize << size_log2) >= segment::HUGE_SEGMENT_MIN_BYTES,
        // Until a second of writes says otherwise (`Store::tick`).
        huge_wanted: true,
        pending_seal: Vec::new(),
        doomed: Vec::new(),
        prepared: None,
        preparing: None,
        unsettled: Vec::new(),
        rolls_waited: 0,
        recycled: 0,
        used_bytes_total: 0,
        live_bytes_total: 0,
        prepare_failed_during: None,
    };
    for seg in list_segments(dir, &config, floor, &mut report)? {
        let slot = seg.header.slot as usize;
        if log.segments.len() <= slot {
            log.segments.resize_with(slot + 1, || None);
        }
        log.next_seq = log.next_seq.max(seg.header.seq + 1);
        log.segments[slot] = Some(seg);
    }
    report.segments = log.segments.iter().flatten().count();

    let hint_path = dir.join(crate::hint::FILE_NAME);
    let hinted = if hint_path.exists() {
        let all_sealed = log.segments.iter().flatten().all(|s| s.header.sealed);
        let loaded = if all_sealed { crate::hint::load(dir, &mut log) } else { Err("unsealed segments".into()) };
        fs::remove_file(&hint_path).map_err(Error::io("remove checkpoint"))?;
        segment::sync_dir(dir)?;
        match loaded {
            Ok(loaded) => Some(loaded),
            Err(why) => {
                tracing::warn!(%why, "index checkpoint not used; scanning the log");
                report.hint_rejected = Some(why);
                None
            }
        }
    } else {
        None
    };
    report.hint_used = hinted.is_some();
    let (index, index_seed) = hinted.unwrap_or_else(|| (Index::default(), crate::store::random_seed()));
    let mut store = Store {
        log,
        index,
        index_seed,
        last_sync_ms: config.clock.now_ms(),
        paging_window: (0, 0),
        early_roll_failed_during: None,
        prepares_elsewhere: false,
        leaving_huge: false,
        flushes_planned_by_caller: false,
        deletes_by_caller: false,
        config,
        poisoned: None,
        held_bytes: 0,
        compaction: None,
        compacted_waiting: Vec::new(),
        scratch: Vec::new(),
        prefetched_hashes: std::collections::VecDeque::new(),
        index_pass_found: Vec::new(),
        counters: Counters::default(),
        sweep: None,
        _lock: lock,
    };
    if report.hint_used {
        // The checkpoint does not say which segments hold expiring
        // records: let the expiry sweep look at each once.
        store.log.segments.iter_mut().flatten().for_each(|s| s.expiry_min_ms = 0);
    } else {
        // Scan every segment, oldest first, then sort all their records by
        // hash and fill the index in its own order (a table of 10M keys
        // filled at random costs a cache miss a key).
        let log_bytes = store.log.segments.iter().flatten().map(|s| s.size() - HEADER_BYTES).sum();
        let mut found = Buckets::with_room(log_bytes);
        let mut batch = Vec::with_capacity(store.log.segment_size() / RECORD_BYTES_GUESS);
        for slot in store.log.by_seq() {
            batch.clear();
            store.scan_segment(slot, &mut report, &mut batch);
            found.extend(&batch);
        }
        found.sort();
        store.apply_sorted(found);
    }
    store.log.recount_totals();
    // Segments opened now take no more appends (the roll below seals the
    // last one), so 2 MiB folios cost their reads nothing (`huge_wanted`
    // holds until the first second of writes).
    let paging = store.log.paging();
    store.log.segments.iter_mut().flatten().for_each(|segment| segment.advise(paging));
    store.log.note_tightness();
    if store.log.tight {
        tracing::warn!(slots = store.log.max_slots(), "log full at open: appends go on in its newest segment");
        let damaged: Vec<u64> = report.corrupt.iter().map(|d| d.seq).collect();
        match store.log.continue_newest(&damaged) {
            // Not the last slot: deletes and compaction could not use the
            // segment it would make.
            Err(Error::LogFull { .. }) if store.log.free_slots() > 1 => store.log.roll(crate::log::Roll::Last)?,
            other => other?,
        }
    } else {
        store.log.roll(crate::log::Roll::Last)?;
    }
    store.sync()?;
    // The first second of writes starts now, not before the scan.
    store.paging_window = (store.now_ms(), store.counters.written_bytes);
    report.duration = started.elapsed();
    if !report.corrupt.is_empty() || !report.torn.is_empty() || !report.quarantined.is_empty() {
        tracing::warn!(
            corrupt = report.corrupt.len(),
            torn = report.torn.len(),
            quarantined = report.quarantined.len(),
            "damage found while opening {}",
            dir.display()
        );
    }
    Ok((store, report))
}

/// Top bits of the hash that pick a record's bucket. Each of the 2^8
/// buckets is then sorted on its own, within the L2 cache at 10M records
/// (39k records of 8 bytes).
const BUCKET_BITS: u32 = 8;
const BUCKETS: usize = 1 << BUCKET_BITS;
/// Bits a bucket's counting passes sort by, two of them covering bits 1
/// to 24: the 23 below the bucket's, and one of its own. Bit 0 is not
/// hash: the index keeps its mark there, `Found` its live flag.
const PASS_BITS: u32 = 12;
/// A bucket smaller than this is sorted by comparison: two counting passes
/// over 4096 counters would cost more than its records.
const BUCKET_COUNTED_MIN: usize = 1024;
/// Records the buckets make room for at first, per byte of log: one of 32
/// bytes (a 16-byte key, a 4-byte value). Room never written to is never
/// faulted in.
const RECORD_BYTES_GUESS: usize = 32;
/// How far ahead of the record being decoded the scan asks for the log's
/// bytes.
const SCAN_PREFETCH_BYTES: usize = 1024;

/// A record found by the scan, in eight bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Found {
    /// The key's index hash, whose lowest bit (the index's mark bit, not
    /// part of the hash) says whether the record is live: set unless it
    /// is a tombstone or already expired.
    hash_live: u32,
    loc: Loc,
}

impl Found {
    fn new(hash: u32, loc: Loc, live: bool) -> Found {
        Found { hash_live: (hash & !1) | u32::from(live), loc }
    }
    fn hash(&self) -> u32 {
        self.hash_live & !1
    }
    fn live(&self) -> bool {
        self.hash_live & 1 != 0
    }
}

/// Every record the scan finds, in buckets by the top bits of its hash, in
/// log order within each (segments are scanned oldest first, each in
/// offset order, and each segment's records are moved into the buckets in
/// order once it is scanned): the first pass of an MSD radix sort.
/// Moving records from a per-segment list measured faster than pushing
/// them into the buckets as the scan finds them (939-1043 MiB/s against
/// 857-888, `engine_memory restart 10000000`, interleaved runs).
struct Buckets {
    by_hash: Vec<Vec<Found>>,
    live: usize,
}

impl Buckets {
    fn with_room(log_bytes: usize) -> Buckets {
        let each = log_bytes / RECORD_BYTES_GUESS / BUCKETS;
        Buckets { by_hash: (0..BUCKETS).map(|_| Vec::with_capacity(each)).collect(), live: 0 }
    }

    fn extend(&mut self, found: &[Found]) {
        for f in found {
            self.by_hash[(f.hash_live >> (32 - BUCKET_BITS)) as usize].push(*f);
            self.live += usize::from(f.live());
        }
    }

    /// Sorts each bucket by hash, stable: records with equal hashes stay
    /// in log order, so the newest version of a key is the last of its run.
    fn sort(&mut self) {
        let widest = self.by_hash.iter().map(Vec::len).max().unwrap_or(0);
        let mut spare = vec![Found::default(); if widest >= BUCKET_COUNTED_MIN { widest } else { 0 }];
        for run in &mut self.by_hash {
            if run.len() < BUCKET_COUNTED_MIN {
                run.sort_by_key(Found::hash);
            } else {
                let spare = &mut spare[..run.len()];
                counting_pass(run, spare, 1);
                counting_pass(spare, run, 1 + PASS_BITS);
            }
        }
    }
}

/// Moves `from` into `to` ordered by the `PASS_BITS` bits of the hash at
/// `shift`, stable.
fn counting_pass(from: &[Found], to: &mut [Found], shift: u32) {
    let digit = |f: &Found| ((f.hash_live >> shift) as usize) & ((1 << PASS_BITS) - 1);
    let mut next = [0usize; 1 << PASS_BITS];
    from.iter().for_each(|f| next[digit(f)] += 1);
    let mut sum = 0;
    for n in next.iter_mut() {
        (*n, sum) = (sum, sum + *n);
    }
    for f in from {
        let d = digit(f);
        to[next[d]] = *f;
        next[d] += 1;
    }
}

impl Store {
    /// Reads one segment's records in order, reporting damage and cutting
    /// a torn tail (the segment is sealed where its good records end).
    /// Its records go into `found`; every live one counts as live until
    /// a newer version is found.
    fn scan_segment(&mut self, slot: u32, report: &mut RecoveryReport, found: &mut Vec<Found>) {
        let Some(seg) = self.log.segment_mut(slot) else { return };
        let sealed = seg.header.sealed;
        let limit = if sealed { seg.end } else { seg.size() };
        // Let key comparisons see the whole segment while it is scanned.
        seg.end = limit;
        let (path, seq) = (seg.path.clone(), seg.header.seq);
        let now = self.now_ms();
        let mut pos = HEADER_BYTES;
        let first = found.len();
        let mut live_bytes = 0;
        let mut expiry_min_ms = u64::MAX;
        let mut tombstone_bytes = 0;
        let cut = loop {
            let seg = self.log.segment(slot).expect("segment being scanned");
            // The hardware prefetcher stops at page ends; loading 1 KiB
            // ahead made the scan 20% faster at 10M records.
            if let Some(ahead) = seg.bytes().get(pos + SCAN_PREFETCH_BYTES) {
                crate::index::prefetch_read(ahead);
            }
            match scan::next(seg, pos, limit, sealed) {
                Step::Record { offset, view } => {
                    let live = !view.tombstone && !view.is_expired(now);
                    found.push(Found::new(self.index_hash(view.key), self.log.loc(slot, offset), live));
                    if live {
                        live_bytes += view.len as u64;
                    }
                    expiry_min_ms = expiry_min_ms.min(view.expires_at_ms.unwrap_or(u64::MAX));
                    if view.tombstone {
                        tombstone_bytes += view.len as u64;
                    }
                    pos = offset + view.len;
                }
                Step::Corrupt { offset, resume } => {
                    tracing::error!(segment = %path.display(), offset, bytes = resume - offset, "damaged record skipped");
                    report.corrupt.push(Damage { segment: path.clone(), seq, offset, bytes: resume - offset });
                    pos = resume;
                }
                Step::End { offset, clean } => {
                    if clean && !sealed && seg.header.recycled {
                        tracing::info!(segment = %path.display(), offset, "records end here; the rest of this recycled file is its earlier life");
                    }
                    if !clean {
                        let stale = seg.bytes()[offset..limit].iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
                        tracing::warn!(segment = %path.display(), offset, bytes = stale, "torn tail cut off");
                        report.torn.push(Damage { segment: path.clone(), seq, offset, bytes: stale });
                    }
                    break offset;
                }
            }
        };
        report.records += (found.len() - first) as u64;
        report.bytes_scanned += (cut - HEADER_BYTES) as u64;
        let seg = self.log.segment_mut(slot).expect("segment being scanned");
        seg.end = cut;
        seg.expiry_min_ms = expiry_min_ms;
        seg.tombstone_bytes = tombstone_bytes;
        seg.live_bytes = live_bytes;
        if !sealed {
            seg.seal();
            self.log.unsynced.push(slot);
        }
        self.log.live_bytes_total += live_bytes;
    }

    /// Builds the index from every record, sorted by hash: the newest
    /// version of each key wins, and if it is live it goes into the table,
    /// which is filled in order, front to back, with no search.
    fn apply_sorted(&mut self, found: Buckets) {
        // Room for every live record: more than enough, since some are
        // old versions; `fit` gives the surplus back.
        self.index.reserve(found.live);
        let mut newest = Vec::new();
        let index = &mut self.index;
        for bucket in &found.by_hash {
            newest_versions(&mut self.log, bucket, &mut newest, |f| index.push_sorted(f.hash(), f.loc));
        }
        self.index.fit();
    }
}

/// Visits, of records sorted by hash (stable), the newest version of each
/// key if it is live, in hash order; live versions overtaken by newer
/// ones are marked dead. `newest` is scratch space.
fn newest_versions(log: &mut Log, sorted: &[Found], newest: &mut Vec<Found>, mut keep: impl FnMut(Found)) {
    let mut at = 0;
    while at < sorted.len() {
        let hash = sorted[at].hash();
        let end = sorted[at..].iter().position(|f| f.hash() != hash).map_or(sorted.len(), |n| at + n);
        if end - at == 1 {
            // Almost every run: one record, its key never read.
            if sorted[at].live() {
                keep(sorted[at]);
            }
            at = end;
            continue;
        }
        // Versions of one key, or keys sharing a hash: the last record of
        // each distinct key is its newest.
        newest.clear();
        for f in sorted[at..end].iter().rev() {
            let same_key = |n: &Found| log.key_at(n.loc).is_some_and(|k| Some(k) == log.key_at(f.loc));
            if !newest.iter().any(same_key) {
                newest.push(*f);
            } else if f.live() {
                let len = log.unchecked(f.loc).map_or(0, |v| v.len);
                log.mark_dead(f.loc, len);
            }
        }
        newest.iter().filter(|f| f.live()).for_each(|&f| keep(f));
        at = end;
    }
}

fn list_segments(dir: &Path, config: &Config, floor: Option<u64>, report: &mut RecoveryReport) -> Result<Vec<Segment>> {
    let mut found = Vec::new();
    let entries = fs::read_dir(dir).map_err(Error::io(format!("list {}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("list {}", dir.display())))?;
        let name = entry.file_name();
        if name.to_str().is_some_and(|n| n.ends_with(crate::log::DOOMED_SUFFIX)) {
            // A removed segment whose deletion a crash interrupted.
            let path = entry.path();
            fs::remove_file(&path).map_err(Error::io(format!("remove {}", path.display())))?;
            continue;
        }
        let Some(slot) = name.to_str().and_then(segment::parse_file_name) else { continue };
        let path = entry.path();
        match Segment::open(&path) {
            Ok(seg) if seg.header.slot != slot => quarantine(&path, "slot in header differs from file name", report)?,
            Ok(seg) if seg.size() as u64 != config.segment_size_bytes => {
                return Err(Error::SegmentSizeMismatch {
                    path,
                    found: seg.size() as u64,
                    expected: config.segment_size_bytes,
                });
            }
            Ok(seg) if floor.is_some_and(|f| seg.header.seq < f) => {
                drop(seg);
                fs::remove_file(&path).map_err(Error::io(format!("remove flushed {}", path.display())))?;
            }
            Ok(seg) => found.push(seg),
            Err(Error::BadSegment { problem, .. }) => {
                if header_is_blank(&path) {
                    tracing::info!(segment = %path.display(), "removing a segment whose creation never finished");
                    fs::remove_file(&path).map_err(Error::io(format!("remove {}", path.display())))?;
                } else {
                    quarantine(&path, &problem, report)?;
                }
            }
            Err(other) => return Err(other),
        }
    }
    Ok(found)
}

/// Whether a segment file's header was never written: all zeros, or
/// shorter than a header with only zeros (a crash between the file's
/// creation and its preallocation leaves it empty).
fn header_is_blank(path: &Path) -> bool {
    use std::io::Read;
    let mut header = Vec::with_capacity(HEADER_BYTES);
    fs::File::open(path).and_then(|f| f.take(HEADER_BYTES as u64).read_to_end(&mut header)).is_ok()
        && header.iter().all(|&x| x == 0)
}

/// Most `.seg.corrupt` files kept for one slot.
const QUARANTINED_PER_SLOT_MAX: usize = 1000;

/// Moves an unreadable segment aside, under a name no other quarantined
/// file has: a second quarantine of the same slot replaced the first (a
/// segment kept for inspection, its records intact behind a damaged
/// header, was lost).
fn quarantine(path: &Path, problem: &str, report: &mut RecoveryReport) -> Result<()> {
    let to = (0..QUARANTINED_PER_SLOT_MAX)
        .map(|n| path.with_extension(if n == 0 { "seg.corrupt".to_string() } else { format!("seg.corrupt.{n}") }))
        .find(|to| fs::symlink_metadata(to).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound))
        .ok_or_else(|| Error::BadSegment {
            path: path.to_path_buf(),
            problem: format!("{problem}; {QUARANTINED_PER_SLOT_MAX} files of this slot are quarantined already"),
        })?;
    tracing::error!(segment = %path.display(), problem, "unreadable segment moved aside; its records are not served");
    fs::rename(path, &to).map_err(Error::io(format!("quarantine {}", path.display())))?;
    report.quarantined.push(to);
    Ok(())
}

fn lock_dir(dir: &Path) -> Result<fs::File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(Error::io(format!("open {}", path.display())))?;
    // SAFETY: plain syscall on an open descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::Io {
            context: format!("{} is in use by another store", dir.display()),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(file)
}

/// Records that every segment below `seq` is flushed away.
pub(crate) fn write_floor(dir: &Path, seq: u64) -> Result<()> {
    let tmp = dir.join(format!("{FLOOR_FILE}.tmp"));
    let io = Error::io(format!("write {}", tmp.display()));
    fs::File::create(&tmp)
        .and_then(|mut f| {
            use std::io::Write;
            f.write_all(format!("{seq}\n").as_bytes())?;
            f.sync_all()
        })
        .map_err(io)?;
    fs::rename(&tmp, dir.join(FLOOR_FILE)).map_err(Error::io("rename flush floor"))?;
    segment::sync_dir(dir)
}

fn read_floor(dir: &Path) -> Result<Option<u64>> {
    match fs::read_to_string(dir.join(FLOOR_FILE)) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| Error::Config(format!("{FLOOR_FILE} in {} is not a number", dir.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("read {FLOOR_FILE}"))(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records in log order, spread over `batches` segments.
    fn batches_of(hashes: impl Iterator<Item = u32>, batches: usize) -> Vec<Vec<Found>> {
        let found: Vec<Found> = hashes.enumerate().map(|(i, h)| Found::new(h, i as Loc, h % 3 != 0)).collect();
        let per = found.len().div_ceil(batches);
        found.chunks(per).map(<[Found]>::to_vec).collect()
    }

    fn check_sort(batches: Vec<Vec<Found>>) {
        let mut expected: Vec<Found> = batches.iter().flatten().copied().collect();
        // Locations grow in log order, so a stable sort keeps them growing
        // within equal hashes.
        expected.sort_by_key(|f| (f.hash(), f.loc));
        let mut buckets = Buckets::with_room(0);
        batches.iter().for_each(|b| buckets.extend(b));
        buckets.sort();
        assert_eq!(buckets.by_hash.concat(), expected);
    }

    #[test]
    fn radix_sort_orders_by_hash_and_keeps_log_order() {
        let mut x = 0x1234_5678u32;
        let mut xorshift = move || {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x
        };
        // Few distinct hashes, so that equal hashes are common, spread
        // over the whole range: small buckets, sorted by comparison.
        let spread: Vec<u32> = (0..50_000).map(|_| xorshift() % 3000 * 1_431_655).collect();
        check_sort(batches_of(spread.into_iter(), 7));
        // Crowded into four buckets, with hashes differing in every bit
        // below them: the counting passes.
        let crowded: Vec<u32> = (0..50_000).map(|_| ((xorshift() % 4) << 24) | (xorshift() % 5000 * 3355)).collect();
        check_sort(batches_of(crowded.into_iter(), 3));
        check_sort(Vec::new());
    }

    /// Distinct keys whose hashes are equal are told apart by their keys:
    /// each keeps its own newest version, and a deleted one stays deleted
    /// whatever the others did.
    #[test]
    fn keys_sharing_a_hash_each_keep_their_newest_version() {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config { segment_size_bytes: 64 << 10, fsync: crate::FsyncPolicy::Never, ..Config::default() };
        let (mut store, _) = Store::open(dir.path(), config).expect("open");
        let writes: [(&[u8], Option<&[u8]>); 7] = [
            (b"a", Some(b"a1")),
            (b"b", Some(b"b1")),
            (b"a", Some(b"a2")),
            (b"c", Some(b"c1")),
            (b"b", None),
            (b"c", Some(b"c2")),
            (b"a", Some(b"a3")),
        ];
        for (key, value) in writes {
            match value {
                Some(v) => drop(store.set(key, v, crate::SetOptions::default()).expect("set")),
                None => assert!(store.delete(key).expect("delete")),
            }
        }
        let slot = store.log.active;
        let live_bytes = store.log.segment(slot).expect("active").live_bytes;
        store.log.segment_mut(slot).expect("active").drop_marks();
        let mut report = RecoveryReport::default();
        // Every record under one hash, as if all three keys collided.
        let mut scanned = Vec::new();
        store.scan_segment(slot, &mut report, &mut scanned);
        assert_eq!(scanned.len(), writes.len());
        scanned.iter_mut().for_each(|f| *f = Found::new(42, f.loc, f.live()));
        let mut found = Buckets::with_room(0);
        found.extend(&scanned);
        found.sort();
        store.index = Index::default();
        store.apply_sorted(found);
        assert_eq!(store.index.len(), 2);
        let newest = |key: &[u8]| {
            let loc = store.index.get(42, |l| store.log.key_at(l) == Some(key))?;
            store.log.unchecked(loc).map(|v| v.value.to_vec())
        };
        assert_eq!(newest(b"a").as_deref(), Some(&b"a3"[..]));
        assert_eq!(newest(b"b"), None);
        assert_eq!(newest(b"c").as_deref(), Some(&b"c2"[..]));
        // Overtaken versions are dead bytes, as the writes left them.
        assert_eq!(store.log.segment(slot).expect("scanned").live_bytes, live_bytes);
    }
}
