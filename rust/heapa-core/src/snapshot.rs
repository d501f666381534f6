//! Versioned, checksummed binary snapshots of a whole pool.
//!
//! Layout (all integers little-endian):
//!
//! ```text
//! magic    8 bytes  "HEAPASNP"
//! version  u32      FORMAT_VERSION
//! flags    u32      0 (reserved)
//! body_len u64
//! body     body_len bytes: sections, each `tag [u8; 4] | len u64 | data`,
//!          in this order: CONF STAT SLOT PAYL FREE LOG_ PEND INBX COOL GRPS
//!          (version 1 files end at INBX, versions 2–3 at COOL)
//! checksum u64      xxh3-64 of everything before it (header and body)
//! ```
//!
//! * `CONF` (version 3): `count u32`, then per field `name | tag u8 | value`
//!   (a name is `len u8 | UTF-8`; tags 0 None, 1 bool u8, 2 int i64,
//!   3 float f64, 4 name, 5 pair f64 f64), written from the config's own
//!   table, so a field the file lacks takes its default and reordering the
//!   struct changes nothing. Versions 1–2: fixed field order.
//! * `STAT` (version 3): `count u32`, then per scalar `name | u64`
//!   (counters, next sequence number, in-flight count, step, grave
//!   generation, inbox counters), then the RNG state (4 × u64). Versions
//!   1–2: the same scalars by position.
//! * `SLOT`: slot count, then one raw column after another (gen u32, seq u64,
//!   state u8, flags u8, score f32, visits u32, rollouts u32, correct u32,
//!   last_step u32, parent u64, difficulty f32).
//! * `PAYL`: per slot `len u32 | bytes` (`u32::MAX` for a free slot).
//! * `FREE`: free-slot stack (u32); `LOG_`: insertion log (u64 ids).
//! * `PEND`: delayed inbox items `ready u64 | item`; `INBX`: queued inbox
//!   items. An item is `len u32 | payload | parent u64 | difficulty f64`
//!   (`u64::MAX` / NaN when absent).
//! * `COOL` (version ≥ 2): prompts sitting out `revisit_fraction`, as
//!   `count u64` then `ready u64 | seq u64 | slot u32` each, in order.
//! * `GRPS` (version ≥ 4): groups and priors. `count u32`, per group its key
//!   (`len u32 | UTF-8`) and evidence (`n f64 | sum f64 | step u64`), the
//!   pool-wide evidence, `count u32` prior bands as `queue id u64 | evidence`,
//!   then `u8` 0/1 and, if 1, the group column (u32 per
//!   slot), then the same for the prior-confidence column (f32 per slot).
//!   A prior itself is the score of a cold slot flagged `HAS_PRIOR`.
//!
//! Ordered sets, the draw index and counts are rebuilt from the columns on
//! load, after every invariant has been checked, so a loaded pool behaves
//! exactly like the saved one. Loading never panics on bad input and never
//! returns a partially built pool.

use std::collections::{BTreeSet, VecDeque};
use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use crate::cold::BANDS;
use crate::config::{
    check_difficulty, Boundary, Config, Direction, Eviction, RefreshMode, Reinsert, Sampling,
    Scope, Stat, Value,
};
use crate::digest::Stack;
use crate::error::{CoreError, Result};
use crate::groups::{Evidence, Groups};
use crate::inbox::InboxItem;
use crate::keys::{key_slot, Key};
use crate::partitions::Partitions;
use crate::payload::{self, Arena};
use crate::pool::{Counters, Pool};
use crate::rng::Rng;
use crate::slots::{Slots, State, ESTIMATED, HAS_PRIOR, HAS_SCORE, NO_GROUP, NO_PARENT, NO_STEP};

pub const MAGIC: &[u8; 8] = b"HEAPASNP";
pub const FORMAT_VERSION: u32 = 4;
const SECTIONS: [&[u8; 4]; 10] = [
    b"CONF", b"STAT", b"SLOT", b"PAYL", b"FREE", b"LOG_", b"PEND", b"INBX", b"COOL", b"GRPS",
];
/// How many of `SECTIONS` each format version has (index = version).
const SECTION_COUNT: [usize; 5] = [0, 8, 9, 9, 10];
const ABSENT: u32 = u32::MAX;
/// Header bytes: magic, version, flags, body length.
const HEADER: usize = 24;

fn corrupt(msg: impl Into<String>) -> CoreError {
    CoreError::Snapshot(msg.into())
}

// ---- writing ------------------------------------------------------------------

/// Byte sink: a buffer for snapshots, a hasher for fingerprints.
pub(crate) trait Sink {
    fn put(&mut self, b: &[u8]);
    fn u8(&mut self, v: u8) {
        self.put(&[v]);
    }
    fn u32(&mut self, v: u32) {
        self.put(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.put(&v.to_le_bytes());
    }
    fn f64(&mut self, v: f64) {
        self.put(&v.to_le_bytes());
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, b: &[u8]) {
        self.extend_from_slice(b);
    }
}

impl Sink for Xxh3 {
    fn put(&mut self, b: &[u8]) {
        self.update(b);
    }
}

/// `CONF` (version 3): every field by name, from the config's own table.
fn put_config(w: &mut impl Sink, c: &Config) {
    let values = c.values();
    w.u32(values.len() as u32);
    for (name, v) in values {
        put_name(w, name);
        match v {
            Value::None => w.u8(0),
            Value::Bool(b) => {
                w.u8(1);
                w.u8(u8::from(b));
            }
            Value::Int(i) => {
                w.u8(2);
                w.put(&i.to_le_bytes());
            }
            Value::Float(x) => {
                w.u8(3);
                w.f64(x);
            }
            Value::Name(n) => {
                w.u8(4);
                put_name(w, &n);
            }
            Value::Pair(a, b) => {
                w.u8(5);
                w.f64(a);
                w.f64(b);
            }
        }
    }
}

fn put_name(w: &mut impl Sink, name: &str) {
    w.u8(name.len() as u8);
    w.put(name.as_bytes());
}

/// `STAT` (version 3): the pool's scalars by name, then the RNG state.
fn put_scalars(w: &mut impl Sink, sc: &Scalars, rng: [u64; 4]) {
    let values = sc.values();
    w.u32(values.len() as u32);
    for (name, v) in values {
        put_name(w, name);
        w.u64(v);
    }
    for v in rng {
        w.u64(v);
    }
}

/// The scalars a snapshot stores beside the columns.
#[derive(Default)]
struct Scalars {
    counters: Counters,
    next_seq: u64,
    in_flight: u64,
    step: u64,
    grave_gen: u64,
    inbox_pushed: u64,
    inbox_rejected: u64,
}

/// One list of the scalars' names, in the order of versions 1 and 2 (which
/// stored them unnamed, by position).
macro_rules! scalar_table {
    ($($name:ident: $($path:ident).+),+ $(,)?) => {
        impl Scalars {
            const NAMES: &'static [&'static str] = &[$(stringify!($name)),+];

            fn values(&self) -> Vec<(&'static str, u64)> {
                vec![$((stringify!($name), self.$($path).+)),+]
            }

            /// Sets one scalar by name; false for a name this version does not know.
            fn set(&mut self, name: &str, v: u64) -> bool {
                match name {
                    $(stringify!($name) => self.$($path).+ = v,)+
                    _ => return false,
                }
                true
            }
        }
    };
}

scalar_table! {
    added: counters.added,
    sampled: counters.sampled,
    reported: counters.reported,
    released: counters.released,
    evicted: counters.evicted,
    dropped: counters.dropped,
    reinsertions: counters.reinsertions,
    refreshes: counters.refreshes,
    estimated: counters.estimated,
    orphaned: counters.orphaned,
    drained: counters.drained,
    next_seq: next_seq,
    in_flight: in_flight,
    step: step,
    grave_gen: grave_gen,
    inbox_pushed: inbox_pushed,
    inbox_rejected: inbox_rejected,
}

fn put_item(w: &mut impl Sink, it: &InboxItem) {
    w.u32(it.payload.len() as u32);
    w.put(&it.payload);
    w.u64(it.parent.unwrap_or(u64::MAX));
    w.f64(it.difficulty.unwrap_or(f64::NAN));
}

impl Pool {
    fn scalars(&self, inbox_counts: (u64, u64)) -> Scalars {
        Scalars {
            counters: self.counters.clone(),
            next_seq: self.next_seq,
            in_flight: self.parts.in_flight,
            step: self.step,
            grave_gen: self.grave_gen,
            inbox_pushed: inbox_counts.0,
            inbox_rejected: inbox_counts.1,
        }
    }

    fn put_state(&self, w: &mut impl Sink, inbox_counts: (u64, u64)) {
        put_scalars(w, &self.scalars(inbox_counts), self.rng.state());
    }

    fn put_slots(&self, w: &mut impl Sink) {
        let s = &self.slots;
        w.u64(s.len() as u64);
        w.put(bytemuck::cast_slice(&s.gen));
        w.put(bytemuck::cast_slice(&s.seq));
        w.put(&s.state);
        w.put(&s.flags);
        w.put(bytemuck::cast_slice(&s.score));
        w.put(bytemuck::cast_slice(&s.visits));
        w.put(bytemuck::cast_slice(&s.rollouts));
        w.put(bytemuck::cast_slice(&s.correct));
        w.put(bytemuck::cast_slice(&s.last_step));
        w.put(bytemuck::cast_slice(&s.parent));
        w.put(bytemuck::cast_slice(&s.difficulty));
    }

    fn put_groups(&self, w: &mut impl Sink) {
        let g = &self.groups;
        let evidence = |w: &mut dyn FnMut(&[u8]), e: &Evidence| {
            w(&e.n.to_le_bytes());
            w(&e.sum.to_le_bytes());
            w(&e.step.to_le_bytes());
        };
        w.u32(g.names.len() as u32);
        for (name, e) in g.names.iter().zip(&g.evidence) {
            w.u32(name.len() as u32);
            w.put(name.as_bytes());
            evidence(&mut |b| w.put(b), e);
        }
        evidence(&mut |b| w.put(b), &g.pool);
        w.u32(g.bands.len() as u32);
        for (&id, e) in &g.bands {
            w.u64(id);
            evidence(&mut |b| w.put(b), e);
        }
        for col in [
            bytemuck::cast_slice::<u32, u8>(&self.slots.group),
            bytemuck::cast_slice::<f32, u8>(&self.slots.confidence),
        ] {
            w.u8(u8::from(!col.is_empty()));
            w.put(col);
        }
    }

    fn put_payloads(&self, w: &mut impl Sink) {
        for slot in 0..self.slots.len() {
            match self.slots.payload.get(slot) {
                Some(b) => {
                    w.u32(b.len() as u32);
                    w.put(b);
                }
                None => w.u32(ABSENT),
            }
        }
    }

    /// Writes one section through `f`, with its tag and length.
    fn section(out: &mut Vec<u8>, tag: &[u8; 4], f: impl FnOnce(&mut Vec<u8>)) {
        out.extend_from_slice(tag);
        let at = out.len();
        out.extend_from_slice(&0u64.to_le_bytes());
        f(out);
        let len = (out.len() - at - 8) as u64;
        out[at..at + 8].copy_from_slice(&len.to_le_bytes());
    }

    /// Serialises the whole pool, with the inbox's queued items (producers
    /// may keep pushing meanwhile; what they push after the read is not in
    /// this snapshot and stays queued).
    pub fn to_bytes(&self) -> Vec<u8> {
        let counts = (self.inbox.pushed(), self.inbox.rejected());
        let queued = self.inbox.queued();
        // Header, body and checksum in one buffer (no second copy of a
        // snapshot that can be hundreds of MB); the header is filled in last.
        let cap = HEADER + 64 + self.slots.len() * 64 + self.payload_bytes() as usize + 8;
        let mut body = Vec::with_capacity(cap);
        body.resize(HEADER, 0);
        Self::section(&mut body, SECTIONS[0], |w| put_config(w, &self.cfg));
        Self::section(&mut body, SECTIONS[1], |w| self.put_state(w, counts));
        Self::section(&mut body, SECTIONS[2], |w| self.put_slots(w));
        Self::section(&mut body, SECTIONS[3], |w| self.put_payloads(w));
        Self::section(&mut body, SECTIONS[4], |w| {
            w.put(bytemuck::cast_slice(&self.free))
        });
        Self::section(&mut body, SECTIONS[5], |w| {
            w.put(bytemuck::cast_slice(&self.log))
        });
        Self::section(&mut body, SECTIONS[6], |w| {
            w.u64(self.pending.len() as u64);
            for (ready, it) in &self.pending {
                w.u64(*ready);
                put_item(w, it);
            }
        });
        Self::section(&mut body, SECTIONS[7], |w| {
            w.u64(queued.len() as u64);
            for it in &queued {
                put_item(w, it);
            }
        });
        Self::section(&mut body, SECTIONS[8], |w| self.put_cooling(w));
        Self::section(&mut body, SECTIONS[9], |w| self.put_groups(w));
        let body_len = (body.len() - HEADER) as u64;
        body[..8].copy_from_slice(MAGIC);
        body[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        body[12..16].copy_from_slice(&0u32.to_le_bytes());
        body[16..24].copy_from_slice(&body_len.to_le_bytes());
        let sum = xxh3_64(&body);
        body.extend_from_slice(&sum.to_le_bytes());
        body
    }

    /// Writes a snapshot atomically: temporary file in the same directory,
    /// fsync, rename over `path`, fsync the directory. A crash leaves either
    /// the old file or the new one, never a torn one; the temporary files a
    /// killed save leaves behind are removed by the next save of the same
    /// path. The replaced snapshot's permissions are kept.
    pub fn save(&self, path: &Path) -> Result<()> {
        let bytes = self.to_bytes();
        let io = |e: std::io::Error, what: &str| {
            CoreError::Io(format!("{what} {}: {e}", path.display()))
        };
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = path
            .file_name()
            .ok_or_else(|| CoreError::Io(format!("not a file path: {}", path.display())))?
            .to_string_lossy()
            .into_owned();
        let temp = TempFile::new(dir, &name);
        remove_stale_temps(dir, &name);
        let write = || -> std::io::Result<()> {
            let mut f = File::create(&temp.path)?;
            f.write_all(&bytes)?;
            if let Ok(old) = fs::metadata(path) {
                f.set_permissions(old.permissions())?;
            }
            f.sync_all()?;
            Ok(())
        };
        write().map_err(|e| io(e, "cannot write snapshot"))?;
        fs::rename(&temp.path, path).map_err(|e| io(e, "cannot move snapshot into place at"))?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    pub fn load(path: &Path) -> Result<Pool> {
        let bytes = fs::read(path)
            .map_err(|e| CoreError::Io(format!("cannot read snapshot {}: {e}", path.display())))?;
        Pool::from_bytes(&bytes)
    }

    /// Cheap-to-compare digest of the whole state: the data a snapshot holds,
    /// minus the inbox's queued items (producers add them concurrently, and
    /// saving never changes the fingerprint). Slots, the free list and the
    /// insertion log enter through running digests kept up to date by every
    /// write, so the cost is that of the delayed and cooling prompts only.
    pub fn fingerprint(&self) -> u64 {
        let mut h = Xxh3::new();
        put_config(&mut h, &self.cfg);
        self.put_state(&mut h, (0, 0));
        h.u64(self.slots.len() as u64);
        h.u64(self.slots.digest);
        h.u64(self.free.digest());
        h.u64(self.log.digest());
        for (ready, it) in &self.pending {
            h.u64(*ready);
            put_item(&mut h, it);
        }
        self.put_cooling(&mut h);
        h.u64(self.groups.digest());
        h.digest()
    }

    /// The live cooling entries (stale ones are an implementation detail).
    fn put_cooling(&self, w: &mut impl Sink) {
        let live: Vec<_> = self
            .parts
            .cooling
            .iter()
            .filter(|&&(_, seq, slot)| Partitions::cooling_entry_live(&self.slots, seq, slot))
            .collect();
        w.u64(live.len() as u64);
        for &&(ready, seq, slot) in &live {
            w.u64(ready);
            w.u64(seq);
            w.u32(slot);
        }
    }

    // ---- reading ------------------------------------------------------------------

    pub fn from_bytes(buf: &[u8]) -> Result<Pool> {
        if buf.len() < 24 || &buf[..8] != MAGIC {
            return Err(corrupt("not a heapa snapshot (bad magic bytes)"));
        }
        let version = u32::from_le_bytes(buf[8..12].try_into().expect("4 bytes"));
        if version > FORMAT_VERSION {
            return Err(corrupt(format!(
                "snapshot format version {version} is newer than this heapa supports ({FORMAT_VERSION}); upgrade heapa"
            )));
        }
        if version == 0 {
            return Err(corrupt("snapshot format version 0 is invalid"));
        }
        let body_len = u64::from_le_bytes(buf[16..24].try_into().expect("8 bytes"));
        let expected = 24u64.checked_add(body_len).and_then(|n| n.checked_add(8));
        if expected != Some(buf.len() as u64) {
            return Err(corrupt(format!(
                "snapshot is truncated or has trailing bytes: header says {} body bytes, file has {}",
                body_len,
                buf.len().saturating_sub(32)
            )));
        }
        let body = &buf[24..buf.len() - 8];
        let sum = u64::from_le_bytes(buf[buf.len() - 8..].try_into().expect("8 bytes"));
        if xxh3_64(&buf[..buf.len() - 8]) != sum {
            return Err(corrupt("snapshot checksum mismatch: the file is corrupted"));
        }
        let flags = u32::from_le_bytes(buf[12..16].try_into().expect("4 bytes"));
        if flags != 0 {
            return Err(corrupt(format!(
                "snapshot header has unknown flags {flags:#x} (reserved, must be 0)"
            )));
        }

        decode_body(body, version)
    }
}

/// Saves in progress in this process (their temporary files are not stale).
static SAVING: std::sync::Mutex<Vec<u64>> = std::sync::Mutex::new(Vec::new());

/// A save's temporary file, `.NAME.tmp-PID-N`: unique per process and call,
/// so concurrent saves never share one. Removed on drop unless renamed.
struct TempFile {
    path: std::path::PathBuf,
    n: u64,
}

impl TempFile {
    fn new(dir: &Path, name: &str) -> TempFile {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        saving().push(n);
        let path = dir.join(format!(".{name}.tmp-{}-{n}", std::process::id()));
        TempFile { path, n }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path); // gone already after a rename
        saving().retain(|&x| x != self.n);
    }
}

fn saving() -> std::sync::MutexGuard<'static, Vec<u64>> {
    SAVING.lock().unwrap_or_else(|e| e.into_inner())
}

/// Removes the temporary files of earlier saves of `name` in `dir` that no
/// writer owns any more: this process's that no save in progress is writing,
/// and those of processes that have exited (known where `/proc` exists;
/// elsewhere other processes' files are left alone).
fn remove_stale_temps(dir: &Path, name: &str) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let prefix = format!(".{name}.tmp-");
    let me = std::process::id();
    let proc = Path::new("/proc");
    for e in entries.flatten() {
        let file = e.file_name();
        let Some((pid, n)) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(p, n)| Some((p.parse::<u32>().ok()?, n.parse::<u64>().ok()?)))
        else {
            continue;
        };
        let stale = if pid == me {
            !saving().contains(&n)
        } else {
            proc.join("self").exists() && !proc.join(pid.to_string()).exists()
        };
        if stale {
            let _ = fs::remove_file(e.path());
        }
    }
}

// ---- reading ------------------------------------------------------------------

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(e) => {
                let s = &self.buf[self.pos..e];
                self.pos = e;
                Ok(s)
            }
            None => Err(corrupt(format!(
                "snapshot section {} is truncated",
                self.what
            ))),
        }
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn f64(&mut self) -> Result<f64> {
        Ok(f64::from_le_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn col<T: bytemuck::Pod>(&mut self, n: usize) -> Result<Vec<T>> {
        let bytes = n.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| {
            corrupt(format!(
                "snapshot section {} has an impossible length",
                self.what
            ))
        })?;
        Ok(bytemuck::pod_collect_to_vec(self.take(bytes)?))
    }
    /// A short UTF-8 name: `len u8 | bytes`.
    fn name(&mut self) -> Result<String> {
        let n = self.u8()? as usize;
        let what = self.what;
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| {
            corrupt(format!(
                "snapshot section {what} has a name that is not UTF-8"
            ))
        })
    }

    fn done(&self) -> Result<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(corrupt(format!(
                "snapshot section {} has {} unexpected trailing bytes",
                self.what,
                self.buf.len() - self.pos
            )))
        }
    }
    fn code<T>(&mut self, parse: fn(u8) -> Option<T>, field: &str) -> Result<T> {
        let c = self.u8()?;
        parse(c).ok_or_else(|| corrupt(format!("snapshot config has an invalid {field} code {c}")))
    }
    fn item(&mut self) -> Result<InboxItem> {
        let len = self.u32()? as usize;
        let payload: Box<[u8]> = self.take(len)?.into();
        if !payload::is_valid(&payload) {
            return Err(corrupt(format!(
                "snapshot section {} holds a malformed inbox payload",
                self.what
            )));
        }
        let parent = self.u64()?;
        let d = self.f64()?;
        if !d.is_nan() {
            check_difficulty(0, d).map_err(|_| {
                corrupt(format!(
                    "snapshot section {} holds an inbox item with difficulty {d}",
                    self.what
                ))
            })?;
        }
        Ok(InboxItem {
            payload,
            parent: (parent != u64::MAX).then_some(parent),
            difficulty: (!d.is_nan()).then_some(d),
        })
    }
}

/// Reads `GRPS`: the group table (returned) and the lazy columns (into `slots`).
fn read_groups(slots: &mut Slots, n: usize, sec: &[u8]) -> Result<Groups> {
    let mut r = Reader {
        buf: sec,
        pos: 0,
        what: "GRPS",
    };
    let evidence = |r: &mut Reader| -> Result<Evidence> {
        let e = Evidence {
            n: r.f64()?,
            sum: r.f64()?,
            step: r.u64()?,
        };
        if !(e.n.is_finite() && e.sum.is_finite() && e.sum >= 0.0 && e.sum <= e.n * (1.0 + 1e-9)) {
            return Err(corrupt("group evidence out of range"));
        }
        Ok(e)
    };
    let count = r.u32()? as usize;
    let (mut names, mut stats) = (Vec::new(), Vec::new());
    let mut seen = std::collections::HashSet::new();
    for _ in 0..count {
        let len = r.u32()? as usize;
        let name = std::str::from_utf8(r.take(len)?)
            .map_err(|_| corrupt("group key is not UTF-8"))?
            .to_owned();
        if !seen.insert(name.clone()) {
            return Err(corrupt(format!("group key {name:?} stored twice")));
        }
        names.push(name);
        stats.push(evidence(&mut r)?);
    }
    let pool = evidence(&mut r)?;
    let mut bands = std::collections::BTreeMap::new();
    for _ in 0..r.u32()? {
        let id = r.u64()?;
        let (g, band) = ((id >> 8) as u32, id & 0xFF);
        if id >> 40 != 0 || !(1..=BANDS).contains(&band) || g != NO_GROUP && g as usize >= count {
            return Err(corrupt(format!(
                "prior band {id:#x} names no group and band"
            )));
        }
        if bands.insert(id, evidence(&mut r)?).is_some() {
            return Err(corrupt(format!("prior band {id:#x} stored twice")));
        }
    }
    if r.u8()? == 1 {
        slots.group = r.col(n)?;
    }
    if r.u8()? == 1 {
        slots.confidence = r.col(n)?;
        if slots
            .confidence
            .iter()
            .any(|c| !(c.is_finite() && *c >= 0.0))
        {
            return Err(corrupt("prior confidence out of range"));
        }
    }
    r.done()?;
    Ok(Groups::from_parts(names, stats, pool, bands))
}

fn split_sections(body: &[u8], version: u32) -> Result<Vec<&[u8]>> {
    let mut r = Reader {
        buf: body,
        pos: 0,
        what: "table",
    };
    let count = SECTION_COUNT[version as usize];
    let mut out = Vec::with_capacity(count);
    for &tag in &SECTIONS[..count] {
        let t = r.take(4)?;
        if t != tag {
            return Err(corrupt(format!(
                "snapshot section {:?} found where {:?} was expected",
                String::from_utf8_lossy(t),
                String::from_utf8_lossy(tag)
            )));
        }
        let len =
            usize::try_from(r.u64()?).map_err(|_| corrupt("snapshot section length overflows"))?;
        out.push(r.take(len)?);
    }
    r.done()?;
    Ok(out)
}

fn read_config(r: &mut Reader, version: u32) -> Result<Config> {
    let c = if version >= 3 {
        read_named_config(r)?
    } else {
        read_legacy_config(r, version)?
    };
    r.done()?;
    c.validate()
        .map_err(|e| corrupt(format!("snapshot config is invalid: {e}")))?;
    Ok(c)
}

/// Version 3: named fields; a field the file lacks keeps its default (it
/// is newer than the file), a name this version does not know is an error.
fn read_named_config(r: &mut Reader) -> Result<Config> {
    let mut c = Config::default();
    let n = r.u32()?;
    for _ in 0..n {
        let name = r.name()?;
        let v = match r.u8()? {
            0 => Value::None,
            1 => Value::Bool(match r.u8()? {
                0 => false,
                1 => true,
                x => return Err(corrupt(format!("snapshot config {name}: invalid bool {x}"))),
            }),
            2 => Value::Int(i64::from_le_bytes(r.take(8)?.try_into().expect("8"))),
            3 => Value::Float(r.f64()?),
            4 => Value::Name(r.name()?),
            5 => Value::Pair(r.f64()?, r.f64()?),
            t => {
                return Err(corrupt(format!(
                    "snapshot config {name}: invalid value tag {t}"
                )))
            }
        };
        c.set(&name, v)
            .map_err(|e| corrupt(format!("snapshot config: {e}")))?;
    }
    Ok(c)
}

/// Versions 1 and 2: fixed field order.
fn read_legacy_config(r: &mut Reader, version: u32) -> Result<Config> {
    let mut c = Config {
        capacity: r.u64()?,
        boundary: r.code(Boundary::from_code, "boundary")?,
        low_fraction: r.f64()?,
        target: r.f64()?,
        sampling: r.code(Sampling::from_code, "sampling")?,
        eviction: r.code(Eviction::from_code, "eviction")?,
        reward_range: (r.f64()?, r.f64()?),
        stat: r.code(Stat::from_code, "stat")?,
        ema_alpha: r.f64()?,
        reinsert: r.code(Reinsert::from_code, "reinsert")?,
        drop_solved: r.u8()? != 0,
        priority_epsilon: r.f64()?,
        priority_temperature: r.f64()?,
        ..Config::default()
    };
    let on = match r.u8()? {
        0 => false,
        1 => true,
        x => {
            return Err(corrupt(format!(
                "snapshot config has an invalid refresh flag {x}"
            )))
        }
    };
    let mode = r.code(RefreshMode::from_code, "refresh mode")?;
    c.refresh = on.then_some(mode);
    c.refresh_temperature = r.f64()?;
    c.refresh_blend = r.f64()?;
    c.refresh_direction = r.code(Direction::from_code, "refresh direction")?;
    c.refresh_scope = r.code(Scope::from_code, "refresh scope")?;
    c.inbox_capacity = r.u64()?;
    c.delay_steps = r.u64()?;
    c.seed = r.u64()?;
    if version >= 2 {
        c.revisit_fraction = r.f64()?;
    }
    Ok(c)
}

/// `STAT`: named scalars (version 3) or the same scalars by position.
fn read_scalars(r: &mut Reader, version: u32) -> Result<(Scalars, [u64; 4])> {
    let mut sc = Scalars::default();
    if version >= 3 {
        let n = r.u32()?;
        for _ in 0..n {
            let name = r.name()?;
            let v = r.u64()?;
            if !sc.set(&name, v) {
                return Err(corrupt(format!(
                    "snapshot section STAT has an unknown entry {name:?}"
                )));
            }
        }
    } else {
        for name in Scalars::NAMES {
            sc.set(name, r.u64()?);
        }
    }
    let rng = [r.u64()?, r.u64()?, r.u64()?, r.u64()?];
    r.done()?;
    Ok((sc, rng))
}

fn decode_body(body: &[u8], version: u32) -> Result<Pool> {
    let sec = split_sections(body, version)?;
    let cfg = read_config(
        &mut Reader {
            buf: sec[0],
            pos: 0,
            what: "CONF",
        },
        version,
    )?;
    let mut pool = Pool::new(cfg)?;

    let mut r = Reader {
        buf: sec[1],
        pos: 0,
        what: "STAT",
    };
    let (sc, rng) = read_scalars(&mut r, version)?;
    pool.counters = sc.counters;
    let in_flight = sc.in_flight;
    (pool.next_seq, pool.step, pool.grave_gen) = (sc.next_seq, sc.step, sc.grave_gen);
    let inbox_counts = (sc.inbox_pushed, sc.inbox_rejected);
    pool.rng = Rng::from_state(rng)
        .ok_or_else(|| corrupt("snapshot RNG state is all zero, which no pool can reach"))?;

    let mut r = Reader {
        buf: sec[2],
        pos: 0,
        what: "SLOT",
    };
    let n = usize::try_from(r.u64()?).map_err(|_| corrupt("slot count overflows"))?;
    if n as u64 > pool.cfg.capacity {
        return Err(corrupt(format!(
            "snapshot holds {n} slots, more than its capacity {}",
            pool.cfg.capacity
        )));
    }
    let mut slots = Slots {
        gen: r.col(n)?,
        seq: r.col(n)?,
        state: r.col(n)?,
        flags: r.col(n)?,
        score: r.col(n)?,
        visits: r.col(n)?,
        rollouts: r.col(n)?,
        correct: r.col(n)?,
        last_step: r.col(n)?,
        parent: r.col(n)?,
        difficulty: r.col(n)?,
        group: Vec::new(),
        confidence: Vec::new(),
        payload: Arena::with_capacity(n, sec[3].len()),
        digest: 0,
    };
    r.done()?;
    if version >= 4 {
        pool.groups = read_groups(&mut slots, n, sec[9])?;
    }

    let mut r = Reader {
        buf: sec[3],
        pos: 0,
        what: "PAYL",
    };
    for i in 0..n {
        let len = r.u32()?;
        let free = slots.state[i] == State::Free as u8;
        if len == ABSENT {
            if !free {
                return Err(corrupt(format!("slot {i} is held but has no payload")));
            }
            slots.payload.push_empty();
        } else {
            let b = r.take(len as usize)?;
            if free || !payload::is_valid(b) {
                return Err(corrupt(format!(
                    "slot {i} has an unexpected or malformed payload"
                )));
            }
            slots.payload.push_empty();
            slots.payload.set(i, b);
        }
    }
    r.done()?;

    let free_bytes = sec[4];
    if free_bytes.len() % 4 != 0 {
        return Err(corrupt("snapshot section FREE has a ragged length"));
    }
    let free: Vec<u32> = bytemuck::pod_collect_to_vec(free_bytes);
    let log_bytes = sec[5];
    if log_bytes.len() % 8 != 0 {
        return Err(corrupt("snapshot section LOG_ has a ragged length"));
    }
    let log: Vec<u64> = bytemuck::pod_collect_to_vec(log_bytes);

    let mut r = Reader {
        buf: sec[6],
        pos: 0,
        what: "PEND",
    };
    let k = r.u64()?;
    let mut pending = VecDeque::new();
    for _ in 0..k {
        let ready = r.u64()?;
        pending.push_back((ready, r.item()?));
    }
    r.done()?;
    let mut r = Reader {
        buf: sec[7],
        pos: 0,
        what: "INBX",
    };
    let k = r.u64()?;
    if k > pool.cfg.inbox_capacity {
        return Err(corrupt(format!(
            "snapshot holds {k} queued inbox items, more than its inbox_capacity {}",
            pool.cfg.inbox_capacity
        )));
    }
    let mut queued = VecDeque::new();
    for _ in 0..k {
        queued.push_back(r.item()?);
    }
    r.done()?;
    let mut cooling = BTreeSet::new();
    if version >= 2 {
        let mut r = Reader {
            buf: sec[8],
            pos: 0,
            what: "COOL",
        };
        let k = r.u64()?;
        for _ in 0..k {
            let entry = (r.u64()?, r.u64()?, r.u32()?);
            if !cooling.insert(entry) {
                return Err(corrupt("snapshot section COOL repeats an entry"));
            }
        }
        r.done()?;
    }

    // Validate the columns, then rebuild the derived structures.
    let mut seen_free = vec![false; n];
    for &f in &free {
        let f = f as usize;
        if f >= n
            || slots.state[f] != State::Free as u8
            || std::mem::replace(&mut seen_free[f], true)
        {
            return Err(corrupt(format!(
                "free list entry {f} is not a unique free slot"
            )));
        }
    }
    let mut flights = 0u64;
    #[allow(clippy::needless_range_loop)] // several columns indexed together
    for i in 0..n {
        let st = State::from_code(slots.state[i]).ok_or_else(|| {
            corrupt(format!(
                "slot {i} has an invalid state code {}",
                slots.state[i]
            ))
        })?;
        if st == State::Free && !seen_free[i] {
            return Err(corrupt(format!(
                "free slot {i} is missing from the free list"
            )));
        }
        let f = slots.flags[i];
        let score = slots.score[i];
        if f & !(HAS_SCORE | ESTIMATED | HAS_PRIOR) != 0
            || !(-1.0..=1.0).contains(&score)
            || !slots.difficulty[i].is_finite()
        {
            return Err(corrupt(format!("slot {i} has invalid flags or values")));
        }
        let prior = f & HAS_PRIOR != 0;
        let conf = slots.confidence_of(i as u32);
        let group = slots.group_of(i as u32);
        if (prior && (f & HAS_SCORE != 0 || !matches!(st, State::Cold | State::InFlight)))
            || (!prior && conf != 0.0 && !(f & HAS_SCORE != 0 && pool.cfg.stat == Stat::Posterior))
            || (st == State::Free && (group != NO_GROUP || f != 0))
            || (group != NO_GROUP && group as usize >= pool.groups.names.len())
        {
            return Err(corrupt(format!(
                "slot {i} has an inconsistent prior, confidence or group"
            )));
        }
        let scored = f & HAS_SCORE != 0;
        let ok = match st {
            State::Cold => !scored,
            State::Hard | State::Easy | State::Archived => scored,
            _ => true,
        };
        if !ok {
            return Err(corrupt(format!(
                "slot {i} is {} but its score flag disagrees",
                st.name()
            )));
        }
        if st == State::InFlight {
            flights += 1;
        }
    }
    if flights != in_flight {
        return Err(corrupt(format!(
            "in-flight count {in_flight} disagrees with the slots ({flights})"
        )));
    }
    pool.slots = slots;
    pool.slots.digest = pool.slots.full_digest();
    pool.free = Stack::from_vec(free);
    // The partitions are rebuilt from the columns through the path a bulk
    // refresh takes, after checking that the stored split is the one the
    // configuration gives.
    let (mut live, mut archived, mut cold) = (Vec::new(), Vec::new(), Vec::new());
    for slot in 0..n as u32 {
        match pool.slots.state(slot) {
            State::Cold => cold.push(slot),
            State::Hard | State::Easy => live.push(pool.slots.key(slot)),
            State::Archived => archived.push(pool.slots.key(slot)),
            State::InFlight | State::Free => {}
        }
    }
    live.sort_unstable();
    archived.sort_unstable();
    let split = pool.parts.split_point(&live);
    let stored_hard = |k: Key| pool.slots.state(key_slot(k)) == State::Hard;
    if live
        .iter()
        .enumerate()
        .any(|(i, &k)| stored_hard(k) != (i < split))
    {
        return Err(corrupt(match pool.cfg.boundary {
            Boundary::Absolute => "hard/easy split does not match the absolute boundary (target)",
            Boundary::Quantile => "hard/easy split does not match the configured quantile",
        }));
    }
    pool.parts.grow(n);
    for slot in cold {
        pool.parts.cold.insert(&pool.slots, slot);
    }
    pool.parts.in_flight = in_flight;
    pool.parts.rebuild(&mut pool.slots, live, archived);
    // Every archived prompt of a revisit-interval pool is cooling, once.
    let mut cooled = vec![false; n];
    for &(_, seq, slot) in &cooling {
        let s = slot as usize;
        if s >= n
            || !Partitions::cooling_entry_live(&pool.slots, seq, slot)
            || std::mem::replace(&mut cooled[s], true)
        {
            return Err(corrupt(format!(
                "cooling entry for slot {slot} does not match an archived prompt"
            )));
        }
    }
    let expected = if pool.cfg.revisit_fraction > 0.0 {
        pool.parts.archive.len()
    } else {
        0
    };
    if cooling.len() != expected {
        return Err(corrupt(format!(
            "{} cooling entries for {expected} cooling prompts",
            cooling.len()
        )));
    }
    pool.parts.cooling = cooling;
    pool.log = Stack::from_vec(log);
    check_history(&pool)?;
    pool.pending = pending;
    pool.inbox.restore(queued, inbox_counts.0, inbox_counts.1);
    Ok(pool)
}

/// Checks what only the engine's history can produce, in one pass over the
/// insertion log and the columns: every id was issued once and in order,
/// parents are older than their children, sequence numbers and steps are in
/// the past, and the counters add up. A checksum guards against accidents;
/// this guards against files written by something else.
fn check_history(pool: &Pool) -> Result<()> {
    let n = pool.slots.len();
    let m = pool.modulus;
    let gen = |id: u64| id / m;
    // Log position of each held slot's current id.
    let mut pos = vec![usize::MAX; n];
    let mut last_gen = vec![u64::MAX; n];
    // Fresh slots are allocated in ascending order, so generation-0 entries ascend.
    let mut next_fresh = 0u64;
    for (i, &id) in pool.log.iter().enumerate() {
        let slot = id % m;
        if slot >= n as u64 {
            return Err(corrupt(format!(
                "insertion log entry {i} (id {id}) refers to slot {slot}, which does not exist"
            )));
        }
        let s = slot as usize;
        let g = gen(id);
        let after_last = last_gen[s] == u64::MAX || g > last_gen[s];
        if !after_last || g > u64::from(pool.slots.gen[s]) {
            return Err(corrupt(format!(
                "insertion log entry {i} (id {id}) repeats, reorders or anticipates the ids of slot {s}"
            )));
        }
        if g == 0 {
            if slot < next_fresh {
                return Err(corrupt(format!(
                    "insertion log is out of order at entry {i} (id {id})"
                )));
            }
            next_fresh = slot + 1;
        }
        last_gen[s] = g;
        if pool.slot_of(id).is_some() {
            pos[s] = i;
        }
    }
    let held = pool.held();
    for s in 0..n {
        if pool.slots.state[s] == State::Free as u8 {
            continue;
        }
        let id = pool.id_of(s as u32);
        if pos[s] == usize::MAX {
            return Err(corrupt(format!(
                "prompt {id} (slot {s}) is missing from the insertion log"
            )));
        }
        if pool.slots.seq[s] >= pool.next_seq {
            return Err(corrupt(format!(
                "prompt {id} has sequence number {} at or after the pool's next ({})",
                pool.slots.seq[s], pool.next_seq
            )));
        }
        let ls = pool.slots.last_step[s];
        if ls != NO_STEP && u64::from(ls) > pool.step {
            return Err(corrupt(format!(
                "prompt {id} was last trained at step {ls}, after the pool's step {}",
                pool.step
            )));
        }
        let p = pool.slots.parent[s];
        if p == NO_PARENT {
            continue;
        }
        let ps = p % m;
        let older = match pool.slot_of(p) {
            Some(q) => pos[q as usize] < pos[s],
            // A parent evicted since: its slot exists and has moved on.
            None => ps < n as u64 && gen(p) < u64::from(pool.slots.gen[ps as usize]),
        };
        if p == id || !older {
            return Err(corrupt(format!(
                "prompt {id} has parent {p}, which is not an older prompt"
            )));
        }
    }
    let c = &pool.counters;
    let in_pool = held
        .checked_add(c.evicted)
        .and_then(|x| x.checked_add(c.dropped));
    let drawn = c
        .reported
        .checked_add(c.released)
        .and_then(|x| x.checked_add(pool.parts.in_flight));
    let bounded = [c.estimated, c.orphaned, c.drained]
        .iter()
        .all(|&x| x <= c.added)
        && pool.grave_gen <= c.evicted;
    if in_pool != Some(c.added) || drawn != Some(c.sampled) || !bounded {
        return Err(corrupt(format!(
            "snapshot counters do not add up (added {}, held {held}, evicted {}, dropped {}; sampled {}, reported {}, released {}, in flight {})",
            c.added, c.evicted, c.dropped, c.sampled, c.reported, c.released, pool.parts.in_flight
        )));
    }
    Ok(())
}
