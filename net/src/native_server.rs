//! The native protocol on the server side: requests to jobs, results to
//! frames.

use std::sync::atomic::Ordering;

use bytes::{BufMut, BytesMut};

use crate::conn::{Cut, Job, Protocol};
use crate::native::{self, put_bytes, put_error, put_response, Opcode, RequestBody, Status};
use crate::op::{KeyOp, OpResult, ShardOp};
use crate::shard::Shard;

/// Per-connection state of the native protocol.
#[derive(Debug, Default)]
pub struct Native {
    authenticated: bool,
    /// The batch's first request, for the slow log (only while it is on).
    first: crate::slowlog::FirstRequest,
}

/// How a native job's results are rendered.
#[derive(Debug)]
pub enum Shape {
    Key { id: u32 },
    MGet { id: u32 },
    MSet { id: u32 },
    Stats { id: u32 },
    Status { id: u32, status: Status },
    Error { id: u32, message: String },
    Ring { id: u32 },
}

impl Protocol for Native {
    type Shape = Shape;

    fn parse(&mut self, buf: &mut BytesMut, shard: &Shard) -> Option<Job<Shape>> {
        let shared = &shard.shared;
        if let Some((cut, shape)) = self.parse_cut(buf, shard) {
            return Some(Job::Key(crate::conn::cut_get_set(buf, cut), shape));
        }
        let limits = shared.request_limits(self.authenticated);
        let request = match native::decode_request(buf, &limits) {
            Ok(Some(r)) => r,
            Ok(None) => return None,
            Err((id, err)) => {
                tracing::info!(error = %err, "bad native frame; closing connection");
                buf.clear();
                return Some(Job::ReplyAndClose(Shape::Error { id, message: err.to_string() }));
            }
        };
        let id = request.id;
        if !self.first.is_kept() && shared.slowlog.enabled() {
            self.first.keep(request.body.summary());
        }
        if let Some(secret) = &shared.requirepass {
            if !self.authenticated {
                match &request.body {
                    RequestBody::Auth(given) => {
                        self.authenticated = constant_time_eq(given, secret.as_bytes());
                        return Some(Job::Reply(if self.authenticated {
                            Shape::Status { id, status: Status::Ok }
                        } else {
                            Shape::Error { id, message: "WRONGPASS invalid password".into() }
                        }));
                    }
                    RequestBody::Ping => {}
                    _ => {
                        return Some(Job::Reply(Shape::Error { id, message: "NOAUTH authentication required".into() }))
                    }
                }
            }
        }
        Some(match request.body {
            RequestBody::Key(op) => {
                let now = if op.needs_clock() { shard.with_store(|s| s.now_ms()) } else { 0 };
                Job::Key(op.into_op(now), Shape::Key { id })
            }
            RequestBody::MGet(keys) => {
                Job::Keys(keys.into_iter().map(|key| KeyOp::Get { key }).collect(), Shape::MGet { id })
            }
            RequestBody::MSet(pairs) => {
                Job::MSet { pairs, only_if_absent: false, local: false, shape: Shape::MSet { id } }
            }
            RequestBody::Ping => Job::Reply(Shape::Status { id, status: Status::Ok }),
            RequestBody::Stats => Job::Shards(ShardOp::Stats, Shape::Stats { id }),
            RequestBody::Auth(given) => Job::Reply(match &shared.requirepass {
                Some(secret) if constant_time_eq(&given, secret.as_bytes()) => Shape::Status { id, status: Status::Ok },
                Some(_) => Shape::Error { id, message: "WRONGPASS invalid password".into() },
                None => Shape::Error { id, message: "AUTH called without a password configured".into() },
            }),
            RequestBody::Ring => Job::Reply(Shape::Ring { id }),
        })
    }

    /// The short way for plain GETs and SETs (`native::decode_get_set`).
    fn parse_cut(&mut self, buf: &[u8], shard: &Shard) -> Option<(Cut, Shape)> {
        let shared = &shard.shared;
        if shared.requirepass.is_some() && !self.authenticated {
            return None;
        }
        let native::GetSet { id, set, key, value, end } = native::decode_get_set(buf, &shared.limits)?;
        if !self.first.is_kept() && shared.slowlog.enabled() {
            let name = if set { Opcode::Set } else { Opcode::Get }.name().as_bytes();
            self.first.keep([name, &buf[key.clone()]]);
        }
        Some((Cut { key, value: set.then_some(value), end }, Shape::Key { id }))
    }

    fn render(&mut self, shape: &Shape, results: &[OpResult], shard: &Shard, out: &mut BytesMut) {
        match shape {
            Shape::Key { id } => match results.first() {
                Some(r) => native::put_result(out, *id, r),
                None => put_error(out, *id, "no result"),
            },
            // A part that failed (its shard gone, the reply too large) is
            // the reply, not a miss.
            Shape::MGet { id } if results.iter().any(|r| matches!(r, OpResult::Error(_))) => {
                let message = results.iter().find_map(|r| match r {
                    OpResult::Error(e) => Some(e.as_str()),
                    _ => None,
                });
                put_error(out, *id, message.unwrap_or_default())
            }
            Shape::MGet { id } => put_response(out, Status::Ok, *id, |o| {
                o.put_u32_le(results.len() as u32);
                for r in results {
                    match r {
                        OpResult::Value(Some(v)) => {
                            o.put_u8(1);
                            put_bytes(o, v);
                        }
                        _ => o.put_u8(0),
                    }
                }
            }),
            Shape::MSet { id } => match results.iter().find_map(|r| match r {
                OpResult::Error(e) => Some(e),
                _ => None,
            }) {
                Some(err) => put_error(out, *id, err),
                None => put_response(out, Status::Ok, *id, |_| {}),
            },
            Shape::Stats { id } => {
                let text = stats_text(shard, results);
                put_response(out, Status::Ok, *id, |o| o.put_slice(text.as_bytes()));
            }
            Shape::Status { id, status } => put_response(out, *status, *id, |_| {}),
            Shape::Error { id, message } => put_error(out, *id, message),
            Shape::Ring { id } => {
                let shared = &shard.shared;
                let toml = shared.ring.description().to_toml_string().unwrap_or_default();
                put_response(out, Status::Ok, *id, |o| {
                    o.put_u64_le(shared.ring.epoch());
                    o.put_u32_le(shared.shard_ports.len() as u32);
                    shared.shard_ports.iter().for_each(|p| o.put_u16_le(*p));
                    o.put_slice(toml.as_bytes());
                });
            }
        }
    }

    fn render_borrowed_get(&mut self, shape: &Shape, value: Option<&[u8]>, out: &mut BytesMut) -> bool {
        match shape {
            Shape::Key { id } => {
                native::put_value(out, *id, value);
                true
            }
            _ => false,
        }
    }

    fn begin_batch(&mut self, _started: std::time::Instant) {
        self.first.forget();
    }

    fn first_request(&self) -> (Vec<bytes::Bytes>, bytes::Bytes) {
        (self.first.entry_args(), bytes::Bytes::new())
    }
}

/// The STATS text: `name:value` lines, summed over shards.
pub fn stats_text(shard: &Shard, results: &[OpResult]) -> String {
    let mut sum = engine::Stats::default();
    for r in results {
        if let OpResult::Stats(s) = r {
            sum.add(s);
        }
    }
    let shared = &shard.shared;
    let counter = |f: fn(&crate::shard::ShardCounters) -> &std::sync::atomic::AtomicU64| -> u64 {
        shared.counters.iter().map(|c| f(c).load(Ordering::Relaxed)).sum()
    };
    format!(
        "shards:{}\nmode:{}\nkeys:{}\nlive_bytes:{}\ndead_bytes:{}\nsegments:{}\nsegment_bytes:{}\nsegments_ready:{}\nrolls_waited:{}\nsegments_recycled:{}\nsegments_spare:{}\nindex_bytes:{}\nmemory_used_bytes:{}\nmemory_max_bytes:{}\nhits:{}\nmisses:{}\nevicted_keys:{}\nevicted_segments:{}\nsyncs:{}\ncompactions:{}\nexpired_reclaimed:{}\npoisoned:{}\ntotal_commands_processed:{}\nconnected_clients:{}\ntotal_connections_received:{}\ncross_shard_hops:{}\ntotal_net_input_bytes:{}\ntotal_net_output_bytes:{}\nprocess_cpu_ms:{}\nuptime_ms:{}\n",
        shared.counters.len(),
        match shared.mode {
            engine::Mode::Store => "store",
            engine::Mode::Cache => "cache",
        },
        sum.keys,
        sum.live_bytes,
        sum.dead_bytes,
        sum.segments,
        sum.segment_bytes,
        sum.segments_ready,
        sum.rolls_waited,
        sum.segments_recycled,
        sum.segments_spare,
        sum.index_bytes,
        sum.memory_used_bytes,
        shared.memory_max_bytes,
        sum.hits,
        sum.misses,
        sum.evicted_keys,
        sum.evicted_segments,
        sum.syncs,
        sum.compactions,
        sum.expired_reclaimed,
        u8::from(sum.poisoned),
        counter(|c| &c.commands),
        counter(|c| &c.connections),
        counter(|c| &c.connections_total),
        counter(|c| &c.cross_shard_hops),
        counter(|c| &c.bytes_in),
        counter(|c| &c.bytes_out),
        process_cpu_ms(),
        shared.started.elapsed().as_millis(),
    )
}

/// CPU time (user + system) this process has used, in milliseconds.
pub fn process_cpu_ms() -> u64 {
    let (user, sys) = process_cpu_split_ms();
    user + sys
}

/// CPU time this process has used, (user, system), in milliseconds.
pub fn process_cpu_split_ms() -> (u64, u64) {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::uninit();
    // SAFETY: getrusage writes a full rusage into the pointer on success.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    if !ok {
        return (0, 0);
    }
    // SAFETY: initialised by the successful call above.
    let u = unsafe { usage.assume_init() };
    let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
    (ms(u.ru_utime), ms(u.ru_stime))
}

/// Compares secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}
