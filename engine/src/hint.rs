//! The index checkpoint ("hint file") written at clean shutdown, so that a
//! clean restart loads the index instead of scanning every record.
//!
//! ```text
//!  0       8         12         16              24                32
//! +-------+---------+----------+---------------+-----------------+
//! | magic | version | segments | entries (u64) | index seed (u64) |   header, 32 bytes
//! +-------+---------+----------+---------------+-----------------+
//! | slot u32 | sealed_end u32 | seq u64 | live_bytes u64 |   x segments
//! | entry u64 (hash << 32 | loc), ascending hash         |   x entries
//! | crc32 u32 over every byte before it                  |
//! ```
//!
//! The file is read once at open and deleted before the store takes any
//! write, so a hint can never describe a log that changed after it. It is
//! also checked against the segments on disk (slot, seq, sealed end), and
//! any mismatch or damage means a full scan instead.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::ops::ControlFlow;
use std::path::Path;

use crate::error::{Error, Result};
use crate::index::Index;
use crate::log::Log;
use crate::store::Store;

const MAGIC: [u8; 8] = *b"RKVHINT1";
const VERSION: u32 = 2;
const HEADER_BYTES: usize = 32;
const SEGMENT_BYTES: usize = 24;
pub const FILE_NAME: &str = "index.hint";

/// Writes the checkpoint atomically (temporary file, fsync, rename).
pub fn write(store: &Store) -> Result<()> {
    let dir = &store.log.dir;
    let tmp = dir.join(format!("{FILE_NAME}.tmp"));
    let segments: Vec<_> = store.log.segments.iter().flatten().collect();
    let file = File::create(&tmp).map_err(Error::io(format!("create {}", tmp.display())))?;
    let mut out = CrcWriter { inner: BufWriter::with_capacity(1 << 20, file), crc: crc32fast::Hasher::new() };
    let io = Error::io(format!("write {}", tmp.display()));
    let mut header = [0u8; HEADER_BYTES];
    header[..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    header[12..16].copy_from_slice(&(segments.len() as u32).to_le_bytes());
    header[16..24].copy_from_slice(&(store.index.len() as u64).to_le_bytes());
    header[24..32].copy_from_slice(&store.index_seed.to_le_bytes());
    let mut result = out.write_all(&header);
    for seg in &segments {
        let mut b = [0u8; SEGMENT_BYTES];
        b[..4].copy_from_slice(&seg.header.slot.to_le_bytes());
        b[4..8].copy_from_slice(&seg.header.sealed_end.to_le_bytes());
        b[8..16].copy_from_slice(&seg.header.seq.to_le_bytes());
        b[16..24].copy_from_slice(&seg.live_bytes.to_le_bytes());
        result = result.and_then(|()| out.write_all(&b));
    }
    store.index.scan_from(0, |hash, loc| {
        let e = (u64::from(hash) << 32) | u64::from(loc);
        result = std::mem::replace(&mut result, Ok(())).and_then(|()| out.write_all(&e.to_le_bytes()));
        ControlFlow::Continue(())
    });
    result.map_err(io)?;
    let crc = out.crc.clone().finalize();
    let mut file = out.inner.into_inner().map_err(|e| e.into_error()).map_err(Error::io("flush hint"))?;
    file.write_all(&crc.to_le_bytes()).and_then(|()| file.sync_all()).map_err(Error::io("sync hint"))?;
    fs::rename(&tmp, dir.join(FILE_NAME)).map_err(Error::io("rename hint"))?;
    crate::segment::sync_dir(dir)
}

struct CrcWriter<W> {
    inner: W,
    crc: crc32fast::Hasher,
}

impl<W: Write> Write for CrcWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.crc.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Loads the checkpoint if it exists and matches the log exactly, setting
/// each segment's live bytes. Returns why it was not used otherwise.
pub fn load(dir: &Path, log: &mut Log) -> Result<(Index, u64), String> {
    let path = dir.join(FILE_NAME);
    let bytes = fs::read(&path).map_err(|e| format!("unreadable: {e}"))?;
    let (body, crc) = bytes.split_at_checked(bytes.len().saturating_sub(4)).ok_or("too short")?;
    let stored = u32::from_le_bytes(crc.try_into().map_err(|_| "too short")?);
    if crc32fast::hash(body) != stored || body.len() < HEADER_BYTES || body[..8] != MAGIC {
        return Err("damaged (checksum or magic)".into());
    }
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let le64 = |b: &[u8], at: usize| u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32);
    if le32(body, 8) != VERSION {
        return Err("other version".into());
    }
    let segments = le32(body, 12) as usize;
    let entries = usize::try_from(le64(body, 16)).map_err(|_| "entry count")?;
    let seed = le64(body, 24);
    let expected = HEADER_BYTES + segments * SEGMENT_BYTES + entries * 8;
    if body.len() != expected {
        return Err(format!("size {} does not match its counts ({expected})", body.len()));
    }
    if segments != log.segments.iter().flatten().count() {
        return Err("segment count differs from the directory".into());
    }
    let mut live = Vec::with_capacity(segments);
    for i in 0..segments {
        let at = HEADER_BYTES + i * SEGMENT_BYTES;
        let (slot, sealed_end, seq, live_bytes) =
            (le32(body, at), le32(body, at + 4), le64(body, at + 8), le64(body, at + 16));
        match log.segment(slot) {
            Some(seg) if seg.header.seq == seq && seg.header.sealed && seg.header.sealed_end == sealed_end => {}
            _ => return Err(format!("segment slot {slot} differs from the checkpoint")),
        }
        live.push((slot, live_bytes));
    }
    let mut index = Index::with_capacity(entries);
    let table = &body[HEADER_BYTES + segments * SEGMENT_BYTES..];
    for chunk in table.chunks_exact(8) {
        let e = u64::from_le_bytes(chunk.try_into().map_err(|_| "entry")?);
        let (hash, loc) = ((e >> 32) as u32, e as u32);
        let (slot, offset) = log.split(loc);
        if log.segment(slot).is_none_or(|s| offset >= s.end) {
            return Err(format!("entry points outside the log (slot {slot}, offset {offset})"));
        }
        index.push_sorted(hash, loc);
    }
    for (slot, live_bytes) in live {
        if let Some(seg) = log.segment_mut(slot) {
            seg.live_bytes = live_bytes;
        }
    }
    Ok((index, seed))
}
