//! Opening a store: finding the segments, loading the checkpoint or
//! scanning every record, and deciding what damaged bytes mean.
//!
//! Rules, in the order they apply:
//! 1. Segments below the flush floor (FLUSHALL) are deleted.
//! 2. A segment whose header is all zeros was being created when the
//!    process died: it holds nothing and is deleted. Any other bad header
//!    is renamed `*.corrupt`, kept for inspection, and reported.
//! 3. A valid checkpoint that matches the segments exactly gives the index.
//! 4. Otherwise segments are scanned oldest first, every CRC checked; the
//!    newest version of a key wins and tombstones hide older versions.
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
    /// Segment files with unreadable headers, renamed `*.corrupt`.
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
        segments: Vec::new(),
        active: u32::MAX,
        next_seq: floor.unwrap_or(0),
        unsynced: Vec::new(),
        inactive_resident_bytes: 0,
        in_memory,
        spares: Vec::new(),
        seal_after_flush: config.fsync == crate::FsyncPolicy::EverySec && !in_memory,
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
        flushes_planned_by_caller: false,
        config,
        poisoned: None,
        compaction: None,
        compacted_waiting: Vec::new(),
        scratch: Vec::new(),
        prefetched_hashes: std::collections::VecDeque::new(),
        counters: Counters::default(),
        sweep: None,
        _lock: lock,
    };
    if report.hint_used {
        // The checkpoint does not say which segments hold expiring
        // records: let the expiry sweep look at each once.
        store.log.segments.iter_mut().flatten().for_each(|s| s.expiry_min_ms = 0);
    } else {
        // Scan every segment first, so that the index is sized once for
        // all of them, then apply them oldest first.
        let batches: Vec<Vec<Found>> =
            store.log.by_seq().into_iter().map(|slot| store.scan_segment(slot, &mut report)).collect();
        store.index.reserve(batches.iter().flatten().filter(|f| f.live).count());
        for batch in batches {
            store.apply_batch(batch);
        }
        // Overwritten keys were counted once per version: give back the
        // surplus.
        store.index.fit();
    }
    store.log.recount_totals();
    store.log.roll()?;
    store.sync()?;
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

/// Bits of the hash the records are sorted by: its top 22, two passes of
/// 11 bits. A full sort (three passes) bought nothing more: hashes that
/// differ only in their low 10 bits land within about 3 slots of each
/// other at 10M keys (more in larger tables: a matter of locality only, the
/// index takes inserts in any order).
const SORT_BITS: u32 = 22;
const PASS_BITS: u32 = 11;

/// Sorts records by the top bits of their index hash (the table is ordered
/// by hash), keeping log order among equal ones, so that versions of a key
/// stay in order: an LSD radix sort, stable by construction. Records
/// arrive in log order.
fn sort_by_hash(found: &mut Vec<Found>) {
    const BUCKETS: usize = 1 << PASS_BITS;
    let key = |f: &Found| f.hash >> (32 - SORT_BITS);
    if found.len() < 1024 {
        found.sort_by_key(key);
        return;
    }
    let mut spare = found.clone();
    for shift in (0..SORT_BITS).step_by(PASS_BITS as usize) {
        let digit = |f: &Found| ((key(f) >> shift) as usize) & (BUCKETS - 1);
        let mut starts = [0usize; BUCKETS];
        found.iter().for_each(|f| starts[digit(f)] += 1);
        let mut sum = 0;
        for start in starts.iter_mut() {
            let n = *start;
            *start = sum;
            sum += n;
        }
        for f in found.iter() {
            let d = digit(f);
            spare[starts[d]] = *f;
            starts[d] += 1;
        }
        std::mem::swap(found, &mut spare);
    }
}

/// A record found by the scan, applied to the index in pass 2.
#[derive(Debug, Clone, Copy)]
struct Found {
    hash: u32,
    loc: Loc,
    len: u32,
    /// False for tombstones and records already expired.
    live: bool,
}

impl Store {
    /// Reads one segment's records in order, reporting damage and cutting
    /// a torn tail (the segment is sealed where its good records end).
    fn scan_segment(&mut self, slot: u32, report: &mut RecoveryReport) -> Vec<Found> {
        let Some(seg) = self.log.segment_mut(slot) else { return Vec::new() };
        let sealed = seg.header.sealed;
        let limit = if sealed { seg.end } else { seg.size() };
        // Let key comparisons see the whole segment while it is scanned.
        seg.end = limit;
        let (path, seq) = (seg.path.clone(), seg.header.seq);
        let now = self.now_ms();
        let mut pos = HEADER_BYTES;
        let mut found: Vec<Found> = Vec::new();
        let mut expiry_min_ms = u64::MAX;
        let mut tombstone_bytes = 0;
        let cut = loop {
            let seg = self.log.segment(slot).expect("segment being scanned");
            match scan::next(seg, pos, limit, sealed) {
                Step::Record { offset, view } => {
                    found.push(Found {
                        hash: self.index_hash(view.key),
                        loc: self.log.loc(slot, offset),
                        len: view.len as u32,
                        live: !view.tombstone && !view.is_expired(now),
                    });
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
        report.records += found.len() as u64;
        report.bytes_scanned += (cut - HEADER_BYTES) as u64;
        let seg = self.log.segment_mut(slot).expect("segment being scanned");
        seg.end = cut;
        seg.expiry_min_ms = expiry_min_ms;
        seg.tombstone_bytes = tombstone_bytes;
        if !sealed {
            seg.seal();
            self.log.unsynced.push(slot);
        }
        found
    }

    /// Applies one segment's records to the index in hash order: the index
    /// is then walked in order instead of at random (a cache miss a key
    /// otherwise).
    fn apply_batch(&mut self, mut found: Vec<Found>) {
        sort_by_hash(&mut found);
        for f in found {
            let log = &self.log;
            // Keys are read only when another entry has the same hash.
            let same_key = |l: Loc| l != f.loc && log.key_at(l).is_some_and(|k| Some(k) == log.key_at(f.loc));
            let prev =
                if f.live { self.index.upsert(f.hash, f.loc, same_key) } else { self.index.remove(f.hash, same_key) };
            if f.live {
                self.log.mark_live(f.loc, f.len as usize);
            }
            if let Some(prev) = prev {
                let prev_len = self.log.unchecked(prev).map_or(0, |v| v.len);
                self.log.mark_dead(prev, prev_len);
            }
        }
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

fn header_is_blank(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; HEADER_BYTES];
    fs::File::open(path).and_then(|mut f| f.read_exact(&mut header)).is_ok() && header.iter().all(|&x| x == 0)
}

fn quarantine(path: &Path, problem: &str, report: &mut RecoveryReport) -> Result<()> {
    let to = path.with_extension("seg.corrupt");
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

    #[test]
    fn radix_sort_orders_by_hash_and_keeps_log_order() {
        let mut x = 0x1234_5678u32;
        let found: Vec<Found> = (0..50_000u32)
            .map(|loc| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                // Few distinct hashes, so that equal hashes are common,
                // and some that differ only below the sorted bits.
                Found { hash: x % 3000 * 1_431_655 + (x >> 20) % 3, loc, len: 8, live: true }
            })
            .collect();
        let mut sorted = found.clone();
        sort_by_hash(&mut sorted);
        let mut expected = found;
        expected.sort_by_key(|f| (f.hash >> (32 - SORT_BITS), f.loc));
        assert!(sorted.iter().zip(&expected).all(|(a, b)| a.hash == b.hash && a.loc == b.loc));
    }
}
