//! The connection loop shared by both protocols: read what the socket has,
//! parse every complete request, execute local operations at once and send
//! others to their shards, wait for durability once per batch, write all
//! replies in request order with one write.

use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::op::{KeyOp, OpResult, ShardOp};
use crate::shard::{Shard, Work};

/// What a parsed request asks for.
#[derive(Debug)]
pub enum Job<S> {
    /// Answer without touching a store.
    Reply(S),
    /// Answer, then close the connection (QUIT).
    ReplyAndClose(S),
    /// One operation on one key.
    Key(KeyOp, S),
    /// One operation per key, results in argument order.
    Keys(Vec<KeyOp>, S),
    /// One operation on every shard, results in shard order.
    Shards(ShardOp, S),
    /// One operation on one shard (a SCAN step).
    Shard(usize, ShardOp, S),
    /// MSET, or MSETNX (`only_if_absent`): all pairs written, or none
    /// (see `txn`). `local` is set by the connection loop: every key is
    /// this shard's and it holds no reservation, so the pairs are written
    /// in line; otherwise later requests of the connection wait until the
    /// exchange with the other shards has decided it.
    MSet { pairs: Vec<(bytes::Bytes, bytes::Bytes)>, only_if_absent: bool, local: bool, shape: S },
    /// A plain GET or SET whose bytes stay in the read buffer (made by the
    /// connection loop from `Protocol::parse_cut`, never by `parse`).
    Cut(CutAt, S),
}

/// Where a plain GET's key, or a SET's key and value, lie in a request
/// (`Protocol::parse_cut`): positions from the request's first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cut {
    pub key: Range<usize>,
    /// `None` for a GET.
    pub value: Option<Range<usize>>,
    /// Where the request ends.
    pub end: usize,
}

/// A cut request of a batch: its bytes are in `runs[run]` of the batch, or
/// still at the front of the read buffer when `run` is past the last run.
/// Positions are from the run's first byte.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CutAt {
    run: usize,
    key: Range<usize>,
    value: Option<Range<usize>>,
}

impl CutAt {
    fn bytes<'a>(&self, runs: &'a [Bytes], inbuf: &'a [u8]) -> &'a [u8] {
        runs.get(self.run).map_or(inbuf, |r| &r[..])
    }

    fn key<'a>(&self, runs: &'a [Bytes], inbuf: &'a [u8]) -> &'a [u8] {
        &self.bytes(runs, inbuf)[self.key.clone()]
    }

    /// The request as an operation of its own, for another shard, its bytes
    /// shared with its run (which must have left the read buffer).
    fn to_op(&self, runs: &[Bytes]) -> KeyOp {
        let take = |r: &Range<usize>| runs[self.run].slice(r.clone());
        KeyOp::get_or_set(take(&self.key), self.value.as_ref().map(take))
    }
}

/// A protocol: parses requests into jobs and renders their results.
pub trait Protocol {
    /// How a job's results are rendered (the request id, the command...).
    type Shape: std::fmt::Debug;

    /// Parses one request from the front of `buf`; `None`: incomplete.
    /// A request that can never be valid becomes `ReplyAndClose` with an
    /// error shape, so the error is written after the replies before it.
    fn parse(&mut self, buf: &mut BytesMut, shard: &Shard) -> Option<Job<Self::Shape>>;

    /// A plain GET or SET (no options) at the front of `buf`, found without
    /// cutting anything out of it: the bulk of a pipeline, which the
    /// connection loop then serves from the read buffer itself (splitting
    /// every request's bytes off the buffer, as `parse` does, raises and
    /// drops a reference count for each key and value: 6% of a shard's CPU
    /// at pipeline depth 16). `None` for anything else, an incomplete
    /// request included: `parse` decides what those are.
    fn parse_cut(&mut self, buf: &[u8], shard: &Shard) -> Option<(Cut, Self::Shape)>;

    /// Renders results (empty for `Reply`).
    fn render(&mut self, shape: &Self::Shape, results: &[OpResult], shard: &Shard, out: &mut BytesMut);

    /// Renders a single GET straight from the store's mapping, if this
    /// shape is a plain GET; returns false otherwise.
    fn render_borrowed_get(&mut self, shape: &Self::Shape, value: Option<&[u8]>, out: &mut BytesMut) -> bool;

    /// Called when a batch starts, before its first request is parsed.
    fn begin_batch(&mut self, _started: Instant) {}

    /// Called once the replies of a batch are written (or the connection
    /// ends in the middle of one), with the time since it started.
    fn end_batch(&mut self, _shard: &Shard, _elapsed: std::time::Duration) {}

    /// The batch's first request as the slow log shows it, and the
    /// client's name; asked for only when the batch was slow. (Each
    /// protocol forgets it in `begin_batch`.)
    fn first_request(&self) -> (Vec<Bytes>, Bytes);
}

/// Bytes of an incomplete request that must arrive within the partial
/// request timeout for its clock to start again: a large value on a slow
/// link (64 KiB per 30 s by default, about 2 KiB/s) is not cut off, a
/// trickle of single bytes is.
const PARTIAL_PROGRESS_MIN_BYTES: usize = 64 << 10;

/// A reply not yet written because an earlier one is still awaited.
#[derive(Debug)]
enum Pending<S> {
    Ready(BytesMut),
    Gather { shape: S, results: Vec<Option<OpResult>>, waits: Vec<(oneshot::Receiver<Vec<OpResult>>, Vec<usize>)> },
}

const READ_BUFFER_BYTES: usize = 16 << 10;

/// Serves one connection until the client leaves, errs, or the server
/// shuts down.
pub async fn serve<P: Protocol>(shard: Rc<Shard>, mut stream: TcpStream, mut proto: P) {
    let _ = stream.set_nodelay(true);
    let peer = stream.peer_addr().ok();
    let mut inbuf = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut out = BytesMut::with_capacity(READ_BUFFER_BYTES);
    let mut pending: VecDeque<Pending<P::Shape>> = VecDeque::new();
    let limits = shard.shared.limits.clone();
    let mut shutdown = shard.shared.shutdown.subscribe();
    if *shutdown.borrow_and_update() {
        return;
    }
    // One future for the whole connection: made anew for every read, it
    // would join and leave the channel's waiter list (a lock each) every
    // request.
    let stop = shutdown.changed();
    tokio::pin!(stop);
    // Complete requests are still buffered (the last batch stopped early):
    // serve them before reading, or a client waiting for their replies
    // would wait forever.
    let mut resume = false;
    // Reused for every batch.
    let mut job_buf: Vec<Job<P::Shape>> = Vec::new();
    let mut run_buf: Vec<Bytes> = Vec::new();
    let mut hash_buf: Vec<Option<engine::KeyHash>> = Vec::new();
    // The start of the batch under way, if any.
    let mut batch_started: Option<Instant> = None;
    // When more of the incomplete request at the front of the buffer must
    // have arrived, and the buffer's length when that clock started. The
    // clock starts when the connection first waits for the rest of a
    // request; it starts again once `PARTIAL_PROGRESS_MIN_BYTES` more have
    // come (a large value on a slow link), and it stops once a batch served
    // a request. A client trickling a byte now and then does not move it
    // (restarted at every read, it kept half a frame, and the buffer
    // reserved for it, open forever).
    let mut partial: Option<(tokio::time::Instant, usize)> = None;
    loop {
        if !resume {
            // Idle connections may wait forever; one holding half a request
            // may not.
            partial = match partial {
                _ if inbuf.is_empty() => None,
                Some((at, from)) if inbuf.len() < from + PARTIAL_PROGRESS_MIN_BYTES => Some((at, from)),
                _ => Some((tokio::time::Instant::now() + limits.partial_request_timeout, inbuf.len())),
            };
            let partial_deadline = partial.map(|(at, _)| at);
            let stalled = async {
                match partial_deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let read = tokio::select! {
                biased;
                _ = &mut stop => break,
                r = stream.read_buf(&mut inbuf) => r,
                () = stalled => {
                    tracing::info!(?peer, buffered = inbuf.len(), "client stalled in the middle of a request; closing");
                    break;
                }
            };
            match read {
                Ok(0) => break,
                Ok(n) => {
                    shard.counters().bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(err) => {
                    tracing::debug!(?peer, error = %err, "read failed; closing");
                    break;
                }
            }
        }
        let mut wrote = false;
        let mut close = false;
        let mut commands = 0u64;
        resume = true;
        let started = Instant::now();
        batch_started = Some(started);
        proto.begin_batch(started);
        // Parse the batch first, so that its local keys' cache misses can
        // overlap (prefetch), then execute it in order.
        let mut jobs = std::mem::take(&mut job_buf);
        // Cut requests' bytes stay at the front of `inbuf` (`cut` of them)
        // until a request that is not cut needs the front: they are then
        // split off at once, one run, and the last run leaves the buffer
        // only once the batch has run.
        let mut runs = std::mem::take(&mut run_buf);
        let mut cut = 0;
        while jobs.len() < limits.pipeline_batch_max {
            if let Some((c, shape)) = proto.parse_cut(&inbuf[cut..], &shard) {
                let at = |r: Range<usize>| r.start + cut..r.end + cut;
                jobs.push(Job::Cut(CutAt { run: runs.len(), key: at(c.key), value: c.value.map(at) }, shape));
                cut += c.end;
                continue;
            }
            if cut == inbuf.len() {
                resume = false;
                break;
            }
            if cut > 0 {
                runs.push(inbuf.split_to(cut).freeze());
                cut = 0;
            }
            let Some(mut job) = proto.parse(&mut inbuf, &shard) else {
                resume = false;
                break;
            };
            if let Job::MSet { pairs, local, .. } = &mut job {
                *local = shard.runs_directly() && pairs.iter().all(|(k, _)| shard.shared.shard_of(k) == shard.id);
            }
            // Both end the batch: QUIT closes, an MSET across shards must be
            // decided before the requests after it are parsed.
            let last = matches!(job, Job::ReplyAndClose(_) | Job::MSet { local: false, .. });
            jobs.push(job);
            if last {
                break;
            }
        }
        if !jobs.is_empty() {
            // A request was served: what is left starts its own clock.
            partial = None;
        }
        // The index hash of each local one-key job of a batch (`None` for
        // the others), computed once for the prefetch and the execution.
        let mut hashes = std::mem::take(&mut hash_buf);
        hashes.clear();
        if jobs.len() > 1 && shard.runs_directly() {
            shard.with_store(|s| {
                let local = |key: &[u8]| (shard.shared.shard_of(key) == shard.id).then(|| s.hash_of(key));
                hashes.extend(jobs.iter().map(|job| match job {
                    Job::Key(op, _) => local(op.key()),
                    Job::Cut(at, _) => local(at.key(&runs, &inbuf)),
                    _ => None,
                }));
                for stage in 0..2 {
                    hashes.iter().flatten().for_each(|&h| s.prefetch(h, stage));
                }
            });
        }
        for (i, job) in jobs.drain(..).enumerate() {
            commands += 1;
            match job {
                Job::Reply(shape) => emit(&mut proto, &shard, &mut pending, &mut out, shape, &[]),
                Job::ReplyAndClose(shape) => {
                    tracing::debug!(?peer, ?shape, "closing connection after this reply");
                    emit(&mut proto, &shard, &mut pending, &mut out, shape, &[]);
                    close = true;
                    break;
                }
                Job::Key(op, shape) => {
                    let hash = hashes.get(i).copied().flatten();
                    let owner = if hash.is_some() { shard.id } else { shard.shared.shard_of(op.key()) };
                    if owner == shard.id && shard.runs_directly() {
                        wrote |= op.is_write();
                        if let KeyOp::Get { key } = &op {
                            if borrowed_get(&mut proto, &shard, &pending, &mut out, &shape, key, hash) {
                                continue;
                            }
                        }
                        let result = shard.with_store(|s| crate::op::execute_hashed(s, &op, hash));
                        emit(&mut proto, &shard, &mut pending, &mut out, shape, std::slice::from_ref(&result));
                    } else {
                        send_one(&shard, &mut pending, owner, op, shape);
                    }
                }
                Job::Cut(at, shape) => {
                    let hash = hashes.get(i).copied().flatten();
                    let owner = if hash.is_some() { shard.id } else { shard.shared.shard_of(at.key(&runs, &inbuf)) };
                    if owner == shard.id && shard.runs_directly() {
                        let bytes = at.bytes(&runs, &inbuf);
                        let key = &bytes[at.key.clone()];
                        let value = at.value.clone().map(|v| &bytes[v]);
                        wrote |= value.is_some();
                        if value.is_none() && borrowed_get(&mut proto, &shard, &pending, &mut out, &shape, key, hash) {
                            continue;
                        }
                        let result = shard.with_store(|s| crate::op::execute_get_set(s, key, value, hash));
                        emit(&mut proto, &shard, &mut pending, &mut out, shape, std::slice::from_ref(&result));
                    } else {
                        if at.run == runs.len() {
                            // The last run leaves the buffer now, so that
                            // the request's bytes are shared with the other
                            // shard rather than copied; the cut requests
                            // after it find their bytes in the run.
                            runs.push(inbuf.split_to(cut).freeze());
                            cut = 0;
                        }
                        send_one(&shard, &mut pending, owner, at.to_op(&runs), shape);
                    }
                }
                Job::Keys(ops, shape) => {
                    let n = ops.len();
                    let mut results: Vec<Option<OpResult>> = vec![None; n];
                    let mut by_shard: Vec<(Vec<KeyOp>, Vec<usize>)> =
                        vec![(Vec::new(), Vec::new()); shard.shared.mailboxes.len()];
                    for (i, op) in ops.into_iter().enumerate() {
                        let owner = shard.shared.shard_of(op.key());
                        by_shard[owner].0.push(op);
                        by_shard[owner].1.push(i);
                    }
                    let mut waits = Vec::new();
                    let budget = crate::op::part_budget(by_shard.iter().filter(|(ops, _)| !ops.is_empty()).count());
                    for (owner, (ops, positions)) in by_shard.into_iter().enumerate() {
                        if ops.is_empty() {
                            continue;
                        }
                        if owner == shard.id && shard.runs_directly() {
                            wrote |= ops.iter().any(KeyOp::is_write);
                            let local = shard.with_store(|s| crate::op::execute_all(s, &ops, budget));
                            for (result, i) in local.into_iter().zip(&positions) {
                                results[*i] = Some(result);
                            }
                        } else {
                            shard.counters().cross_shard_hops.fetch_add(1, Ordering::Relaxed);
                            waits.push((shard.shared.mailboxes[owner].send(Work::Keys(ops, budget)), positions));
                        }
                    }
                    if waits.is_empty() && pending.is_empty() {
                        let results: Vec<OpResult> = results.into_iter().map(|r| r.expect("all local")).collect();
                        proto.render(&shape, &results, &shard, &mut out);
                    } else {
                        pending.push_back(Pending::Gather { shape, results, waits });
                    }
                }
                Job::Shards(sop, shape) => {
                    let shards = shard.shared.mailboxes.len();
                    let mut results: Vec<Option<OpResult>> = vec![None; shards];
                    let mut waits = Vec::new();
                    for (owner, slot) in results.iter_mut().enumerate() {
                        if owner == shard.id {
                            wrote |= sop == ShardOp::FlushAll;
                            *slot = Some(shard.with_store(|s| crate::op::execute_shard(s, sop)));
                        } else {
                            waits.push((shard.shared.mailboxes[owner].send(Work::Shard(sop)), vec![owner]));
                        }
                    }
                    pending.push_back(Pending::Gather { shape, results, waits });
                }
                Job::Shard(owner, sop, shape) => {
                    if owner == shard.id {
                        wrote |= sop == ShardOp::FlushAll;
                        let result = shard.with_store(|s| crate::op::execute_shard(s, sop));
                        emit(&mut proto, &shard, &mut pending, &mut out, shape, std::slice::from_ref(&result));
                    } else {
                        let rx = shard.shared.mailboxes[owner].send(Work::Shard(sop));
                        pending.push_back(Pending::Gather { shape, results: vec![None], waits: vec![(rx, vec![0])] });
                    }
                }
                Job::MSet { pairs, only_if_absent, local: true, shape } => {
                    let result = shard.with_store(|s| crate::txn::apply(s, &pairs, only_if_absent));
                    wrote |= result == OpResult::Existed(false);
                    emit(&mut proto, &shard, &mut pending, &mut out, shape, std::slice::from_ref(&result));
                }
                Job::MSet { pairs, only_if_absent, local: false, shape } => {
                    let (tx, rx) = oneshot::channel();
                    tokio::task::spawn_local(crate::txn::mset(shard.clone(), pairs, only_if_absent, tx));
                    pending.push_back(Pending::Gather { shape, results: vec![None], waits: vec![(rx, vec![0])] });
                    // Requests after it wait for its answer (resume below).
                    break;
                }
            }
        }
        job_buf = jobs;
        hash_buf = hashes;
        // The last run's bytes are served: they leave the buffer.
        inbuf.advance(cut);
        runs.clear();
        run_buf = runs;
        shard.counters().commands.fetch_add(commands, Ordering::Relaxed);
        if inbuf.len() > limits.frame_max_bytes + 1024 {
            tracing::info!(?peer, "request larger than the frame limit; closing connection");
            close = true;
        }
        if wrote {
            shard.pay_compaction();
        }
        if wrote && !shard.durable().await {
            tracing::error!(?peer, "sync failed; closing without acknowledging writes");
            break;
        }
        for p in pending.drain(..) {
            match p {
                Pending::Ready(bytes) => out.extend_from_slice(&bytes),
                Pending::Gather { shape, mut results, waits } => {
                    for (rx, positions) in waits {
                        let answers = rx.await.unwrap_or_default();
                        for (i, answer) in positions.into_iter().zip(
                            answers
                                .into_iter()
                                .chain(std::iter::repeat_with(|| OpResult::Error("shard unavailable".into()))),
                        ) {
                            results[i] = Some(answer);
                        }
                    }
                    let results: Vec<OpResult> =
                        results.into_iter().map(|r| r.unwrap_or(OpResult::Error("lost".into()))).collect();
                    proto.render(&shape, &results, &shard, &mut out);
                }
            }
        }
        if !out.is_empty() {
            shard.counters().bytes_out.fetch_add(out.len() as u64, Ordering::Relaxed);
            if let Err(err) = stream.write_all(&out).await {
                tracing::debug!(?peer, error = %err, "write failed; closing");
                break;
            }
            out.clear();
            if out.capacity() > 4 << 20 {
                out = BytesMut::with_capacity(READ_BUFFER_BYTES);
            }
        }
        let elapsed = started.elapsed();
        if commands > 0 {
            shard.counters().latency.record_n(elapsed, commands);
            if shard.shared.slowlog.is_slow(elapsed) {
                let (first, name) = proto.first_request();
                let client = peer.map_or_else(String::new, |p| p.to_string());
                shard.shared.slowlog.record(elapsed, first, client, name, commands);
            }
        }
        proto.end_batch(&shard, elapsed);
        batch_started = None;
        if close {
            break;
        }
    }
    // A batch cut short (a failed write or flush) still counts its time.
    proto.end_batch(&shard, batch_started.map_or(std::time::Duration::ZERO, |s| s.elapsed()));
    let _ = stream.shutdown().await;
}

/// Cuts a plain GET's key, or a SET's key and value, out of the front of
/// `buf`, where the request ends at `end` (`key` and `value` are positions
/// in it): the request's bytes are split off the buffer and trimmed rather
/// than sliced from a frame, since every slice raises and drops a reference
/// count (the read buffer's reference counting was 6% of a shard's CPU at
/// pipeline depth 16).
pub(crate) fn cut_get_set(buf: &mut BytesMut, cut: Cut) -> KeyOp {
    let Cut { key, value, end } = cut;
    let mut frame = buf.split_to(end);
    let value = value.map(|value| {
        let mut v = frame.split_off(value.start);
        v.truncate(value.len());
        v.freeze()
    });
    frame.advance(key.start);
    frame.truncate(key.len());
    KeyOp::get_or_set(frame.freeze(), value)
}

/// Serves a local GET straight from the store's mapping, when no reply
/// waits before it and its shape allows; false when it did not.
fn borrowed_get<P: Protocol>(
    proto: &mut P,
    shard: &Shard,
    pending: &VecDeque<Pending<P::Shape>>,
    out: &mut BytesMut,
    shape: &P::Shape,
    key: &[u8],
    hash: Option<engine::KeyHash>,
) -> bool {
    pending.is_empty()
        && shard.with_store(|s| {
            let value = s.get_hashed(key, hash.unwrap_or_else(|| s.hash_of(key)));
            proto.render_borrowed_get(shape, value, out)
        })
}

/// Sends one key's operation to the shard that owns it; its reply is
/// awaited in order.
fn send_one<S>(shard: &Shard, pending: &mut VecDeque<Pending<S>>, owner: usize, op: KeyOp, shape: S) {
    shard.counters().cross_shard_hops.fetch_add(1, Ordering::Relaxed);
    let rx = shard.shared.mailboxes[owner].send(Work::Keys(vec![op], crate::op::REPLY_VALUES_MAX_BYTES));
    pending.push_back(Pending::Gather { shape, results: vec![None], waits: vec![(rx, vec![0])] });
}

/// Renders a reply now, or queues it behind replies still awaited.
fn emit<P: Protocol>(
    proto: &mut P,
    shard: &Shard,
    pending: &mut VecDeque<Pending<P::Shape>>,
    out: &mut BytesMut,
    shape: P::Shape,
    results: &[OpResult],
) {
    if pending.is_empty() {
        proto.render(&shape, results, shard, out);
    } else {
        let mut buf = BytesMut::new();
        proto.render(&shape, results, shard, &mut buf);
        pending.push_back(Pending::Ready(buf));
    }
}
