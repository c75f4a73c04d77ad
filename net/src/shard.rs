//! A shard: one thread, one core, one store, its own connections.
//!
//! **Architecture Invariant:** a store is touched only by its shard's
//! thread. Other shards reach it by sending an [`Envelope`] through its
//! lock-free inbox (crossbeam) and waking it; the shard drains the inbox
//! once per wake-up, executes the batch, syncs once if the batch wrote and
//! the policy is `always`, then answers every envelope.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use crossbeam::channel::{Receiver, Sender};
use engine::{FsyncPolicy, Store};
use router::Ring;
use tokio::sync::{oneshot, watch, Notify};

use crate::limits::Limits;
use crate::op::{KeyOp, OpResult, ShardOp};

/// Work sent to another shard.
#[derive(Debug)]
pub enum Work {
    /// A multi-key request's operations that fall on the receiving shard,
    /// and the bytes of values their reads may gather there
    /// (`op::part_budget`).
    Keys(Vec<KeyOp>, usize),
    Shard(ShardOp),
    /// A step of a cross-shard MSETNX (see `txn`).
    Txn(crate::txn::TxnStep),
}

/// A request from another shard and where its answer goes.
#[derive(Debug)]
pub struct Envelope {
    pub work: Work,
    pub reply: oneshot::Sender<Vec<OpResult>>,
}

/// The sending side of a shard's inbox, shared with every other shard.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub tx: Sender<Envelope>,
    pub wake: Arc<Notify>,
}

impl Mailbox {
    pub fn send(&self, work: Work) -> oneshot::Receiver<Vec<OpResult>> {
        let (reply, rx) = oneshot::channel();
        // The receiver lives as long as the server; if it is gone the
        // dropped reply sender tells the waiting connection.
        let _ = self.tx.send(Envelope { work, reply });
        self.wake.notify_one();
        rx
    }
}

/// Counters every shard writes for itself and anyone may read. Padded to a
/// cache line so shards never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub struct ShardCounters {
    pub commands: AtomicU64,
    pub connections: AtomicU64,
    pub connections_total: AtomicU64,
    pub cross_shard_hops: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// INFO commandstats, counted by the connection's shard.
    pub commandstats: crate::resp::CommandStats,
    /// Request durations (each request of a batch counts the batch's).
    pub latency: crate::slowlog::AtomicHistogram,
}

/// What all shards of a server share (read-only after start, or atomics).
#[derive(Debug)]
pub struct Shared {
    pub ring: Ring,
    /// Shard index of each ring member (members are this node's shards).
    pub member_shard: Vec<usize>,
    pub mailboxes: Vec<Mailbox>,
    pub counters: Vec<ShardCounters>,
    pub limits: Limits,
    pub requirepass: Option<String>,
    pub fsync: FsyncPolicy,
    pub mode: engine::Mode,
    /// The node's memory bound; 0 for none.
    pub memory_max_bytes: u64,
    pub slowlog: crate::slowlog::SlowLog,
    /// Ports of the shard-aware listeners, by shard.
    pub shard_ports: Vec<u16>,
    pub started: std::time::Instant,
    /// Becomes true when the server starts shutting down.
    pub shutdown: watch::Sender<bool>,
    /// Connections open on any shard; shards close stores at zero.
    pub open_connections: AtomicUsize,
    pub tcp_port: u16,
    pub resp_port: Option<u16>,
}

impl Shared {
    pub fn shard_of(&self, key: &[u8]) -> usize {
        if self.member_shard.len() == 1 {
            return 0;
        }
        self.member_shard[self.ring.owner_of_key(key).get()]
    }

    /// The Redis `maxmemory-policy` name nearest to what the store does at
    /// its bound. Cache mode keeps recently read keys and drops the rest,
    /// with or without a TTL: Redis' name for that is `allkeys-lru`.
    pub fn maxmemory_policy(&self) -> &'static str {
        match self.mode {
            engine::Mode::Store => "noeviction",
            engine::Mode::Cache => "allkeys-lru",
        }
    }

    /// The limits a connection's requests are parsed with: smaller until
    /// it authenticates, when a password is set (`Limits::unauthenticated`).
    pub fn request_limits(&self, authenticated: bool) -> std::borrow::Cow<'_, Limits> {
        match &self.requirepass {
            Some(secret) if !authenticated => std::borrow::Cow::Owned(self.limits.unauthenticated(secret.len())),
            _ => std::borrow::Cow::Borrowed(&self.limits),
        }
    }

    pub fn total_commands(&self) -> u64 {
        self.counters.iter().map(|c| c.commands.load(Ordering::Relaxed)).sum()
    }
}

/// The acknowledgements a shard owes under `always`: each connection's
/// batch of writes waits for the flush that covers its sequence number,
/// and a flush wakes only the batches it covers. (A watch channel woke
/// every waiting batch at every flush; with flushes in flight most went
/// back to sleep, each poll of a connection for nothing. Measured in
/// alternating 8-second runs of 50 clients of SETs, session 8: 210k-212k
/// acknowledged writes per server CPU-s against 194k-205k.)
#[derive(Debug, Default)]
struct Acks {
    /// Highest write sequence known durable; `u64::MAX` once a flush
    /// failed (nothing more is acknowledged).
    synced: Cell<u64>,
    /// Waiting batches, ascending by sequence: sequences are handed out in
    /// order and each batch starts waiting as it gets one.
    waiting: RefCell<VecDeque<(u64, Waker)>>,
}

impl Acks {
    /// Resolves once write `seq` is durable (true) or a flush failed.
    fn wait(&self, seq: u64) -> impl Future<Output = bool> + '_ {
        std::future::poll_fn(move |cx| {
            let synced = self.synced.get();
            if synced >= seq {
                return Poll::Ready(synced != u64::MAX);
            }
            let mut waiting = self.waiting.borrow_mut();
            match waiting.binary_search_by_key(&seq, |&(s, _)| s) {
                Ok(at) => waiting[at].1.clone_from(cx.waker()),
                Err(at) => {
                    debug_assert_eq!(at, waiting.len(), "batches wait in the order of their sequences");
                    waiting.insert(at, (seq, cx.waker().clone()));
                }
            }
            Poll::Pending
        })
    }

    /// Every write up to `to` is durable: wakes the batches it covers.
    fn raise(&self, to: u64) {
        if self.synced.get() >= to {
            return;
        }
        self.synced.set(to);
        // Woken once the borrow is released, in case a waker runs its task.
        let covered: Vec<Waker> = {
            let mut waiting = self.waiting.borrow_mut();
            let n = waiting.partition_point(|&(seq, _)| seq <= to);
            waiting.drain(..n).map(|(_, waker)| waker).collect()
        };
        covered.into_iter().for_each(Waker::wake);
    }

    /// A flush failed: every batch waiting, and every later one, is told so.
    fn fail(&self) {
        self.synced.set(u64::MAX);
        let waiting = std::mem::take(&mut *self.waiting.borrow_mut());
        waiting.into_iter().for_each(|(_, waker)| waker.wake());
    }
}

/// One shard's state, owned by its thread.
#[derive(Debug)]
pub struct Shard {
    pub id: usize,
    pub shared: Arc<Shared>,
    pub store: RefCell<Option<Store>>,
    /// Writes applied so far (a sequence number per batch).
    write_seq: Cell<u64>,
    acks: Acks,
    dirty: Notify,
    /// A failed sync: nothing more is acknowledged.
    pub failed: Cell<bool>,
    /// Live connections on this shard.
    pub connections: Cell<usize>,
    pub connections_done: Notify,
    /// MSETNX reservations on this shard and the requests parked on them.
    pub reservations: RefCell<crate::txn::Reservations>,
    /// A segment is being made on the blocking pool (`Store::begin_prepare`):
    /// the store is closed only after it arrived.
    pub preparing: Cell<bool>,
    /// The maintenance loop's flush is running on the blocking pool.
    flushing: Cell<bool>,
    /// The maintenance loop's store work failing tick after tick.
    tick_failures: crate::repeated::Repeated,
    /// The maintenance loop's flushes failing to start, tick after tick.
    flush_start_failures: crate::repeated::Repeated,
    /// The compaction a batch of writes pays for failing, batch after batch.
    compaction_failures: crate::repeated::Repeated,
}

impl Shard {
    pub fn new(id: usize, shared: Arc<Shared>, mut store: Store) -> Shard {
        // The maintenance loop and the group commit run every flush on the
        // blocking pool.
        store.plan_flushes_elsewhere();
        Shard {
            id,
            shared,
            store: RefCell::new(Some(store)),
            write_seq: Cell::new(0),
            acks: Acks::default(),
            dirty: Notify::new(),
            failed: Cell::new(false),
            connections: Cell::new(0),
            connections_done: Notify::new(),
            reservations: RefCell::new(crate::txn::Reservations::default()),
            preparing: Cell::new(false),
            flushing: Cell::new(false),
            tick_failures: crate::repeated::Repeated::default(),
            flush_start_failures: crate::repeated::Repeated::default(),
            compaction_failures: crate::repeated::Repeated::default(),
        }
    }

    pub fn counters(&self) -> &ShardCounters {
        &self.shared.counters[self.id]
    }

    /// Runs `f` on the store. Panics only if called after shutdown closed
    /// the store, which no connection outlives.
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        let mut store = self.store.borrow_mut();
        f(store.as_mut().expect("store is open while connections run"))
    }

    /// Whether requests may run directly: no MSETNX holds a reservation
    /// here (otherwise they go through the inbox, which parks them).
    pub fn runs_directly(&self) -> bool {
        self.reservations.borrow().is_idle()
    }

    /// Runs the compaction that the writes of a batch owe
    /// (`Store::compact_owed`), before their replies go: a shard that
    /// writes fast pays for its garbage as it makes it.
    pub fn pay_compaction(&self) {
        match self.with_store(Store::compact_owed) {
            Ok(()) => self.compaction_failures.succeeded(|unlogged| {
                tracing::info!(shard = self.id, unlogged, "compaction works again");
            }),
            Err(err) => self.compaction_failures.failed(std::time::Instant::now(), |unlogged| {
                tracing::error!(shard = self.id, error = %err, unlogged, "compaction failed");
            }),
        }
    }

    /// Waits until every write applied so far on this shard is durable.
    /// Many connections waiting at once share one sync: group commit.
    /// Returns false when the sync failed (the writes are not acknowledged).
    pub async fn durable(&self) -> bool {
        if self.shared.fsync != FsyncPolicy::Always {
            return true;
        }
        let mine = self.write_seq.get() + 1;
        self.write_seq.set(mine);
        self.dirty.notify_one();
        self.acks.wait(mine).await
    }

    /// The group-commit loop: one flush for all the writes gathered while
    /// the previous flush started or during this loop turn. Flushes run on
    /// the blocking pool, up to `FLUSHES_IN_FLIGHT_MAX` at once: the
    /// writes that arrive while one is on disk start the next instead of
    /// waiting for it to land. An `fdatasync` also waits for the pages an
    /// earlier one is still writing, and each flush opens its file anew
    /// (`Segment::flush_target`), so it sees the write errors raised after
    /// its open or not yet reported to anyone. An error already reported to
    /// an earlier flush it may miss: what makes acknowledgements safe is
    /// that they are released in the order the flushes started, and none
    /// after a failure (a flush publishes only once the one before it has
    /// succeeded).
    ///
    /// Measured with 50 clients of SETs, server and load on a core each,
    /// in alternating 8-second runs (docs/benchmarks.md, session 7):
    /// acknowledged writes/s with one flush in flight 82k-166k, with three
    /// 136k-170k, three ahead in 5 of 5 pairs. In a sweep before the
    /// `MADV_RANDOM` change, two and four were within the noise of three.
    pub async fn sync_loop(self: Rc<Self>) {
        /// Bounds the wait for more writes before a flush starts.
        const GROUP_COMMIT_YIELDS_MAX: usize = 16;
        const FLUSHES_IN_FLIGHT_MAX: usize = 3;
        /// Wait before planning a flush again after one could not start.
        const FLUSH_RETRY_DELAY: Duration = Duration::from_millis(10);
        let in_flight = Rc::new(Cell::new(0usize));
        let landed = Rc::new(Notify::new());
        // Resolves when the flush started last has published its outcome.
        let mut previous: Option<oneshot::Receiver<bool>> = None;
        loop {
            self.dirty.notified().await;
            // Let the other connections add their writes while any are
            // still coming (each yield lets the runtime poll the sockets
            // once): a flush costs the shard ~45 µs of CPU whatever it
            // carries (fdatasync of one page, measured), so one flush for
            // every write ready now, not one for the first few. Measured
            // with 50 clients of SETs, server on one core: 45-47 writes a
            // flush instead of 35-37 after a single yield, 78k-84k
            // acknowledged writes/s instead of 71k-80k; with three flushes
            // in flight, no yield did worse too (132k-133k against
            // 146k-151k).
            for _ in 0..GROUP_COMMIT_YIELDS_MAX {
                let before = self.write_seq.get();
                tokio::task::yield_now().await;
                if self.write_seq.get() == before {
                    break;
                }
            }
            while in_flight.get() >= FLUSHES_IN_FLIGHT_MAX {
                landed.notified().await;
            }
            if self.failed.get() {
                return;
            }
            let target = self.write_seq.get();
            let job = match self.with_store(Store::begin_sync) {
                Ok(job) => job,
                Err(err @ engine::Error::Poisoned { .. }) => {
                    tracing::error!(shard = self.id, error = %err, "group commit stopped");
                    self.fail_syncs();
                    return;
                }
                // Nothing was flushed (a segment file could not be opened:
                // out of descriptors, say): the writes wait and the flush
                // is tried again.
                Err(err) => {
                    tracing::warn!(shard = self.id, error = %err, "flush not started; retrying");
                    tokio::time::sleep(FLUSH_RETRY_DELAY).await;
                    self.dirty.notify_one();
                    continue;
                }
            };
            in_flight.set(in_flight.get() + 1);
            let (publish, published) = oneshot::channel();
            let before = previous.replace(published);
            let (shard, in_flight, landed) = (self.clone(), in_flight.clone(), landed.clone());
            tokio::task::spawn_local(async move {
                let ok = match job {
                    None => true,
                    Some(job) => shard.flush(job).await,
                };
                in_flight.set(in_flight.get() - 1);
                landed.notify_one();
                let before_ok = match before {
                    Some(rx) => rx.await.unwrap_or(false),
                    None => true,
                };
                if !(ok && before_ok) || shard.failed.get() {
                    shard.fail_syncs();
                    // Wakes the loop, which sees the failure and stops.
                    shard.dirty.notify_one();
                    let _ = publish.send(false);
                    return;
                }
                shard.acks.raise(target);
                let _ = publish.send(true);
            });
        }
    }

    /// Runs a flush on the blocking pool and records its outcome in the
    /// store; false when it failed (the store is then poisoned). The group
    /// commit's flushes and the maintenance loop's both go through it.
    async fn flush(&self, job: engine::SyncJob) -> bool {
        let ran = tokio::task::spawn_blocking(move || {
            let outcome = job.run();
            (job, outcome)
        })
        .await;
        match ran {
            Ok((job, outcome)) => self.with_store(|s| s.finish_sync(job, outcome)).is_ok(),
            Err(err) => {
                tracing::error!(shard = self.id, error = %err, "flush task failed");
                false
            }
        }
    }

    /// A flush failed: nothing more is acknowledged.
    fn fail_syncs(&self) {
        self.failed.set(true);
        self.acks.fail();
    }

    /// Serves other shards' envelopes.
    pub async fn inbox_loop(self: Rc<Self>, rx: Receiver<Envelope>) {
        let wake = self.shared.mailboxes[self.id].wake.clone();
        let mut batch: Vec<(Vec<OpResult>, oneshot::Sender<Vec<OpResult>>)> = Vec::new();
        loop {
            wake.notified().await;
            let mut wrote = false;
            // Bounded per turn so that this shard's own connections run too.
            for envelope in rx.try_iter().take(4096) {
                // Executes, or parks the envelope while it touches a key an
                // MSETNX has reserved (then it runs after the commit).
                crate::txn::run_envelope(&self, envelope, &mut wrote, &mut batch);
            }
            if !rx.is_empty() {
                wake.notify_one();
            }
            if wrote {
                self.pay_compaction();
            }
            if wrote && !self.durable().await {
                batch.clear();
                continue;
            }
            for (results, reply) in batch.drain(..) {
                let _ = reply.send(results);
            }
        }
    }

    /// Periodic store work: the flushes the store asks for (`everysec`'s,
    /// and under any policy but `always` those a full or compacted segment
    /// waits for), the next segment, compaction, index growth and the
    /// expiry sweep.
    pub async fn maintenance_loop(self: Rc<Self>) {
        let mut interval = tokio::time::interval(Duration::from_millis(10));
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            // Flushes run on the blocking pool: the disk can take
            // milliseconds (5-12 ms measured for a second of SETs under
            // `everysec`, 27-43 ms for a full segment under `never`), which
            // this shard spends serving instead. In a task of their own, so
            // that compaction goes on meanwhile.
            if !self.flushing.get() && self.with_store(|s| s.sync_due()) {
                let started = self.with_store(Store::begin_sync);
                if started.is_ok() {
                    self.flush_start_failures.succeeded(|unlogged| {
                        tracing::info!(shard = self.id, unlogged, "periodic flushes start again");
                    });
                }
                match started {
                    Ok(Some(job)) => {
                        self.flushing.set(true);
                        let shard = self.clone();
                        tokio::task::spawn_local(async move {
                            if !shard.flush(job).await {
                                tracing::error!(shard = shard.id, "periodic flush failed");
                            }
                            shard.flushing.set(false);
                        });
                    }
                    Ok(None) => {}
                    Err(err) => self.flush_start_failures.failed(std::time::Instant::now(), |unlogged| {
                        tracing::error!(shard = self.id, error = %err, unlogged, "periodic flush not started");
                    }),
                }
            }
            // The next segment is made ahead of need, on the blocking pool
            // too, in a task of its own so that this loop goes on.
            if let Some(job) = self.with_store(Store::begin_prepare) {
                self.preparing.set(true);
                let shard = self.clone();
                tokio::task::spawn_local(async move {
                    match tokio::task::spawn_blocking(move || job.run()).await {
                        Ok(made) => shard.with_store(|s| s.finish_prepare(made)),
                        Err(err) => {
                            tracing::error!(shard = shard.id, error = %err, "segment preparation failed");
                            shard.with_store(Store::abandon_prepare);
                        }
                    }
                    shard.preparing.set(false);
                });
            }
            // Deleting a compacted 64 MiB file took ext4 14-15 ms (strace):
            // the blocking pool does it (a file left by a crash is deleted
            // at the next open).
            let doomed = self.with_store(Store::take_doomed_files);
            if !doomed.is_empty() {
                drop(tokio::task::spawn_blocking(move || doomed.iter().for_each(|p| engine::remove_doomed(p))));
            }
            // Compaction the writes did not pay for (`Store::compact_owed`
            // after each batch), such as garbage left when writes stopped,
            // and the expiry sweep's reclaims. Bounded: at most 16 steps a
            // tick, requests between them.
            for _ in 0..16 {
                let more = match self.with_store(Store::tick) {
                    Ok(more) => {
                        self.tick_failures.succeeded(|unlogged| {
                            tracing::info!(shard = self.id, unlogged, "store maintenance works again");
                        });
                        more
                    }
                    Err(err) => {
                        self.tick_failures.failed(std::time::Instant::now(), |unlogged| {
                            tracing::error!(shard = self.id, error = %err, unlogged, "store maintenance failed");
                        });
                        false
                    }
                };
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Acks;
    use std::future::Future;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::{Context, Poll, Wake, Waker};

    /// Counts its wakes.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll(f: std::pin::Pin<&mut impl Future<Output = bool>>, count: &Arc<Count>) -> Poll<bool> {
        let waker = Waker::from(count.clone());
        f.poll(&mut Context::from_waker(&waker))
    }

    #[test]
    fn a_flush_wakes_only_the_batches_it_covers() {
        let acks = Acks::default();
        let counts: Vec<Arc<Count>> = (0..3).map(|_| Arc::default()).collect();
        let mut waits: Vec<_> = (1..=3).map(|seq| Box::pin(acks.wait(seq))).collect();
        for (w, c) in waits.iter_mut().zip(&counts) {
            assert_eq!(poll(w.as_mut(), c), Poll::Pending);
        }
        acks.raise(2);
        let woken: Vec<usize> = counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect();
        assert_eq!(woken, [1, 1, 0]);
        assert_eq!(poll(waits[0].as_mut(), &counts[0]), Poll::Ready(true));
        assert_eq!(poll(waits[1].as_mut(), &counts[1]), Poll::Ready(true));
        // Polled again before its flush: still waiting, woken once by it.
        assert_eq!(poll(waits[2].as_mut(), &counts[2]), Poll::Pending);
        acks.raise(1);
        assert_eq!(counts[2].0.load(Ordering::SeqCst), 0, "a lower sequence changes nothing");
        acks.raise(3);
        assert_eq!(counts[2].0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(waits[2].as_mut(), &counts[2]), Poll::Ready(true));
        assert!(acks.waiting.borrow().is_empty());
        // Already durable: resolves at once.
        let mut done = Box::pin(acks.wait(3));
        assert_eq!(poll(done.as_mut(), &counts[0]), Poll::Ready(true));
    }

    #[test]
    fn a_failed_flush_answers_every_waiting_and_later_batch_with_false() {
        let acks = Acks::default();
        let count = Arc::new(Count::default());
        let mut waiting = Box::pin(acks.wait(1));
        assert_eq!(poll(waiting.as_mut(), &count), Poll::Pending);
        acks.fail();
        assert_eq!(count.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(waiting.as_mut(), &count), Poll::Ready(false));
        // A later flush cannot undo the failure.
        acks.raise(10);
        let mut later = Box::pin(acks.wait(2));
        assert_eq!(poll(later.as_mut(), &count), Poll::Ready(false));
    }
}
