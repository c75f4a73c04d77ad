//! The store: the write path, the read path and durability.
//!
//! Write path, in order:
//! 1. the key is hashed (xxh3) and looked up in the index;
//! 2. the record is encoded straight into the active segment's mapping;
//! 3. the index points at the new record, and the old record's bytes are
//!    counted dead in their segment;
//! 4. the caller acknowledges the write only after `sync` when the policy is
//!    `always` (group commit: many writes, one flush); `tick` syncs once a
//!    second under `everysec`.

use std::cell::Cell;
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use xxhash_rust::xxh3::xxh3_64;

use crate::error::{Error, Result};
use crate::index::{Index, Loc};
use crate::log::{Log, Roll};
use crate::record::{RecordSpec, RecordView, KEY_LEN_MAX_BYTES};
use crate::recovery::RecoveryReport;

/// When appended bytes are forced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FsyncPolicy {
    /// The caller syncs each batch before acknowledging it.
    Always,
    /// `tick` syncs when a second has passed since the last sync.
    #[default]
    EverySec,
    /// The operating system writes back when it likes.
    Never,
}

/// The time source. Tests drive a manual clock to check TTLs exactly.
#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    pub fn now_ms(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64),
            Clock::Manual(ms) => ms.load(Ordering::Relaxed),
        }
    }
}

/// What a store does when its memory bound is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Writes that add data are refused with [`Error::OutOfMemory`];
    /// nothing stored is ever dropped (Redis' `noeviction`).
    #[default]
    Store,
    /// The oldest segments are evicted, keeping the records read since
    /// they were written (see docs/cache.md).
    Cache,
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct Config {
    /// Size of each segment file; a power of two from 64 KiB to 1 GiB.
    pub segment_size_bytes: u64,
    pub fsync: FsyncPolicy,
    /// Longest value accepted. Values are also limited to half a segment,
    /// so the effective limit is the smaller of the two.
    pub value_len_max_bytes: usize,
    /// Check the CRC of every record served by `get`.
    pub verify_reads: bool,
    /// A sealed segment is compacted once this fraction of it is garbage.
    /// At 0.5 compaction copies at most one live byte per byte it frees
    /// (write amplification at most 2) and the log holds at most twice the
    /// live data; 0.3 measured 15% of a shard's CPU under redis-benchmark's
    /// random overwrites (docs/benchmarks.md).
    pub compaction_garbage_ratio_min: f64,
    pub clock: Clock,
    pub mode: Mode,
    /// Bound on the index plus the resident bytes of the segments;
    /// `None` for no bound. Required in cache mode.
    pub memory_max_bytes: Option<u64>,
    /// Bound on the log's segments, at most (and by default)
    /// `LOG_ADDRESS_SPACE_BYTES`, the reach of the index's locations.
    /// Writes other than deletes stop three segments short of it
    /// (`Error::LogFull`), deletes two, compaction one (`log::Roll`), so
    /// that a full log still takes deletes, compacts, and opens again.
    pub log_max_bytes: u64,
}

/// Default segment size: large enough that a segment's fixed costs (a
/// file, a mapping, a header) vanish, small enough to compact in steps.
pub const SEGMENT_SIZE_DEFAULT_BYTES: u64 = 64 << 20;
pub const SEGMENT_SIZE_MIN_BYTES: u64 = 64 << 10;
pub const SEGMENT_SIZE_MAX_BYTES: u64 = 1 << 30;
pub const VALUE_LEN_DEFAULT_MAX_BYTES: usize = 16 << 20;
/// A memory bound must hold at least this many segments: eviction frees a
/// segment at a time and keeps one segment of headroom.
pub const MEMORY_BOUND_MIN_SEGMENTS: u64 = 8;
/// Segments per memory bound when the segment size follows the bound, so
/// that the headroom and the half-filled active segment stay near 2%.
const MEMORY_BOUND_SEGMENTS: u64 = 64;

/// The segment size for a store bounded to `memory_max_bytes`: a 64th of
/// the bound, as a power of two within the segment size limits and at most
/// the default size.
pub fn segment_size_for_memory(memory_max_bytes: u64) -> u64 {
    let target = (memory_max_bytes / MEMORY_BOUND_SEGMENTS).max(1);
    let floor_pow2 = 1u64 << (63 - target.leading_zeros());
    floor_pow2.clamp(SEGMENT_SIZE_MIN_BYTES, SEGMENT_SIZE_DEFAULT_BYTES)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            segment_size_bytes: SEGMENT_SIZE_DEFAULT_BYTES,
            fsync: FsyncPolicy::default(),
            value_len_max_bytes: VALUE_LEN_DEFAULT_MAX_BYTES,
            verify_reads: true,
            compaction_garbage_ratio_min: 0.5,
            clock: Clock::System,
            mode: Mode::Store,
            memory_max_bytes: None,
            log_max_bytes: crate::log::LOG_ADDRESS_SPACE_BYTES,
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<u8> {
        let size = self.segment_size_bytes;
        if !size.is_power_of_two() || !(SEGMENT_SIZE_MIN_BYTES..=SEGMENT_SIZE_MAX_BYTES).contains(&size) {
            return Err(Error::Config(format!(
                "segment size {size} must be a power of two from {SEGMENT_SIZE_MIN_BYTES} to {SEGMENT_SIZE_MAX_BYTES}"
            )));
        }
        let log_min = crate::log::LOG_SLOTS_MIN as u64 * size;
        if !(log_min..=crate::log::LOG_ADDRESS_SPACE_BYTES).contains(&self.log_max_bytes) {
            return Err(Error::Config(format!(
                "log bound {} bytes must hold {} segments of {size} bytes and be at most {} bytes",
                self.log_max_bytes,
                crate::log::LOG_SLOTS_MIN,
                crate::log::LOG_ADDRESS_SPACE_BYTES
            )));
        }
        if !(0.0..=1.0).contains(&self.compaction_garbage_ratio_min) {
            return Err(Error::Config("compaction garbage ratio must be within 0..=1".into()));
        }
        match self.memory_max_bytes {
            None if self.mode == Mode::Cache => {
                return Err(Error::Config("cache mode needs a memory bound".into()));
            }
            Some(max) if max < MEMORY_BOUND_MIN_SEGMENTS * size => {
                return Err(Error::Config(format!(
                    "memory bound {max} bytes is under {MEMORY_BOUND_MIN_SEGMENTS} segments of {size} bytes"
                )));
            }
            _ => {}
        }
        Ok(size.trailing_zeros() as u8)
    }
}

/// What `set` does about an existing expiry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SetExpiry {
    /// The key has no expiry afterwards (plain SET).
    #[default]
    None,
    /// Keep the existing key's expiry (SET ... KEEPTTL).
    Keep,
    /// Expire at this Unix time in milliseconds.
    At(u64),
}

/// When `set` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    #[default]
    Always,
    /// Only if the key does not exist (NX).
    IfAbsent,
    /// Only if the key exists (XX).
    IfPresent,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SetOptions {
    pub expiry: SetExpiry,
    pub condition: Condition,
    /// Copy out the previous value (SET ... GET, GETSET).
    pub return_old: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetOutcome {
    /// The condition held and the value was stored.
    pub written: bool,
    /// The previous value, when asked for and the key existed.
    pub old: Option<Vec<u8>>,
}

/// A key's remaining time to live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ttl {
    Missing,
    Persistent,
    Remaining { ms: u64 },
}

/// A live value, borrowed from the segment mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry<'a> {
    pub value: &'a [u8],
    pub expires_at_ms: Option<u64>,
}

/// Counters and gauges for STATS and INFO.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub keys: u64,
    /// Bytes of records the index points at.
    pub live_bytes: u64,
    /// Bytes of records superseded, deleted or expired, not yet compacted.
    pub dead_bytes: u64,
    pub segments: u64,
    pub segment_bytes: u64,
    /// Segments made ahead of need and not yet taken by a roll.
    pub segments_ready: u64,
    /// Rolls that made their segment on the owning thread, waiting for the
    /// disk (none was ready).
    pub rolls_waited: u64,
    /// Segments made from a removed segment's file or memory, its pages
    /// still resident (`Segment::recycle`).
    pub segments_recycled: u64,
    /// Removed segments kept to be recycled.
    pub segments_spare: u64,
    pub index_bytes: u64,
    /// The segments' record marks (`crate::marks`): 1/64 of each segment
    /// made in this process's life.
    pub marks_bytes: u64,
    pub syncs: u64,
    pub compactions: u64,
    /// Of `compactions`, the victims compacted from the index (almost all
    /// garbage) rather than walked.
    pub compactions_from_index: u64,
    pub compacted_bytes: u64,
    pub expired_reclaimed: u64,
    /// Read lookups that found a live key, and those that did not.
    pub hits: u64,
    pub misses: u64,
    /// Keys and segments dropped to stay under the memory bound.
    pub evicted_keys: u64,
    pub evicted_segments: u64,
    /// Index plus resident segment bytes, as the bound counts them.
    pub memory_used_bytes: u64,
    /// The bound; 0 when there is none.
    pub memory_max_bytes: u64,
    /// How long flushes to disk took.
    pub sync_durations: crate::Histogram,
    pub poisoned: bool,
}

impl Stats {
    /// Adds another shard's figures (for node totals).
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            keys,
            live_bytes,
            dead_bytes,
            segments,
            segment_bytes,
            segments_ready,
            rolls_waited,
            segments_recycled,
            segments_spare,
            index_bytes,
            marks_bytes,
            syncs,
            compactions,
            compactions_from_index,
            compacted_bytes,
            expired_reclaimed,
            hits,
            misses,
            evicted_keys,
            evicted_segments,
            memory_used_bytes,
            memory_max_bytes,
            sync_durations,
            poisoned,
        } = other;
        self.keys += keys;
        self.live_bytes += live_bytes;
        self.dead_bytes += dead_bytes;
        self.segments += segments;
        self.segment_bytes += segment_bytes;
        self.segments_ready += segments_ready;
        self.rolls_waited += rolls_waited;
        self.segments_recycled += segments_recycled;
        self.segments_spare += segments_spare;
        self.index_bytes += index_bytes;
        self.marks_bytes += marks_bytes;
        self.syncs += syncs;
        self.compactions += compactions;
        self.compactions_from_index += compactions_from_index;
        self.compacted_bytes += compacted_bytes;
        self.expired_reclaimed += expired_reclaimed;
        self.hits += hits;
        self.misses += misses;
        self.evicted_keys += evicted_keys;
        self.evicted_segments += evicted_segments;
        self.memory_used_bytes += memory_used_bytes;
        self.memory_max_bytes += memory_max_bytes;
        self.sync_durations.add(sync_durations);
        self.poisoned |= poisoned;
    }
}

/// One shard's store. Owned by one thread; no internal locking.
#[derive(Debug)]
pub struct Store {
    pub(crate) log: Log,
    pub(crate) index: Index,
    pub(crate) config: Config,
    /// Set when a flush failed; every write is refused from then on.
    pub(crate) poisoned: Option<String>,
    /// Room under the memory bound promised to writes that will come
    /// (`hold_room`): an MSET across shards between its prepare and its
    /// commit. Other writes must leave it free.
    pub(crate) held_bytes: u64,
    pub(crate) last_sync_ms: u64,
    /// When the current second of writes began, and `written_bytes` then
    /// (`decide_paging`).
    pub(crate) paging_window: (u64, u64),
    /// The seq of the active segment when an early roll failed: not tried
    /// again while it is active.
    pub(crate) early_roll_failed_during: Option<u64>,
    /// The caller makes segments ahead of need (`begin_prepare` was
    /// called): an early roll waits for one.
    pub(crate) prepares_elsewhere: bool,
    /// The active segment is in 2 MiB folios and writes came slowly: it
    /// is left as soon as a segment made ahead is there.
    pub(crate) leaving_huge: bool,
    /// `plan_flushes_elsewhere` or `begin_sync` was called: `tick` leaves
    /// every flush to the caller.
    pub(crate) flushes_planned_by_caller: bool,
    /// `plan_flushes_elsewhere` was called: `tick` leaves removed files to
    /// the caller too (`take_doomed_files`).
    pub(crate) deletes_by_caller: bool,
    pub(crate) compaction: Option<crate::compaction::Cursor>,
    /// Victims whose every live record is copied, waiting for a flush to
    /// make the copies durable before they are removed.
    pub(crate) compacted_waiting: Vec<crate::compaction::Cursor>,
    /// The expiry sweep's progress through a segment.
    pub(crate) sweep: Option<crate::expiry::Cursor>,
    /// Reused buffer for records copied within the log.
    pub(crate) scratch: Vec<u8>,
    /// (slot, offset, index hash) of the records a walk prefetched, in
    /// order (`prefetch_index_of_records`).
    pub(crate) prefetched_hashes: std::collections::VecDeque<(u32, usize, u32)>,
    /// (index hash, location) of the live records an index pass gathered
    /// (`compact_from_index`), reused from step to step.
    pub(crate) index_pass_found: Vec<(u32, crate::index::Loc)>,
    pub(crate) counters: Counters,
    /// Secret mixed into the index hash (see `index_hash_with`); kept in
    /// the checkpoint so that a checkpointed index stays valid.
    pub(crate) index_seed: u64,
    /// Held for the store's lifetime: one store per directory.
    pub(crate) _lock: std::fs::File,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Counters {
    pub syncs: u64,
    pub compactions: u64,
    pub compactions_from_index: u64,
    pub compacted_bytes: u64,
    /// Bytes of records that writes appended (not compaction's copies),
    /// and the part of them compaction's pacing has seen.
    pub written_bytes: u64,
    pub written_bytes_paced: u64,
    /// `written_bytes` at the last `tick`: none since means idle.
    pub written_bytes_ticked: u64,
    /// `written_bytes` when `compaction_wanted` last looked for a victim
    /// almost all garbage and found none (a walk over every segment).
    pub cheap_victim_none_at: Cell<u64>,
    pub expired_reclaimed: u64,
    /// Cells: reads take `&self`.
    pub hits: Cell<u64>,
    pub misses: Cell<u64>,
    pub evicted_keys: u64,
    pub evicted_segments: u64,
    pub sync_durations: crate::Histogram,
}

/// Hash of a key: the ring routes on all 64 bits of it.
pub fn key_hash(key: &[u8]) -> u64 {
    xxh3_64(key)
}

/// The index's 32-bit hash: the key's xxh3 mixed with a per-store secret
/// (the splitmix64 finaliser). xxh3 is public, so without the secret a
/// client could choose keys whose index hashes crowd one region of the
/// ordered table and turn every insert into a long scan (hash flooding).
pub(crate) fn index_hash_with(seed: u64, key: &[u8]) -> u32 {
    let mut z = xxh3_64(key) ^ seed;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)) as u32
}

/// A key's index hash (`Store::hash_of`), for a request that looks its key
/// up more than once: prefetched in a batch, then read or written. Passed
/// with any other key, it finds nothing or the wrong slot: it is only ever
/// made from the key it travels with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyHash(u32);

/// A fresh random secret for the index hash.
pub(crate) fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos()));
    h.finish()
}

impl Store {
    /// Opens (or creates) the store in `dir`, recovering what is there.
    pub fn open(dir: &Path, config: Config) -> Result<(Store, RecoveryReport)> {
        crate::recovery::open(dir, config)
    }

    pub fn now_ms(&self) -> u64 {
        self.config.clock.now_ms()
    }

    pub(crate) fn index_hash(&self, key: &[u8]) -> u32 {
        index_hash_with(self.index_seed, key)
    }

    /// The key's index hash, to pass to `prefetch`, `get_hashed` and
    /// `set_hashed` instead of hashing the key for each (xxh3 and a mix
    /// are 4-5% of a shard's CPU at pipeline depth 16, where each request
    /// hashed its key three times).
    pub fn hash_of(&self, key: &[u8]) -> KeyHash {
        KeyHash(self.index_hash(key))
    }

    /// The longest value a write accepts.
    pub fn value_len_max_bytes(&self) -> usize {
        self.config.value_len_max_bytes.min(self.log.segment_size() / 2)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Finds the key's record if it has not expired.
    fn find_live(&self, key: &[u8], hash: u32) -> Option<(Loc, RecordView<'_>)> {
        self.find_live_checked(key, hash, self.config.verify_reads, false)
    }

    /// A client's read: counted as a hit or a miss, and in cache mode the
    /// key is marked as read so that eviction keeps it.
    fn lookup(&self, key: &[u8], hash: KeyHash) -> Option<RecordView<'_>> {
        debug_assert_eq!(hash, self.hash_of(key), "a hash travels with its own key");
        let mark = self.config.mode == Mode::Cache;
        let found = self.find_live_checked(key, hash.0, self.config.verify_reads, mark);
        let counter = if found.is_some() { &self.counters.hits } else { &self.counters.misses };
        counter.set(counter.get() + 1);
        found.map(|(_, v)| v)
    }

    fn find_live_checked(&self, key: &[u8], hash: u32, verify: bool, mark: bool) -> Option<(Loc, RecordView<'_>)> {
        let log = &self.log;
        // One decode: the view that matched the key is the one served.
        let mut found = None;
        let is_key = |loc| match log.unchecked(loc) {
            Some(v) if v.key == key => {
                found = Some(v);
                true
            }
            _ => false,
        };
        let loc = if mark { self.index.get_marking(hash, is_key) } else { self.index.get(hash, is_key) }?;
        let view = found?;
        if verify && !view.checksum_ok() {
            log.report_damage(loc);
            return None;
        }
        if view.expires_at_ms.is_some() && view.is_expired(self.now_ms()) {
            return None;
        }
        Some((loc, view))
    }

    /// Starts loading what a lookup of the key hashed `hash` will touch,
    /// in two stages: stage 0 the index slot, stage 1 (once the slot is
    /// likely cached) the record. A batch of pipelined requests runs stage
    /// 0 for all, then stage 1 for all, then executes: their cache misses
    /// overlap.
    pub fn prefetch(&self, hash: KeyHash, stage: u8) {
        let hash = hash.0;
        if stage == 0 {
            self.index.prefetch(hash);
        } else if let Some(loc) = self.index.first_candidate(hash) {
            self.log.prefetch_record(loc);
        }
    }

    /// The value of a live key, straight from the mapping.
    pub fn get(&self, key: &[u8]) -> Option<&[u8]> {
        self.get_hashed(key, self.hash_of(key))
    }

    /// `get`, the key hashed already (`hash_of`).
    pub fn get_hashed(&self, key: &[u8], hash: KeyHash) -> Option<&[u8]> {
        self.lookup(key, hash).map(|v| v.value)
    }

    /// The value and expiry of a live key.
    pub fn get_entry(&self, key: &[u8]) -> Option<Entry<'_>> {
        self.lookup(key, self.hash_of(key)).map(|v| Entry { value: v.value, expires_at_ms: v.expires_at_ms })
    }

    pub fn exists(&self, key: &[u8]) -> bool {
        self.lookup(key, self.hash_of(key)).is_some()
    }

    /// A live key's value for a write that depends on it (INCR, APPEND):
    /// not counted as a read and not marked, as Redis' `lookupKeyWrite`.
    pub fn peek(&self, key: &[u8]) -> Option<&[u8]> {
        self.find_live(key, self.index_hash(key)).map(|(_, v)| v.value)
    }

    /// A live key's value and expiry, read together, without counting a
    /// read or marking the key: for a rewrite of the value that must keep
    /// the expiry it was read with.
    pub fn peek_with_expiry(&self, key: &[u8]) -> Option<(&[u8], Option<u64>)> {
        self.find_live(key, self.index_hash(key)).map(|(_, v)| (v.value, v.expires_at_ms))
    }

    /// A live key's expiry (`Some(None)`: none), without counting a read
    /// or marking the key (for writes that depend on it).
    pub fn expiry_of(&self, key: &[u8]) -> Option<Option<u64>> {
        self.find_live(key, self.index_hash(key)).map(|(_, v)| v.expires_at_ms)
    }

    pub fn ttl(&self, key: &[u8]) -> Ttl {
        match self.lookup(key, self.hash_of(key)) {
            None => Ttl::Missing,
            Some(v) => match v.expires_at_ms {
                None => Ttl::Persistent,
                Some(at) => Ttl::Remaining { ms: at.saturating_sub(self.now_ms()) },
            },
        }
    }

    /// Whether a write of `key` with a value `value_len` bytes long would
    /// be refused before it touches the log: the store poisoned, the key
    /// or the value too long. (Whether it fits under a memory bound is
    /// only known when it is written.) A caller writing several keys that
    /// must all be written or none checks each first.
    pub fn check_writable(&self, key: &[u8], value_len: usize) -> Result<()> {
        if let Some(cause) = &self.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        if key.len() > KEY_LEN_MAX_BYTES {
            return Err(Error::KeyTooLarge { len: key.len(), limit: KEY_LEN_MAX_BYTES });
        }
        let limit = self.value_len_max_bytes();
        if value_len > limit {
            return Err(Error::ValueTooLarge { len: value_len, limit });
        }
        // Key and value must fit one segment together, whatever the limits.
        let record = RecordSpec { key, value: &[], expires_at_ms: Some(0), tombstone: false }.encoded_len() + value_len;
        let room = self.log.segment_size() - crate::segment::HEADER_BYTES;
        if record > room {
            return Err(Error::ValueTooLarge { len: value_len, limit: room.saturating_sub(record - value_len) });
        }
        Ok(())
    }

    /// Stores `value` under `key` as `opts` say.
    pub fn set(&mut self, key: &[u8], value: &[u8], opts: SetOptions) -> Result<SetOutcome> {
        self.set_hashed(key, value, opts, self.hash_of(key))
    }

    /// `set`, the key hashed already (`hash_of`).
    pub fn set_hashed(&mut self, key: &[u8], value: &[u8], opts: SetOptions, hash: KeyHash) -> Result<SetOutcome> {
        debug_assert_eq!(hash, self.hash_of(key), "a hash travels with its own key");
        self.check_writable(key, value.len())?;
        self.make_room(true)?;
        let hash = hash.0;
        // The common plain SET needs nothing from the old record: append
        // and repoint, one index search, no clock read.
        if opts.condition == Condition::Always && !opts.return_old && opts.expiry == SetExpiry::None {
            self.put(key, value, None, hash)?;
            return Ok(SetOutcome { written: true, old: None });
        }
        let now = self.now_ms();
        // The old value is checked only when it is handed back.
        let verify = opts.return_old && self.config.verify_reads;
        let (exists, keep_expiry, old) = match self.find_live_checked(key, hash, verify, false) {
            Some((_, v)) => (true, v.expires_at_ms, opts.return_old.then(|| v.value.to_vec())),
            None => (false, None, None),
        };
        let condition_holds = match opts.condition {
            Condition::Always => true,
            Condition::IfAbsent => !exists,
            Condition::IfPresent => exists,
        };
        if !condition_holds {
            return Ok(SetOutcome { written: false, old });
        }
        let expires_at_ms = match opts.expiry {
            SetExpiry::None => None,
            SetExpiry::Keep => keep_expiry,
            SetExpiry::At(at) => Some(at),
        };
        if matches!(expires_at_ms, Some(at) if at <= now) {
            // Redis semantics: a write that expires in the past deletes.
            self.delete_hashed(key, hash)?;
            return Ok(SetOutcome { written: true, old });
        }
        self.put(key, value, expires_at_ms, hash)?;
        Ok(SetOutcome { written: true, old })
    }

    /// Appends a record; a failed flush while rolling to a new segment
    /// poisons the store.
    pub(crate) fn append(&mut self, spec: &RecordSpec<'_>, roll: Roll) -> Result<(Loc, usize)> {
        let result = self.log.append(spec, roll);
        self.poison_on_sync_failure(result)
    }

    /// `append` for a client's write or delete: counted for compaction's
    /// pacing (`compact_owed`), which compaction's own tombstones are not.
    fn append_written(&mut self, spec: &RecordSpec<'_>) -> Result<(Loc, usize)> {
        let roll = if spec.tombstone { Roll::Delete } else { Roll::Write };
        let (loc, len) = self.append(spec, roll)?;
        self.counters.written_bytes += len as u64;
        Ok((loc, len))
    }

    /// Copies the `len`-byte record at `from` to the head verbatim, through
    /// `scratch` (its bytes must not borrow the log while it changes), its
    /// checksum re-keyed (compaction and eviction).
    pub(crate) fn move_record(
        &mut self,
        from: Loc,
        len: usize,
        scratch: &mut Vec<u8>,
        expires_at_ms: Option<u64>,
    ) -> Result<Loc> {
        let (slot, offset) = self.log.split(from);
        let seg = self.log.segment(slot).expect("a walker's own segment");
        scratch.clear();
        scratch.extend_from_slice(&seg.bytes()[offset..offset + len]);
        let crc_key = seg.crc_key;
        let result = self.log.append_raw(scratch, crc_key, expires_at_ms);
        self.poison_on_sync_failure(result)
    }

    fn poison_on_sync_failure<T>(&mut self, result: Result<T>) -> Result<T> {
        match result {
            Err(Error::SyncFailed { path, source }) => {
                let cause = format!("flush of {} failed: {source}", path.display());
                tracing::error!(%cause, "store poisoned");
                self.poisoned = Some(cause.clone());
                Err(Error::Poisoned { cause })
            }
            other => other,
        }
    }

    /// Appends a live record and points the index at it.
    pub(crate) fn put(&mut self, key: &[u8], value: &[u8], expires_at_ms: Option<u64>, hash: u32) -> Result<Loc> {
        // The index slot loads while the record is written.
        self.index.prefetch(hash);
        let spec = RecordSpec { key, value, expires_at_ms, tombstone: false };
        let (loc, len) = self.append_written(&spec)?;
        self.log.mark_live(loc, len);
        let log = &self.log;
        let mut prev_len = 0;
        let prev = self.index.upsert(hash, loc, |l| match log.unchecked(l) {
            Some(v) if l != loc && v.key == key => {
                prev_len = v.len;
                true
            }
            _ => false,
        });
        if let Some(prev) = prev {
            self.log.mark_dead(prev, prev_len);
        }
        Ok(loc)
    }

    /// Counts the record at `loc` dead.
    fn forget(&mut self, loc: Loc) {
        if let Some(len) = self.log.view(loc, false).map(|v| v.len) {
            self.log.mark_dead(loc, len);
        }
    }

    /// Deletes a key; true when it existed and had not expired.
    pub fn delete(&mut self, key: &[u8]) -> Result<bool> {
        self.check_writable(key, 0)?;
        self.make_room(false)?;
        self.delete_hashed(key, self.index_hash(key))
    }

    fn delete_hashed(&mut self, key: &[u8], hash: u32) -> Result<bool> {
        let now = self.now_ms();
        let log = &self.log;
        let Some(loc) = self.index.get(hash, |l| log.key_at(l) == Some(key)) else {
            return Ok(false);
        };
        let was_live = self.log.view(loc, false).is_some_and(|v| !v.is_expired(now));
        // The tombstone first: if it cannot be written, the key stays as it
        // is in memory too, so memory never disagrees with the log.
        let tombstone = RecordSpec { key, value: &[], expires_at_ms: None, tombstone: true };
        self.append_written(&tombstone)?;
        self.index.remove(hash, |l| l == loc);
        self.forget(loc);
        Ok(was_live)
    }

    /// Sets (`Some`) or removes (`None`) a live key's expiry. False when the
    /// key does not exist.
    pub fn expire_at(&mut self, key: &[u8], expires_at_ms: Option<u64>) -> Result<bool> {
        self.check_writable(key, 0)?;
        let hash = self.index_hash(key);
        let Some((_, view)) = self.find_live(key, hash) else {
            return Ok(false);
        };
        if view.expires_at_ms == expires_at_ms {
            return Ok(true);
        }
        if matches!(expires_at_ms, Some(at) if at <= self.now_ms()) {
            // A tombstone: deletes go through over the bound.
            self.make_room(false)?;
            self.delete_hashed(key, hash)?;
            return Ok(true);
        }
        // The new expiry is a new version of the whole record, so it needs
        // room as a SET does (taken as free over a store's bound, 1024
        // pipelined PEXPIREs of an 8 MiB value appended 8 GiB before
        // compaction could run). In cache mode making room may evict the
        // key itself: it is looked up again.
        self.make_room(true)?;
        let Some((loc, _)) = self.find_live(key, hash) else {
            return Ok(false);
        };
        let mut scratch = std::mem::take(&mut self.scratch);
        scratch.clear();
        if let Some(view) = self.log.view(loc, false) {
            scratch.extend_from_slice(view.value);
        }
        let result = self.put(key, &scratch, expires_at_ms, hash);
        self.scratch = scratch;
        result.map(|_| true)
    }

    /// Visits up to about `count` live keys from `cursor` (0 to start).
    /// Returns the cursor to continue from; 0 means the scan is complete.
    /// Every key present for the whole scan is visited at least once.
    pub fn scan(&self, cursor: u64, count: usize, mut visit: impl FnMut(&[u8])) -> u64 {
        let now = self.now_ms();
        let mut visited = 0usize;
        let next = self.index.scan_from(cursor, |_, loc| {
            if let Some(v) = self.log.view(loc, false) {
                if !v.is_expired(now) {
                    visit(v.key);
                }
            }
            visited += 1;
            if visited >= count.max(1) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        });
        next.unwrap_or(0)
    }

    /// Visits every live record whose full 64-bit key hash lies in the ring
    /// range `(start, end]` (wrapping when `start >= end`), in batches:
    /// starts at index cursor `cursor`, stops after about `budget` index
    /// entries and returns the cursor to continue from (`None` when done).
    pub fn scan_hash_range(
        &self,
        start: u64,
        end: u64,
        cursor: u64,
        budget: usize,
        mut visit: impl FnMut(RecordView<'_>),
    ) -> Option<u64> {
        let now = self.now_ms();
        let mut seen = 0usize;
        self.index.scan_from(cursor, |_, loc| {
            if let Some(v) = self.log.view(loc, self.config.verify_reads) {
                let h = key_hash(v.key);
                let inside = if start < end { h > start && h <= end } else { h > start || h <= end };
                if inside && !v.is_expired(now) {
                    visit(v);
                }
            }
            seen += 1;
            if seen >= budget.max(1) {
                ControlFlow::Break(())
            } else {
                ControlFlow::Continue(())
            }
        })
    }

    /// Removes every key, durably and atomically: after a crash either all
    /// keys are there or none.
    pub fn flush_all(&mut self) -> Result<()> {
        if let Some(cause) = &self.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        let rolled = self.log.roll(Roll::Last);
        self.poison_on_sync_failure(rolled)?;
        let floor = self.log.segment(self.log.active).expect("active").header.seq;
        if !self.log.in_memory {
            crate::recovery::write_floor(&self.log.dir, floor)?;
        }
        // The floor is durable: from here every record below it is gone,
        // whatever fails next. So the index and the compaction's state go
        // first, and a segment whose removal fails stays behind as garbage
        // (no live bytes) for compaction to remove, instead of leaving them
        // pointing at slots freed and reused.
        self.index.clear();
        self.compaction = None;
        self.compacted_waiting.clear();
        self.sweep = None;
        let mut failed = None;
        for slot in self.log.by_seq() {
            if slot != self.log.active {
                self.log.forget_live(slot);
                if let Err(err) = self.log.remove_segment(slot) {
                    failed.get_or_insert(err);
                }
            }
        }
        if let Some(err) = failed {
            return Err(err);
        }
        self.log.sync_dir()?;
        self.log.unsettled.clear();
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    pub fn stats(&self) -> Stats {
        let mut stats = Stats {
            keys: self.index.len() as u64,
            index_bytes: self.index.heap_bytes() as u64,
            marks_bytes: self.log.marks_bytes(),
            syncs: self.counters.syncs,
            compactions: self.counters.compactions,
            compactions_from_index: self.counters.compactions_from_index,
            compacted_bytes: self.counters.compacted_bytes,
            expired_reclaimed: self.counters.expired_reclaimed,
            hits: self.counters.hits.get(),
            misses: self.counters.misses.get(),
            evicted_keys: self.counters.evicted_keys,
            evicted_segments: self.counters.evicted_segments,
            memory_used_bytes: self.memory_used_bytes(),
            memory_max_bytes: self.config.memory_max_bytes.unwrap_or(0),
            sync_durations: self.counters.sync_durations.clone(),
            poisoned: self.poisoned.is_some(),
            segments_ready: u64::from(self.log.prepared.is_some()),
            rolls_waited: self.log.rolls_waited,
            segments_recycled: self.log.recycled,
            segments_spare: self.log.spares.len() as u64,
            ..Stats::default()
        };
        debug_assert_eq!((self.log.used_bytes_total, self.log.live_bytes_total), self.log.totals(), "running totals");
        for seg in self.log.segments.iter().flatten() {
            stats.segments += 1;
            stats.segment_bytes += seg.size() as u64;
            stats.live_bytes += seg.live_bytes;
            stats.dead_bytes += (seg.end - crate::segment::HEADER_BYTES) as u64 - seg.live_bytes;
        }
        stats
    }

    /// True when writes were appended since the last sync.
    pub fn needs_sync(&self) -> bool {
        self.log.needs_sync()
    }

    /// Makes every write so far durable. On failure the store is poisoned:
    /// the kernel may have dropped the dirty pages, so retrying could
    /// report success for data that is gone.
    pub fn sync(&mut self) -> Result<()> {
        if let Some(cause) = &self.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        if !self.log.needs_sync() {
            // Nothing unflushed now: as good as a flush for `everysec`.
            self.last_sync_ms = self.now_ms();
            return Ok(());
        }
        let started = std::time::Instant::now();
        let outcome = self.log.sync().map(|()| started.elapsed());
        if outcome.is_ok() {
            self.last_sync_ms = self.now_ms();
        }
        self.record_flush(outcome)
    }

    /// Counts a flush, or poisons the store when it failed.
    fn record_flush(&mut self, outcome: std::io::Result<std::time::Duration>) -> Result<()> {
        match outcome {
            Ok(took) => {
                self.counters.syncs += 1;
                self.counters.sync_durations.record(took);
                Ok(())
            }
            Err(err) => {
                tracing::error!(error = %err, dir = %self.log.dir.display(), "flush failed; store poisoned");
                let cause = err.to_string();
                self.poisoned = Some(cause.clone());
                Err(Error::Poisoned { cause })
            }
        }
    }

    /// Removed segment files to delete, for the caller to delete on another
    /// thread; `tick` deletes those nobody took, unless the caller plans
    /// its flushes (`plan_flushes_elsewhere`).
    pub fn take_doomed_files(&mut self) -> Vec<std::path::PathBuf> {
        std::mem::take(&mut self.log.doomed)
    }

    /// True when a flush is wanted: `everysec`'s periodic one, or one that
    /// a full segment waits for before it is sealed, a compacted segment
    /// before it is deleted, or its removal to be durable.
    pub fn sync_due(&self) -> bool {
        if self.poisoned.is_some() {
            return false;
        }
        // A clock that stepped back makes it due at once: otherwise no
        // flush would come until the clock caught up with the last one.
        let now = self.now_ms();
        let periodic =
            self.config.fsync == FsyncPolicy::EverySec && (now < self.last_sync_ms || now - self.last_sync_ms >= 1000);
        periodic
            || !self.log.pending_seal.is_empty()
            || !self.log.unsettled.is_empty()
            || !self.compacted_waiting.is_empty()
            || self.compaction.as_ref().is_some_and(|c| c.awaits_flush())
    }

    /// Tells the store that its owner runs every flush itself, on another
    /// thread (`sync_due`, `begin_sync`, `finish_sync`), so that no flush
    /// blocks the owning thread: `tick` flushes nothing, and under `never`
    /// a full segment is sealed, and a compacted one deleted, only after a
    /// flush the owner ran (as under `everysec`). Without this, `never`
    /// flushes a full segment inline when it rolls over: 64 MiB of dirty
    /// pages took 27-43 ms of `msync` (strace), a stall for every request
    /// of the shard. `always` keeps its inline flushes: its group commit
    /// leaves at most the writes of the flushes in flight unsynced.
    ///
    /// The owner deletes removed segment files too (`take_doomed_files`):
    /// `tick` leaves them. Deleted by `tick` on a shard thread (whose
    /// compaction steps between two takes had removed segments), a 64 MiB
    /// file held it 9-18 ms in the synchronous discard of a filesystem
    /// mounted with `discard` (this project's VM), which was the p99 of
    /// 1 KiB SETs at depth 16.
    pub fn plan_flushes_elsewhere(&mut self) {
        self.flushes_planned_by_caller = true;
        self.deletes_by_caller = true;
        if self.config.fsync == FsyncPolicy::Never && !self.log.in_memory {
            self.log.seal_after_flush = true;
        }
    }

    /// Plans a flush of everything written so far for another thread to
    /// run (`SyncJob::run`), so that the owning thread goes on serving
    /// while the disk works; `finish_sync` records the outcome. `None`
    /// when there is nothing to flush. The next periodic flush is due a
    /// second from now.
    pub fn begin_sync(&mut self) -> Result<Option<SyncJob>> {
        self.flushes_planned_by_caller = true;
        self.last_sync_ms = self.now_ms();
        if let Some(cause) = &self.poisoned {
            return Err(Error::Poisoned { cause: cause.clone() });
        }
        let targets = self.log.flush_targets().map_err(Error::io("open a segment to flush"))?;
        let settles = self.log.unsettled.clone();
        let dir = (!settles.is_empty()).then(|| self.log.dir.clone());
        Ok((!targets.is_empty() || dir.is_some()).then_some(SyncJob { targets, dir, settles }))
    }

    /// Records how a `SyncJob` went. A failed flush poisons the store, as
    /// an inline `sync` does.
    pub fn finish_sync(&mut self, job: SyncJob, outcome: std::io::Result<std::time::Duration>) -> Result<()> {
        if outcome.is_ok() && self.poisoned.is_none() {
            self.log.flushed(&job.targets);
            self.log.unsettled.retain(|seq| !job.settles.contains(seq));
            if job.dir.is_some() {
                self.log.note_dir_synced(Some(&job.settles));
            }
        }
        self.record_flush(outcome)?;
        self.settle_compacted()
    }

    /// Periodic work for the owning thread: the once-a-second sync of
    /// `everysec`, a bounded step of the expiry sweep, a bounded compaction
    /// step (when no write came since the last tick, or compaction is
    /// wanted: `compaction_wanted`) and index growth. Returns true when it
    /// did compaction work
    /// (call again soon).
    pub fn tick(&mut self) -> Result<bool> {
        // A caller that plans flushes itself owns them all: flushing here
        // would block its thread.
        if !self.flushes_planned_by_caller {
            if self.sync_due() {
                self.sync()?;
            } else if self.config.fsync != FsyncPolicy::Always {
                self.log.start_writeback();
            }
        }
        self.index.migrate(1024);
        self.decide_paging();
        if self.leaving_huge {
            self.leave_huge_when_ready();
        }
        if !self.deletes_by_caller {
            for path in self.take_doomed_files() {
                remove_doomed(&path);
            }
        }
        self.sweep_step(SWEEP_STEP_BYTES);
        self.settle_compacted()?;
        // While writes come in, compaction waits until it is wanted (and
        // the writes pay for it, `compact_owed`); idle, it tidies up.
        let idle = self.counters.written_bytes == self.counters.written_bytes_ticked;
        self.counters.written_bytes_ticked = self.counters.written_bytes;
        if !idle && !self.compaction_wanted() {
            return Ok(false);
        }
        self.compact_step(COMPACTION_STEP_BYTES)
    }

    /// Once a second: whether writes come fast enough for new segments in
    /// 2 MiB folios (`segment::Paging::Huge`): from 4 MiB/s on, and until
    /// they fall below half that (a writer near the line does not flip it
    /// every second). When they no longer do, an active segment in 2 MiB
    /// folios is left for a new one (sealed early, its unused space
    /// garbage to compaction), so that a slow writer's flushes write back
    /// pages, not whole folios. A caller that makes segments ahead
    /// (`begin_prepare`) gets one planned at once, which the roll takes (no
    /// file made on this thread); for others the roll makes it. A store
    /// never ticked keeps what it started with.
    fn decide_paging(&mut self) {
        if !self.log.huge_pages || self.poisoned.is_some() {
            return;
        }
        let (since, written_then) = self.paging_window;
        let now = self.now_ms();
        if now < since {
            // The clock stepped back: start the second again.
            self.paging_window = (now, self.counters.written_bytes);
            return;
        }
        let elapsed = now - since;
        if elapsed < 1000 {
            return;
        }
        let written = self.counters.written_bytes - written_then;
        self.paging_window = (now, self.counters.written_bytes);
        let line = if self.log.huge_wanted { HUGE_PAGES_RATE_MIN_BYTES / 2 } else { HUGE_PAGES_RATE_MIN_BYTES };
        self.log.huge_wanted = written.saturating_mul(1000) >= line.saturating_mul(elapsed);
        let Some(active) = self.log.segment(self.log.active) else { return };
        let seq = active.header.seq;
        if self.log.huge_wanted || written == 0 || !active.huge || self.early_roll_failed_during == Some(seq) {
            self.leaving_huge = false;
            return;
        }
        if self.prepares_elsewhere && !self.leaving_huge {
            // The caller makes the next segment on another thread
            // (`begin_prepare` now starts at once): the roll takes it, so
            // that this thread makes no file. Inline if it is not there
            // by the next second.
            self.leaving_huge = true;
            return;
        }
        self.leaving_huge = false;
        self.leave_huge_segment();
    }

    /// The early roll of `decide_paging`, once a segment made ahead (not in
    /// 2 MiB folios) is there; nothing to do once the active segment is no
    /// longer in them.
    fn leave_huge_when_ready(&mut self) {
        if !self.log.segment(self.log.active).is_some_and(|s| s.huge) {
            self.leaving_huge = false;
            return;
        }
        if let Err(err) = self.log.drop_untakeable_prepared() {
            tracing::warn!(error = %err, "could not discard a segment made in 2 MiB folios");
        }
        if self.log.prepared.is_some() {
            self.leaving_huge = false;
            self.leave_huge_segment();
        }
    }

    /// Rolls out of the active segment in 2 MiB folios. An optimisation: a
    /// failure is logged and not retried while the segment is active (a
    /// failed flush poisons the store, as for any roll).
    fn leave_huge_segment(&mut self) {
        let seq = self.log.segment(self.log.active).map(|s| s.header.seq);
        let rolled = self.log.roll(Roll::Write);
        if let Err(err) = self.poison_on_sync_failure(rolled) {
            tracing::warn!(error = %err, "could not leave a segment in 2 MiB folios for a slow writer");
            self.early_roll_failed_during = seq;
        }
    }

    /// Plans the creation of the next segment on another thread, so that
    /// the roll to it waits for no disk: creating a segment on the owning
    /// thread (a file, its preallocation, a header flush and a directory
    /// flush) held it up to 5-20 ms (the shard thread blocked on the disk
    /// in `fsync`, `msync` and ext4's block allocator, `perf sched`).
    /// The segment is made from a spare (a compacted segment's file, its
    /// pages resident) when there is one. `None` until an eighth of the
    /// active segment is written (`PREPARE_FROM_SEGMENT_FRACTION`; or, at
    /// once, when a slow writer is to leave a segment in 2 MiB folios:
    /// `decide_paging`), while a segment is ready or being made, and for
    /// memory segments.
    pub fn begin_prepare(&mut self) -> Option<PrepareJob> {
        self.prepares_elsewhere = true;
        let leaving_huge = self.leaving_huge;
        let log = &mut self.log;
        if log.in_memory || self.poisoned.is_some() || log.prepared.is_some() || log.preparing.is_some() {
            return None;
        }
        let active = log.segment(log.active)?;
        if (active.end < log.segment_size() / PREPARE_FROM_SEGMENT_FRACTION && !leaving_huge)
            || log.prepare_failed_during == Some(active.header.seq)
        {
            return None;
        }
        // A recycled segment is resident from the start; near the memory
        // bound, where that could refuse a write, the next one is new.
        let roomy = self
            .config
            .memory_max_bytes
            .is_none_or(|limit| self.memory_used_bytes() + 2 * self.segment_footprint_bytes() <= limit);
        let log = &mut self.log;
        if !log.may_prepare() {
            return None;
        }
        let slot = log.free_slot()?;
        let seq = log.next_seq;
        log.next_seq += 1;
        log.preparing = Some(crate::log::Preparing { slot, seq, stale: false });
        let spare = if roomy { log.take_spare() } else { None };
        Some(PrepareJob { dir: log.dir.clone(), slot, seq, size_log2: log.size_log2, spare, paging: log.paging() })
    }

    /// Takes a segment made by a [`PrepareJob`]: the next roll uses it.
    /// One that a roll went past (it could not wait and made a newer one)
    /// is discarded; a failure is logged, and the roll makes its own.
    pub fn finish_prepare(&mut self, prepared: PreparedSegment) {
        let PreparedSegment { slot, seq, made } = prepared;
        let expected = self.log.preparing.take_if(|p| p.slot == slot && p.seq == seq);
        match (made, expected) {
            (Ok(seg), Some(p)) if !p.stale => {
                self.log.recycled += u64::from(seg.header.recycled);
                self.log.prepared = Some(seg);
            }
            (Ok(seg), _) => {
                if let Err(err) = self.log.doom(seg) {
                    tracing::warn!(error = %err, "could not discard a segment made too late");
                }
            }
            (Err(err), _) => {
                // Not again before the next roll (a full disk would fail
                // every 10 ms).
                self.log.prepare_failed_during = self.log.segment(self.log.active).map(|s| s.header.seq);
                tracing::warn!(error = %err, "making the next segment ahead of need failed; the roll will make it");
            }
        }
    }

    /// Forgets a preparation whose job was lost (its thread panicked): the
    /// slot is free again and the next roll makes its own segment.
    pub fn abandon_prepare(&mut self) {
        self.log.preparing = None;
        self.log.prepare_failed_during = self.log.segment(self.log.active).map(|s| s.header.seq);
    }

    /// Syncs, seals and writes the index checkpoint so the next open skips
    /// the scan.
    pub fn close(mut self) -> Result<()> {
        if self.log.in_memory {
            return Ok(());
        }
        // Not in the checkpoint, which must match the files exactly (the
        // checkpoint's directory flush makes the rename durable).
        if let Some(seg) = self.log.prepared.take() {
            self.log.doom(seg)?;
        }
        self.log.discard_spare_files();
        for path in self.take_doomed_files() {
            remove_doomed(&path);
        }
        // The records first, then the seal: a durable sealed header says
        // that the records up to `sealed_end` are durable too. Sealed
        // first, the kernel could write the header back before the tail,
        // and a crash in the middle of the close left a sealed segment
        // whose last records recovery reported as corrupt, not torn.
        self.sync()?;
        self.log.seal_active();
        self.sync()?;
        crate::hint::write(&self)
    }
}

/// Deletes a removed segment's file. A failure leaves a file that the
/// next open deletes, so it is logged, not returned.
pub fn remove_doomed(path: &std::path::Path) {
    if let Err(err) = std::fs::remove_file(path) {
        tracing::warn!(path = %path.display(), error = %err, "could not delete a removed segment; the next open will");
    }
}

/// The creation of the next segment, planned by [`Store::begin_prepare`],
/// to run on any thread.
#[derive(Debug)]
pub struct PrepareJob {
    dir: std::path::PathBuf,
    slot: u32,
    seq: u64,
    size_log2: u8,
    /// A compacted segment to make it from.
    spare: Option<crate::segment::Segment>,
    paging: crate::segment::Paging,
}

impl PrepareJob {
    /// Recycles the spare, or creates the segment file, preallocated; its
    /// header and directory entry durable. Blocks on the disk.
    pub fn run(self) -> PreparedSegment {
        let Self { dir, slot, seq, size_log2, spare, paging } = self;
        let made = crate::segment::Segment::make(&dir, slot, seq, size_log2, spare, true, paging);
        PreparedSegment { slot, seq, made }
    }
}

/// What a [`PrepareJob`] made, for [`Store::finish_prepare`].
#[derive(Debug)]
pub struct PreparedSegment {
    slot: u32,
    seq: u64,
    made: Result<crate::segment::Segment>,
}

/// A flush planned by [`Store::begin_sync`], to run on any thread.
#[derive(Debug)]
pub struct SyncJob {
    targets: Vec<crate::log::FlushTarget>,
    /// The directory, when removals wait for its flush...
    dir: Option<std::path::PathBuf>,
    /// ...and the seqs of the removed segments it settles.
    settles: Vec<u64>,
}

impl SyncJob {
    /// Flushes each file (`fdatasync`), then the directory if removals
    /// wait for it; blocks on the disk. Returns how long it took on
    /// success.
    pub fn run(&self) -> std::io::Result<std::time::Duration> {
        let started = std::time::Instant::now();
        for t in &self.targets {
            t.file
                .sync_data()
                .map_err(|e| std::io::Error::new(e.kind(), format!("flush {}: {e}", t.path.display())))?;
        }
        if let Some(dir) = &self.dir {
            crate::segment::sync_dir_io(dir)
                .map_err(|e| std::io::Error::new(e.kind(), format!("flush directory {}: {e}", dir.display())))?;
        }
        Ok(started.elapsed())
    }
}

/// The next segment is made ahead once this fraction of the active one is
/// written (`Store::begin_prepare`). From half, a segment made under the
/// disk's load (its directory and header flushes wait behind the
/// writeback of the segments before it) came too late for 13 and 18 of
/// some 48 rolls of redis-benchmark's 1 KiB SETs at depth 16 (500k-550k
/// SETs/s), which made their segment on the shard thread; from an
/// eighth, for one. Made early, a segment only waits longer for its roll.
const PREPARE_FROM_SEGMENT_FRACTION: usize = 8;

/// Writes a second from which new segments are advised `MADV_HUGEPAGE`
/// (until the rate falls below half of it): a flush a second then writes
/// back at most one partly filled 2 MiB folio beyond what was written,
/// half as much again at this rate (see `segment::Paging::Huge`).
/// Depth-16 GETs and SETs at 1:10 append 7 MB/s to each of two servers
/// sharing a core.
pub const HUGE_PAGES_RATE_MIN_BYTES: u64 = 4 << 20;
/// Bytes of records one compaction step examines: small enough that a step
/// costs tens of microseconds, so requests interleaved with it stay fast.
pub const COMPACTION_STEP_BYTES: usize = 256 << 10;
/// Bytes of records one expiry sweep step walks (it reads headers, not
/// values): at a tick every 10 ms, at most 25 MiB of log a second.
pub const SWEEP_STEP_BYTES: usize = 256 << 10;
