//! The slow log: batches of requests that took longer than `--slowlog-ms`,
//! kept for SLOWLOG GET and reported as a tracing event.
//!
//! Time is measured per batch, from the moment its bytes were read to the
//! moment its replies were written: what a client sees, minus the network.
//! It includes waits for other shards and for the group commit, which is
//! what an operator looking for slow requests wants to find. A client that
//! does not pipeline sends batches of one request, so for it an entry is
//! one command, as in Redis; a pipelined batch is logged by its first
//! command, with the number of requests in the batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

/// Entries kept (Redis' default `slowlog-max-len`).
pub const SLOWLOG_DEFAULT_MAX_LEN: usize = 128;
/// Redis' default `slowlog-log-slower-than`: 10 ms.
pub const SLOWLOG_DEFAULT_THRESHOLD: Duration = Duration::from_millis(10);
/// Arguments kept per entry, as Redis keeps them.
const ARGS_MAX: usize = 32;
/// Bytes kept per argument.
const ARG_MAX_BYTES: usize = 128;

/// One slow batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowEntry {
    pub id: u64,
    pub at_unix_s: u64,
    pub duration_us: u64,
    /// The first command of the batch, shortened as Redis shortens it.
    pub args: Vec<Bytes>,
    pub client: String,
    pub client_name: Bytes,
    /// Requests in the batch.
    pub requests: u64,
}

/// The node's slow log.
#[derive(Debug)]
pub struct SlowLog {
    threshold: Option<Duration>,
    max_len: usize,
    next_id: AtomicU64,
    entries: Mutex<VecDeque<SlowEntry>>,
}

impl SlowLog {
    /// `threshold` `None` turns the log off.
    pub fn new(threshold: Option<Duration>, max_len: usize) -> SlowLog {
        SlowLog { threshold, max_len, next_id: AtomicU64::new(0), entries: Mutex::new(VecDeque::new()) }
    }

    /// Whether batches are being timed against a threshold at all.
    pub fn enabled(&self) -> bool {
        self.threshold.is_some() && self.max_len > 0
    }

    pub fn is_slow(&self, elapsed: Duration) -> bool {
        self.threshold.is_some_and(|t| elapsed >= t)
    }

    /// Logs a slow batch; `args` as [`capture`] made them.
    pub fn record(&self, elapsed: Duration, kept: Vec<Bytes>, client: String, client_name: Bytes, requests: u64) {
        let command = kept.first().map(|c| String::from_utf8_lossy(c).to_ascii_lowercase()).unwrap_or_default();
        tracing::warn!(
            target: "ringkv::slowlog",
            command = %command,
            duration_ms = elapsed.as_secs_f64() * 1e3,
            requests,
            %client,
            "slow request"
        );
        let entry = SlowEntry {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            at_unix_s: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            duration_us: u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
            args: kept,
            client,
            client_name,
            requests,
        };
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.push_front(entry);
        entries.truncate(self.max_len);
    }

    /// The newest `count` entries, newest first.
    pub fn get(&self, count: usize) -> Vec<SlowEntry> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).iter().take(count).cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// A batch's first request, kept for the slow log in buffers that the
/// connection reuses: every batch keeps its first request, only a slow one
/// turns it into an entry, so a batch allocates nothing for it. (Copying
/// the arguments out at every batch was 1% of a shard's CPU at pipeline
/// depth 16; keeping slices of the request instead held the connection's
/// whole read buffer, so 128 entries of an MSET of 16 MiB values pinned
/// gigabytes.)
#[derive(Debug, Default)]
pub struct FirstRequest {
    /// The arguments' first `ARG_MAX_BYTES` bytes, one after the other.
    bytes: Vec<u8>,
    /// Per kept argument: where it ends in `bytes`, and its whole length.
    args: Vec<(usize, usize)>,
    /// Arguments in all (more than `args` holds past `ARGS_MAX`).
    count: usize,
    kept: bool,
}

impl FirstRequest {
    /// Whether this batch's first request is kept already.
    pub fn is_kept(&self) -> bool {
        self.kept
    }

    pub fn keep<'a>(&mut self, args: impl IntoIterator<Item = &'a [u8]>) {
        self.forget();
        for arg in args {
            if self.args.len() < ARGS_MAX {
                self.bytes.extend_from_slice(&arg[..arg.len().min(ARG_MAX_BYTES)]);
                self.args.push((self.bytes.len(), arg.len()));
            }
            self.count += 1;
        }
        self.kept = true;
    }

    pub fn forget(&mut self) {
        self.bytes.clear();
        self.args.clear();
        self.count = 0;
        self.kept = false;
    }

    /// The arguments as an entry shows them: shortened as Redis shortens
    /// them (32 arguments, 128 bytes each), with AUTH's and HELLO's
    /// credentials redacted, as Redis 7 redacts them.
    pub fn entry_args(&self) -> Vec<Bytes> {
        let mut start = 0;
        let mut kept: Vec<Bytes> = self
            .args
            .iter()
            .map(|&(end, len)| {
                let mut arg = self.bytes[start..end].to_vec();
                start = end;
                if len > ARG_MAX_BYTES {
                    arg.extend_from_slice(format!("... ({} more bytes)", len - ARG_MAX_BYTES).as_bytes());
                }
                Bytes::from(arg)
            })
            .collect();
        if self.count > ARGS_MAX {
            kept[ARGS_MAX - 1] = Bytes::from(format!("... ({} more arguments)", self.count - ARGS_MAX + 1));
        }
        let redacted = || Bytes::from_static(b"(redacted)");
        match kept.first() {
            Some(name) if name.eq_ignore_ascii_case(b"auth") => kept[1..].iter_mut().for_each(|a| *a = redacted()),
            Some(name) if name.eq_ignore_ascii_case(b"hello") => {
                // HELLO protover [AUTH username password] [SETNAME name]:
                // options read in order, so that a client named "auth"
                // does not hide where the password is.
                let mut at = 2;
                while at < kept.len() {
                    if kept[at].eq_ignore_ascii_case(b"auth") {
                        kept.iter_mut().skip(at + 1).take(2).for_each(|a| *a = redacted());
                        at += 3;
                    } else if kept[at].eq_ignore_ascii_case(b"setname") {
                        at += 2;
                    } else {
                        at += 1;
                    }
                }
            }
            _ => {}
        }
        kept
    }
}

/// A request-duration histogram one shard's thread records into and any
/// thread reads (for the metrics).
#[derive(Debug, Default)]
pub struct AtomicHistogram {
    buckets: [AtomicU64; engine::HISTOGRAM_BUCKETS],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl AtomicHistogram {
    /// Records `n` requests that each took `elapsed`.
    pub fn record_n(&self, elapsed: Duration, n: u64) {
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        self.buckets[engine::histogram_bucket(micros)].fetch_add(n, Ordering::Relaxed);
        self.count.fetch_add(n, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros.saturating_mul(n), Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> engine::Histogram {
        let mut h = engine::Histogram::default();
        for (dst, src) in h.buckets.iter_mut().zip(&self.buckets) {
            *dst = src.load(Ordering::Relaxed);
        }
        h.count = self.count.load(Ordering::Relaxed);
        h.sum_micros = self.sum_micros.load(Ordering::Relaxed);
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `args` as an entry keeps them.
    fn capture(args: &[&[u8]]) -> Vec<Bytes> {
        let mut first = FirstRequest::default();
        first.keep(args.iter().copied());
        first.entry_args()
    }

    #[test]
    fn keeps_the_newest_entries_shortened() {
        let log = SlowLog::new(Some(Duration::from_millis(5)), 2);
        assert!(!log.is_slow(Duration::from_millis(4)) && log.is_slow(Duration::from_millis(5)));
        let long = vec![b'x'; 200];
        let many: Vec<Vec<u8>> = (0..40).map(|i: i32| i.to_string().into_bytes()).collect();
        let many: Vec<&[u8]> = many.iter().map(Vec::as_slice).collect();
        log.record(Duration::from_millis(6), capture(&[b"GET", &long]), "c".into(), Bytes::new(), 1);
        log.record(Duration::from_millis(7), capture(&many), "c".into(), Bytes::new(), 3);
        log.record(Duration::from_millis(8), capture(&[b"PING"]), "c".into(), Bytes::new(), 1);
        let got = log.get(10);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].id, got[1].id), (2, 1), "newest first, oldest dropped");
        assert_eq!(got[1].args.len(), 32);
        assert_eq!(&got[1].args[31][..], b"... (9 more arguments)");
        log.reset();
        assert!(log.is_empty());
        let log = SlowLog::new(Some(Duration::ZERO), 1);
        log.record(Duration::from_millis(1), capture(&[&[b'y'; 130]]), "c".into(), Bytes::new(), 1);
        assert_eq!(&log.get(1)[0].args[0][128..], b"... (2 more bytes)");
    }

    /// Credentials are redacted, and a kept request is forgotten for the
    /// next one.
    #[test]
    fn credentials_are_redacted_and_a_batch_keeps_only_its_own_request() {
        let mut first = FirstRequest::default();
        first.keep([&b"SET"[..], b"key", b"value"]);
        assert!(first.is_kept());
        first.forget();
        assert!(!first.is_kept() && first.entry_args().is_empty());
        first.keep([&b"GET"[..], b"other"]);
        assert_eq!(first.entry_args(), vec![Bytes::from("GET"), Bytes::from("other")]);
        let auth = capture(&[b"AUTH", b"default", b"hunter2"]);
        assert_eq!(auth, vec![Bytes::from("AUTH"), Bytes::from("(redacted)"), Bytes::from("(redacted)")]);
        let hello = capture(&[b"hello", b"3", b"AUTH", b"default", b"hunter2", b"SETNAME", b"app"]);
        let hello: Vec<&[u8]> = hello.iter().map(|a| &a[..]).collect();
        assert_eq!(hello, [&b"hello"[..], b"3", b"AUTH", b"(redacted)", b"(redacted)", b"SETNAME", b"app"]);
        // A client named "auth" before the credentials.
        let named = capture(&[b"HELLO", b"2", b"SETNAME", b"auth", b"AUTH", b"default", b"secret"]);
        let named: Vec<&[u8]> = named.iter().map(|a| &a[..]).collect();
        assert_eq!(named, [&b"HELLO"[..], b"2", b"SETNAME", b"auth", b"AUTH", b"(redacted)", b"(redacted)"]);
    }
}
