//! The in-memory index: key hash to record location, eight bytes a slot.
//!
//! Each slot holds one `u64`: the low 32 bits of the key's xxh3 hash in the
//! high half and the record's location (in 8-byte units of the log address
//! space) in the low half. Keys are not stored; a candidate slot is confirmed
//! by comparing the key in the log, which the caller does through a closure.
//!
//! The table is an *ordered* linear-probing table: a hash's home slot is
//! `hash * capacity >> 32` (monotone in the hash), and slots hold entries in
//! ascending hash order with no empty slot between an entry's home and its
//! position. Order buys three things:
//! - a miss stops at the first larger hash, so misses are as cheap as hits;
//! - growth needs no key reads: the home in a table of any size is computed
//!   from the stored hash, so capacities need not be powers of two and the
//!   table grows by 1.5x, not 2x, which keeps the fill between 57% and 85%;
//! - a scan cursor is simply a hash value, stable across growth.
//!
//! Growth is incremental: a new table is allocated and every mutation moves
//! a bounded batch of the old table's entries, smallest hashes first. While
//! that runs, hashes below `threshold` live in the new table and the others
//! in the old one, so every lookup still touches exactly one table.
//!
//! The lowest bit of the stored hash is not part of the hash: it is the
//! entry's *mark*, set when the key is read (cache mode). Hashes given to
//! the index have that bit cleared (31 bits of hash remain, which only
//! doubles the rare key comparisons of equal hashes). Eviction reads the
//! mark to keep what is still read; a mark costs no memory this way. The
//! slots are `Cell`s so that a read (`&self`) can set it.
//!
//! The low 32 bits of xxh3 are used because the ring routes on the full
//! 64-bit hash: one shard owns arcs of it, so its high bits are clustered
//! while the low bits stay uniform.

use std::cell::Cell;
use std::ops::ControlFlow;

/// A record's location in 8-byte units of the log address space.
pub type Loc = u32;

const EMPTY: u64 = 0;
/// Fill at which the table starts to grow.
const LOAD_MAX_PERCENT: usize = 85;
/// Growth factor, as a fraction: new capacity = capacity * 3 / 2.
const GROWTH_NUM: usize = 3;
const GROWTH_DEN: usize = 2;
const CAPACITY_MIN_SLOTS: usize = 1024;
/// Slots past the last home slot, so that runs never wrap around.
const OVERFLOW_SLOTS: usize = 256;
/// Entries moved from the old table per mutation while growing. Two would
/// finish before the new table fills; eight finishes early with little
/// cost per operation.
const MIGRATE_ENTRIES_PER_OP: usize = 8;

/// Hints the CPU to load the cache line at `p`. Never faults, whatever
/// `p` is.
pub fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetch is a hint; it does not dereference the pointer in a
    // way that can fault, and SSE is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// The mark bit of an entry: the lowest bit of its hash half.
const MARK: u64 = 1 << 32;

/// Clears the mark bit from a hash given to the index.
fn unmarked(hash: u32) -> u32 {
    hash & !1
}
fn entry(hash: u32, loc: Loc) -> u64 {
    (u64::from(unmarked(hash)) << 32) | u64::from(loc)
}
fn entry_hash(e: u64) -> u32 {
    unmarked((e >> 32) as u32)
}
fn entry_loc(e: u64) -> Loc {
    e as u32
}

#[derive(Debug)]
struct Table {
    slots: Slots,
    /// Number of home slots; `slots` has `OVERFLOW_SLOTS` more.
    capacity: usize,
    len: usize,
    /// Slots below this were moved to the next table (old table only).
    floor: usize,
    /// While the table holds only entries appended in ascending hash order
    /// (`append_sorted`), the slot after the last one; `None` once anything
    /// else changed it.
    sorted_end: Option<usize>,
}

/// The slot array, in an anonymous mapping of its own: the kernel hands
/// out zeroed pages as they are first touched, so a table of millions of
/// slots costs nothing up front and its zeroing is spread over the
/// migration. From the allocator, a growth step's table was zeroed at once
/// on the shard thread: `vec![Cell::new(EMPTY); n]` writes every slot, and
/// mimalloc's zeroed allocation still wrote all of a 64 MiB table, a 26 ms
/// stall (`perf record` of SETs of new keys at -P 16).
struct Slots {
    /// Taken from the mapping mutably once, so writes through the cells
    /// have the right to write.
    ptr: std::ptr::NonNull<Cell<u64>>,
    len: usize,
    /// Owns the memory (unmapped on drop); read through `ptr` only.
    map: memmap2::MmapMut,
}

// SAFETY: `Slots` owns its mapping exclusively, as a `Vec<Cell<u64>>`
// owns its buffer, and `Cell<u64>` is `Send`.
unsafe impl Send for Slots {}

impl Slots {
    fn new(len: usize) -> Slots {
        const _: () = assert!(EMPTY == 0, "empty slots are zero bytes");
        let bytes = (len * std::mem::size_of::<u64>()).max(1);
        // Out of address space is out of memory, as for a `Vec`.
        let mut map = memmap2::MmapMut::map_anon(bytes).expect("map the index's slots");
        // Huge pages where the kernel has them (`madvise` mode here): a
        // lookup's slot then rarely misses the TLB as well as the cache.
        // In-process gets of 32-byte values, 1M keys, interleaved with a
        // `HashMap` (`engine_interleaved`): 0.671x and 0.676x of it instead
        // of 0.605x and 0.636x; sets 0.784x-0.791x instead of
        // 0.723x-0.753x. Through the server at pipeline depth 16 it
        // measured no difference (0.987x-0.996x, session 5). The cost: the
        // first touch of a huge page zeroes 2 MiB at once (a growth step's
        // table is touched as its migration goes), and with memory
        // fragmented the kernel may compact before it can give one.
        if let Err(err) = map.advise(memmap2::Advice::HugePage) {
            tracing::debug!(error = %err, "MADV_HUGEPAGE refused; the index uses small pages");
        }
        let ptr = std::ptr::NonNull::new(map.as_mut_ptr().cast::<Cell<u64>>()).expect("a mapping is never null");
        Slots { ptr, len, map }
    }

    /// Adds `extra` empty slots at the end.
    fn grow(&mut self, extra: usize) {
        let bigger = Slots::new(self.len + extra);
        for (to, from) in bigger.iter().zip(self.iter()) {
            to.set(from.get());
        }
        *self = bigger;
    }

    /// Faults every page in, writable, in one call: for a table about to
    /// be filled at once (a bulk load), where touching the pages one by one
    /// costs two faults each (the first read maps the shared zero page, the
    /// first write copies it). 10M keys (`engine_memory restart 10000000
    /// 2`, four interleaved runs each): recovery 654-700 MiB/s instead of
    /// 608-671, clean restart 0.151-0.183 s instead of 0.163-0.188.
    fn populate(&self) {
        if let Err(err) = self.map.advise(memmap2::Advice::PopulateWrite) {
            tracing::debug!(error = %err, "MADV_POPULATE_WRITE failed; pages fault in as touched");
        }
    }

    /// Bytes mapped.
    fn bytes(&self) -> usize {
        self.len * std::mem::size_of::<u64>()
    }
}

impl std::ops::Deref for Slots {
    type Target = [Cell<u64>];

    fn deref(&self) -> &[Cell<u64>] {
        // SAFETY: `ptr` points at `len` initialised (zeroed or written)
        // `Cell<u64>`s, page aligned, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl std::ops::DerefMut for Slots {
    fn deref_mut(&mut self) -> &mut [Cell<u64>] {
        // SAFETY: as in `deref`, and `&mut self` makes this the only view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl std::fmt::Debug for Slots {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slots").field("len", &self.len).finish()
    }
}

impl Table {
    fn with_capacity(capacity: usize) -> Table {
        let capacity = capacity.max(CAPACITY_MIN_SLOTS);
        Table { slots: Slots::new(capacity + OVERFLOW_SLOTS), capacity, len: 0, floor: 0, sorted_end: Some(0) }
    }

    /// Adds an entry known to be absent. While every entry came this way in
    /// ascending hash order, it goes straight to the first slot at or after
    /// both its home and the last entry (homes grow with hashes, so no slot
    /// between its home and its place is empty): no search, no shifting.
    fn append_sorted(&mut self, e: u64) {
        let hash = entry_hash(e);
        let fast = self.sorted_end.filter(|&end| end == 0 || self.at(end - 1).is_some_and(|l| entry_hash(l) <= hash));
        let Some(end) = fast else {
            self.insert_new(e);
            return;
        };
        let pos = self.home(hash).max(end);
        if pos >= self.slots.len() {
            let extra = OVERFLOW_SLOTS.max(self.slots.len() / 64).max(pos + 1 - self.slots.len());
            self.slots.grow(extra);
        }
        self.slots[pos].set(e);
        self.len += 1;
        self.sorted_end = Some(pos + 1);
    }

    fn at(&self, i: usize) -> Option<u64> {
        self.slots.get(i).map(Cell::get)
    }

    /// The slots as plain words, for the moves of inserts and removals.
    fn raw(&mut self) -> &mut [u64] {
        let cells: &mut [Cell<u64>] = &mut self.slots;
        // SAFETY: `Cell<u64>` has the same in-memory representation as
        // `u64` (it is a transparent `UnsafeCell`), and `&mut self` rules
        // out any other reference to the cells while this one lives.
        unsafe { &mut *(cells as *mut [Cell<u64>] as *mut [u64]) }
    }

    fn home(&self, hash: u32) -> usize {
        ((u64::from(hash) * self.capacity as u64) >> 32) as usize
    }

    /// Finds the slot holding `hash` whose location satisfies `is_key`, or
    /// the position where such an entry would be inserted.
    fn search(&self, hash: u32, is_key: &mut impl FnMut(Loc) -> bool) -> Result<usize, usize> {
        let mut i = self.home(hash).max(self.floor);
        while let Some(e) = self.at(i) {
            if e == EMPTY || entry_hash(e) > hash {
                return Err(i);
            }
            if entry_hash(e) == hash && is_key(entry_loc(e)) {
                return Ok(i);
            }
            i += 1;
        }
        Err(i)
    }

    /// Inserts `e` at `pos`, shifting the run after it one slot right.
    fn insert_at(&mut self, pos: usize, e: u64) {
        self.sorted_end = None;
        let free = match self.raw()[pos..].iter().position(|&s| s == EMPTY) {
            Some(offset) => pos + offset,
            None => {
                // The run reached the end of the overflow area: extend it.
                // This copies the table once, which only a pathological run
                // at the very end of the hash space can cause.
                let extra = OVERFLOW_SLOTS.max(self.slots.len() / 64);
                self.slots.grow(extra);
                self.raw()[pos..].iter().position(|&s| s == EMPTY).map_or(pos, |o| pos + o)
            }
        };
        let slots = self.raw();
        slots.copy_within(pos..free, pos + 1);
        slots[pos] = e;
        self.len += 1;
    }

    /// Removes the entry at `pos`, shifting displaced entries back.
    fn remove_at(&mut self, pos: usize) {
        self.sorted_end = None;
        let mut end = pos + 1;
        while let Some(e) = self.at(end) {
            if e == EMPTY || self.home(entry_hash(e)) >= end {
                break;
            }
            end += 1;
        }
        let slots = self.raw();
        slots.copy_within(pos + 1..end, pos);
        slots[end - 1] = EMPTY;
        self.len -= 1;
    }

    /// Inserts an entry known to be absent, after any equal hashes.
    fn insert_new(&mut self, e: u64) {
        let pos = match self.search(entry_hash(e), &mut |_| false) {
            Ok(pos) | Err(pos) => pos,
        };
        self.insert_at(pos, e);
    }
}

/// The index. See the module documentation for its layout.
#[derive(Debug)]
pub struct Index {
    cur: Table,
    /// The table being drained into `cur` while the index grows.
    old: Option<Table>,
    /// While `old` exists, hashes below this live in `cur`.
    threshold: u64,
}

impl Default for Index {
    fn default() -> Self {
        Index::with_capacity(0)
    }
}

impl Index {
    /// An index sized to hold `keys` entries without growing, its pages
    /// faulted in at once when it is to be filled at once (`keys` > 0).
    pub fn with_capacity(keys: usize) -> Index {
        let cur = Table::with_capacity(keys * 100 / LOAD_MAX_PERCENT + 1);
        if keys > 0 {
            cur.slots.populate();
        }
        Index { cur, old: None, threshold: 0 }
    }

    pub fn len(&self) -> usize {
        self.cur.len + self.old.as_ref().map_or(0, |t| t.len)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Slots a pass over every entry (`scan_from`) reads, empty or not.
    pub fn slots(&self) -> usize {
        let table = |t: &Table| t.slots.len();
        table(&self.cur) + self.old.as_ref().map_or(0, table)
    }

    /// Bytes of memory held by the slot arrays.
    pub fn heap_bytes(&self) -> usize {
        let table = |t: &Table| t.slots.bytes();
        table(&self.cur) + self.old.as_ref().map_or(0, table)
    }

    /// Bytes the next growth step will allocate, once that step is near
    /// (the table within 10 points of its growth fill; zero before, and
    /// while a step is under way, whose table `heap_bytes` counts). A
    /// memory bound must make room for it ahead: a step allocates a table
    /// 1.5 times the size at once.
    pub fn growth_reserve_bytes(&self) -> usize {
        if self.old.is_some() || self.cur.len * 100 <= self.cur.capacity * (LOAD_MAX_PERCENT - 10) {
            return 0;
        }
        (self.cur.capacity * GROWTH_NUM / GROWTH_DEN + OVERFLOW_SLOTS) * std::mem::size_of::<u64>()
    }

    fn owner(&self, hash: u32) -> &Table {
        match &self.old {
            Some(old) if u64::from(hash) >= self.threshold => old,
            _ => &self.cur,
        }
    }

    fn owner_mut(&mut self, hash: u32) -> &mut Table {
        match &mut self.old {
            Some(old) if u64::from(hash) >= self.threshold => old,
            _ => &mut self.cur,
        }
    }

    /// Asks the CPU to start loading the slot where `hash` would be found,
    /// so that a later lookup does not wait for memory. Pipelined requests
    /// prefetch all their slots first (memory-level parallelism).
    pub fn prefetch(&self, hash: u32) {
        let hash = unmarked(hash);
        let table = self.owner(hash);
        let home = table.home(hash).max(table.floor);
        if let Some(slot) = table.slots.get(home) {
            prefetch_read(slot.as_ptr() as *const u8);
        }
    }

    /// The location in the first slot holding `hash`, without confirming
    /// the key: a guess good enough to prefetch the record.
    pub fn first_candidate(&self, hash: u32) -> Option<Loc> {
        let hash = unmarked(hash);
        let table = self.owner(hash);
        table.search(hash, &mut |_| true).ok().map(|pos| entry_loc(table.slots[pos].get()))
    }

    /// The location of the key with `hash` that `is_key` confirms.
    pub fn get(&self, hash: u32, mut is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        let hash = unmarked(hash);
        let table = self.owner(hash);
        table.search(hash, &mut is_key).ok().map(|pos| entry_loc(table.slots[pos].get()))
    }

    /// As `get`, and marks the entry as read.
    pub fn get_marking(&self, hash: u32, mut is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        let hash = unmarked(hash);
        let table = self.owner(hash);
        let slot = &table.slots[table.search(hash, &mut is_key).ok()?];
        let e = slot.get();
        if e & MARK == 0 {
            slot.set(e | MARK);
        }
        Some(entry_loc(e))
    }

    /// Whether the entry of `hash` at `loc` exists, and if so whether it
    /// was read since it was written or last moved with its mark cleared.
    pub fn mark_at(&self, hash: u32, loc: Loc) -> Option<bool> {
        let hash = unmarked(hash);
        let table = self.owner(hash);
        let pos = table.search(hash, &mut |l| l == loc).ok()?;
        Some(table.slots[pos].get() & MARK != 0)
    }

    /// Points the key at `loc`, returning its previous location. The entry
    /// is unmarked: a write is not a read.
    pub fn upsert(&mut self, hash: u32, loc: Loc, mut is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        let hash = unmarked(hash);
        let table = self.owner_mut(hash);
        match table.search(hash, &mut is_key) {
            Ok(pos) => {
                let prev = entry_loc(table.slots[pos].get());
                table.slots[pos].set(entry(hash, loc));
                Some(prev)
            }
            Err(pos) => {
                table.insert_at(pos, entry(hash, loc));
                self.after_insert();
                None
            }
        }
    }

    /// Removes the key, returning its location.
    pub fn remove(&mut self, hash: u32, mut is_key: impl FnMut(Loc) -> bool) -> Option<Loc> {
        let hash = unmarked(hash);
        let table = self.owner_mut(hash);
        let pos = table.search(hash, &mut is_key).ok()?;
        let loc = entry_loc(table.slots[pos].get());
        table.remove_at(pos);
        self.migrate(MIGRATE_ENTRIES_PER_OP);
        Some(loc)
    }

    /// Moves an entry from `from` to `to` if the key still lives at `from`
    /// (compaction copies a record and must not undo a newer write). The
    /// mark is kept when `keep_mark` is set and cleared otherwise.
    pub fn relocate(&mut self, hash: u32, from: Loc, to: Loc, keep_mark: bool) -> bool {
        let hash = unmarked(hash);
        let table = self.owner_mut(hash);
        match table.search(hash, &mut |loc| loc == from) {
            Ok(pos) => {
                let mark = if keep_mark { table.slots[pos].get() & MARK } else { 0 };
                table.slots[pos].set(entry(hash, to) | mark);
                true
            }
            Err(_) => false,
        }
    }

    /// Adds an entry known to be absent; used by bulk loads, which are
    /// fastest in ascending hash order.
    pub fn push_sorted(&mut self, hash: u32, loc: Loc) {
        self.cur.append_sorted(entry(hash, loc));
        self.after_insert();
    }

    /// Makes room for `keys` entries at once (no incremental growth): for
    /// bulk loads, which must not insert sorted runs into a small table.
    pub fn reserve(&mut self, keys: usize) {
        self.finish_growth();
        if keys * 100 > self.cur.capacity * LOAD_MAX_PERCENT {
            self.rebuild(keys * 100 / LOAD_MAX_PERCENT + 1);
        }
    }

    /// Shrinks a table filled under half (after a bulk load that reserved
    /// for more keys than remained) to the fill a growth step would give.
    pub fn fit(&mut self) {
        self.finish_growth();
        let target = self.cur.len * GROWTH_NUM * 100 / (GROWTH_DEN * LOAD_MAX_PERCENT) + 1;
        if self.cur.len * 2 < self.cur.capacity && target > CAPACITY_MIN_SLOTS {
            self.rebuild(target);
        }
    }

    /// Moves every entry, in order, into a table of `capacity` home slots.
    fn rebuild(&mut self, capacity: usize) {
        let mut next = Table::with_capacity(capacity);
        // Filled at once, for the bulk load to come (`reserve`) or from
        // the current table (`fit`).
        next.slots.populate();
        for e in self.cur.slots.iter().map(Cell::get).filter(|&e| e != EMPTY) {
            next.append_sorted(e);
        }
        self.cur = next;
    }

    pub fn clear(&mut self) {
        *self = Index::default();
    }

    /// Visits entries in hash order starting at hash `cursor`. The visitor
    /// breaks to stop; entries sharing a hash are always visited together,
    /// so the returned cursor (the next hash to visit, or `None` at the
    /// end) resumes exactly where the visit stopped.
    pub fn scan_from(&self, cursor: u64, mut visit: impl FnMut(u32, Loc) -> ControlFlow<()>) -> Option<u64> {
        let Ok(start) = u32::try_from(cursor) else {
            return None;
        };
        let mut parts: [Option<&Table>; 2] = [Some(&self.cur), self.old.as_ref()];
        if self.old.is_some() && cursor >= self.threshold {
            parts[0] = None;
        }
        // While the table grows, the new one holds only hashes below
        // `threshold`. Past that hash's home, the first empty slot ends
        // them (no empty slot lies between an entry's home and its
        // position): walking on visited every empty slot of the new table,
        // work proportional to it in one call.
        let new_part_end = self.old.as_ref().map(|_| {
            let threshold = u32::try_from(self.threshold).unwrap_or(u32::MAX);
            self.cur.home(threshold)
        });
        let mut stop_after: Option<u32> = None;
        for (n, table) in parts.into_iter().enumerate() {
            let Some(table) = table else { continue };
            let ends_at_empty = if n == 0 { new_part_end } else { None };
            let mut i = table.home(start).max(table.floor);
            while let Some(e) = table.at(i) {
                if e == EMPTY && ends_at_empty.is_some_and(|end| i >= end) {
                    break;
                }
                i += 1;
                if e == EMPTY || entry_hash(e) < start {
                    continue;
                }
                let hash = entry_hash(e);
                if let Some(last) = stop_after {
                    if hash != last {
                        return Some(u64::from(hash));
                    }
                }
                if visit(hash, entry_loc(e)).is_break() {
                    stop_after = Some(hash);
                }
            }
        }
        None
    }

    fn after_insert(&mut self) {
        if self.old.is_some() {
            self.migrate(MIGRATE_ENTRIES_PER_OP);
        } else if self.cur.len * 100 > self.cur.capacity * LOAD_MAX_PERCENT {
            let next = Table::with_capacity(self.cur.capacity * GROWTH_NUM / GROWTH_DEN);
            self.old = Some(std::mem::replace(&mut self.cur, next));
            self.threshold = 0;
        }
    }

    /// Moves up to `budget` entries (plus any sharing the last one's hash)
    /// from the old table into the current one.
    pub fn migrate(&mut self, budget: usize) {
        let Some(old) = &mut self.old else { return };
        let mut moved = 0;
        let mut scanned = 0;
        let mut last: Option<u32> = None;
        while let Some(e) = old.at(old.floor) {
            if e != EMPTY {
                let hash = entry_hash(e);
                if moved >= budget && last != Some(hash) {
                    break;
                }
                self.cur.insert_new(e);
                old.slots[old.floor].set(EMPTY);
                old.len -= 1;
                moved += 1;
                last = Some(hash);
                self.threshold = u64::from(hash) + 1;
            } else if scanned >= budget.saturating_mul(8) && moved >= budget {
                break;
            }
            old.floor += 1;
            scanned += 1;
        }
        if old.floor >= old.slots.len() {
            debug_assert_eq!(old.len, 0, "every entry moved");
            self.old = None;
        }
    }

    /// Finishes any growth in progress (used before checkpoints).
    pub fn finish_growth(&mut self) {
        while self.old.is_some() {
            self.migrate(usize::MAX / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    /// Keys are u32 ids; the test "log" maps loc -> id. Hashes keep only
    /// 8 bits of spread so that distinct keys share hashes often.
    fn check_against_model(ops: Vec<(u8, u32)>) {
        let hash_of = |key: u32| (key.wrapping_mul(0x9e37_79b9) >> 24) << 24;
        let mut index = Index::default();
        let mut model: HashMap<u32, Loc> = HashMap::new();
        let mut log: HashMap<Loc, u32> = HashMap::new();
        let mut next_loc: Loc = 4;
        for (op, key) in ops {
            let hash = hash_of(key);
            if op % 3 == 2 {
                let prev = index.remove(hash, |l| log.get(&l) == Some(&key));
                assert_eq!(prev, model.remove(&key));
            } else {
                next_loc += 1;
                log.insert(next_loc, key);
                let prev = index.upsert(hash, next_loc, |l| log.get(&l) == Some(&key));
                assert_eq!(prev, model.insert(key, next_loc));
            }
            assert_eq!(index.len(), model.len());
        }
        for (key, loc) in &model {
            assert_eq!(index.get(hash_of(*key), |l| log.get(&l) == Some(key)), Some(*loc));
        }
        index.finish_growth();
        let mut seen = 0;
        let mut last = 0u32;
        index.scan_from(0, |h, loc| {
            assert!(h >= last, "scan in hash order");
            last = h;
            let key = log[&loc];
            assert_eq!(model.get(&key), Some(&loc));
            seen += 1;
            ControlFlow::Continue(())
        });
        assert_eq!(seen, model.len());
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec((any::<u8>(), 0u32..3000), 0..4000)) {
            check_against_model(ops);
        }
    }

    #[test]
    fn grows_incrementally_and_keeps_every_key() {
        let mut index = Index::default();
        let n = 200_000u32;
        for i in 0..n {
            let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) as u32;
            assert!(index.upsert(h, i + 4, |l| l == i + 4).is_none());
            // No stop-the-world: the old table never holds more than one
            // growth step's worth of entries.
            assert!(index.old.as_ref().map_or(0, |t| t.len) <= index.len());
        }
        for i in 0..n {
            let h = xxhash_rust::xxh3::xxh3_64(&i.to_le_bytes()) as u32;
            assert_eq!(index.get(h, |l| l == i + 4), Some(i + 4), "key {i}");
        }
        index.finish_growth();
        let fill = index.len() as f64 / index.cur.capacity as f64;
        assert!((0.5..=0.86).contains(&fill), "fill {fill}");
        assert!(index.heap_bytes() / index.len() <= 16);
    }

    #[test]
    fn scan_cursor_resumes_exactly_across_growth() {
        let mut index = Index::default();
        for i in 0..5000u32 {
            index.upsert(i.wrapping_mul(2_654_435_761) | 1, i + 4, |_| false);
        }
        let mut cursor = Some(0u64);
        let mut seen = std::collections::HashSet::new();
        let mut rounds = 0;
        while let Some(c) = cursor {
            rounds += 1;
            assert!(rounds < 10_000);
            let mut batch = 0;
            cursor = index.scan_from(c, |_, loc| {
                assert!(seen.insert(loc), "loc {loc} visited twice");
                batch += 1;
                if batch == 10 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            // Growth in the middle of a scan must not lose or repeat keys.
            if rounds == 50 {
                for j in 0..3000u32 {
                    index.upsert(j.wrapping_mul(0x85eb_ca6b) | 1, 1_000_000 + j, |_| false);
                }
            }
        }
        for i in 0..5000u32 {
            assert!(seen.contains(&(i + 4)), "{i} missed");
        }
    }

    /// A scan while the table grows sees every key once, whether it lives
    /// in the new table (moved already) or the old one; the new table's
    /// part ends at its first empty slot past the threshold's home.
    #[test]
    fn a_scan_in_the_middle_of_growth_sees_every_key() {
        let mut index = Index::default();
        let hash = |i: u32| i.wrapping_mul(0x9e37_79b9) & !1;
        let mut n = 0u32;
        while index.old.is_none() {
            index.upsert(hash(n), n + 4, |_| false);
            n += 1;
        }
        // A few more: some entries move to the new table, most stay.
        for _ in 0..3 {
            index.upsert(hash(n), n + 4, |_| false);
            n += 1;
        }
        assert!(index.old.is_some() && index.threshold > 0, "still growing");
        let mut seen = std::collections::HashSet::new();
        let mut cursor = Some(0);
        let mut rounds = 0;
        while let Some(c) = cursor {
            rounds += 1;
            assert!(rounds < 100_000);
            let mut batch = 0;
            cursor = index.scan_from(c, |_, loc| {
                assert!(seen.insert(loc), "loc {loc} visited twice");
                batch += 1;
                if batch == 7 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
        }
        assert!(index.old.is_some(), "the scan did not finish the growth");
        assert_eq!(seen.len(), n as usize);
    }
}

#[cfg(test)]
mod sorted_batches {
    use super::*;

    impl Table {
        /// The longest distance of an entry from its home slot.
        fn max_displacement(&self) -> usize {
            self.slots
                .iter()
                .map(Cell::get)
                .enumerate()
                .filter(|&(_, e)| e != EMPTY)
                .map(|(i, e)| i - self.home(entry_hash(e)))
                .max()
                .unwrap_or(0)
        }
    }

    #[test]
    fn sorted_pushes_then_any_change_keep_every_key() {
        // Clustered hashes (long runs), equal hashes and hashes equal but
        // for the mark bit, pushed in order as a checkpoint load does, then
        // one out of order (the slow way), then ordinary changes.
        let mut entries: Vec<(u32, Loc)> =
            (0..20_000u32).map(|k| ((k / 3).wrapping_mul(0x9e37_79b9) >> 8 << 8 | (k % 2), 2 * k + 4)).collect();
        entries.sort_unstable();
        let mut index = Index::default();
        index.reserve(entries.len() + 1);
        for &(h, loc) in &entries {
            index.push_sorted(h, loc);
        }
        index.push_sorted(7, 1_000_000);
        entries.push((7, 1_000_000));
        let find = |index: &Index, h: u32, loc: Loc| index.get(h, |l| l == loc);
        for &(h, loc) in &entries {
            assert_eq!(find(&index, h, loc), Some(loc), "hash {h:#x}");
        }
        for &(h, loc) in entries.iter().step_by(7) {
            assert_eq!(index.remove(h, |l| l == loc), Some(loc));
            assert_eq!(index.upsert(h, loc + 1, |l| l == loc), None);
        }
        index.fit();
        for (i, &(h, loc)) in entries.iter().enumerate() {
            let now = if i % 7 == 0 { loc + 1 } else { loc };
            assert_eq!(find(&index, h, now), Some(now), "hash {h:#x}");
        }
        assert_eq!(index.len(), entries.len());
    }

    /// Sorted batches inserted after reserving room (as recovery did
    /// segment by segment until session 6): entries must then sit near
    /// their homes. Without the reserve,
    /// the smallest hashes of a batch pile up in the first slots of a small
    /// table and every insert scans the pile.
    #[test]
    fn sorted_batches_after_reserve_stay_near_home() {
        let mut index = Index::default();
        let n: u32 = 400_000;
        let batch = 60_000u32;
        let mut i = 0u32;
        while i < n {
            let mut hashes: Vec<(u32, u32)> =
                (i..(i + batch).min(n)).map(|k| (xxhash_rust::xxh3::xxh3_64(&k.to_le_bytes()) as u32, k + 4)).collect();
            hashes.sort_unstable();
            index.reserve(index.len() + hashes.len());
            for (j, (h, loc)) in hashes.into_iter().enumerate() {
                index.upsert(h, loc, |l| l == loc);
                if j % 10_000 == 9_999 {
                    let worst = index.cur.max_displacement().max(index.old.as_ref().map_or(0, Table::max_displacement));
                    assert!(worst < 200, "after {} keys an entry sits {worst} slots from home", i as usize + j);
                }
            }
            i += batch;
        }
        assert_eq!(index.len(), n as usize);
    }
}
