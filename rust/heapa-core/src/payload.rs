//! Compact per-prompt payload: text, optional answer and optional metadata
//! (JSON bytes) in one allocation: `[len u32][bytes]` three times, with
//! `u32::MAX` as the length of an absent field.

const ABSENT: u32 = u32::MAX;

pub fn encode(text: &str, answer: Option<&str>, metadata: Option<&[u8]>) -> Box<[u8]> {
    let n = 12 + text.len() + answer.map_or(0, str::len) + metadata.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(n);
    for field in [Some(text.as_bytes()), answer.map(str::as_bytes), metadata] {
        match field {
            Some(b) => {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
            None => out.extend_from_slice(&ABSENT.to_le_bytes()),
        }
    }
    out.into_boxed_slice()
}

/// The three fields of an encoded payload, or `None` if the bytes are malformed.
pub fn decode(buf: &[u8]) -> Option<[Option<&[u8]>; 3]> {
    let mut pos = 0usize;
    let mut out = [None; 3];
    for slot in &mut out {
        let len = u32::from_le_bytes(buf.get(pos..pos + 4)?.try_into().ok()?);
        pos += 4;
        if len != ABSENT {
            let end = pos.checked_add(len as usize)?;
            *slot = Some(buf.get(pos..end)?);
            pos = end;
        }
    }
    (pos == buf.len() && out[0].is_some()).then_some(out)
}

/// Checks that a payload decodes and its text fields are UTF-8.
pub fn is_valid(buf: &[u8]) -> bool {
    decode(buf).is_some_and(|[t, a, _]| {
        t.is_some_and(|t| std::str::from_utf8(t).is_ok())
            && a.is_none_or(|a| std::str::from_utf8(a).is_ok())
    })
}

pub fn text(buf: &[u8]) -> &str {
    decode(buf)
        .and_then(|[t, _, _]| t)
        .and_then(|t| std::str::from_utf8(t).ok())
        .unwrap_or("")
}

pub fn answer(buf: &[u8]) -> Option<&str> {
    decode(buf)
        .and_then(|[_, a, _]| a)
        .and_then(|a| std::str::from_utf8(a).ok())
}

pub fn metadata(buf: &[u8]) -> Option<&[u8]> {
    decode(buf).and_then(|[_, _, m]| m)
}

/// Every held prompt's payload in one byte buffer, addressed by slot: one
/// allocation for the whole pool instead of one per prompt (the allocator's
/// per-allocation overhead alone was about 16 B a prompt). A freed payload
/// leaves a hole; once holes outweigh the live bytes the buffer is compacted
/// in slot order, so each freed byte is copied O(1) times on average.
#[derive(Clone, Debug, Default)]
pub struct Arena {
    bytes: Vec<u8>,
    /// Where each slot's payload starts in `bytes`.
    start: Vec<u64>,
    /// Its length; `ABSENT` for a slot without one (free).
    len: Vec<u32>,
    live: u64,
}

impl Arena {
    /// An empty arena with room for `slots` slots and `bytes` payload bytes.
    pub fn with_capacity(slots: usize, bytes: usize) -> Arena {
        Arena {
            bytes: Vec::with_capacity(bytes),
            start: Vec::with_capacity(slots),
            len: Vec::with_capacity(slots),
            live: 0,
        }
    }

    /// Adds a slot without a payload.
    pub fn push_empty(&mut self) {
        self.start.push(0);
        self.len.push(ABSENT);
    }

    pub fn get(&self, slot: usize) -> Option<&[u8]> {
        let len = self.len[slot];
        (len != ABSENT).then(|| {
            let start = self.start[slot] as usize;
            &self.bytes[start..start + len as usize]
        })
    }

    /// Stores a slot's payload (the slot must have none).
    pub fn set(&mut self, slot: usize, payload: &[u8]) {
        debug_assert_eq!(self.len[slot], ABSENT);
        self.start[slot] = self.bytes.len() as u64;
        self.len[slot] = payload.len() as u32;
        self.bytes.extend_from_slice(payload);
        self.live += payload.len() as u64;
    }

    /// Drops a slot's payload.
    pub fn clear(&mut self, slot: usize) {
        let len = std::mem::replace(&mut self.len[slot], ABSENT);
        if len == ABSENT {
            return;
        }
        self.live -= u64::from(len);
        let dead = self.bytes.len() as u64 - self.live;
        if dead > self.live.max(1 << 20) {
            self.compact();
        }
    }

    /// Bytes of live payloads.
    pub fn live_bytes(&self) -> u64 {
        self.live
    }

    /// Bytes of the per-slot index (payload contents excluded).
    pub fn index_bytes(&self) -> usize {
        self.start.capacity() * 8 + self.len.capacity() * 4
    }

    fn compact(&mut self) {
        let mut bytes = Vec::with_capacity(self.live as usize);
        for slot in 0..self.len.len() {
            if let Some(b) = self.get(slot) {
                let at = bytes.len() as u64;
                bytes.extend_from_slice(b);
                self.start[slot] = at;
            }
        }
        self.bytes = bytes;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let b = encode("what is 2+2?", Some("4"), Some(b"{\"k\":1}"));
        assert_eq!(text(&b), "what is 2+2?");
        assert_eq!(answer(&b), Some("4"));
        assert_eq!(metadata(&b), Some(&b"{\"k\":1}"[..]));
        let c = encode("", None, None);
        assert_eq!(text(&c), "");
        assert_eq!(answer(&c), None);
        assert!(is_valid(&c));
        assert!(!is_valid(&c[..5]));
    }

    #[test]
    fn arena_reuses_space_after_compaction() {
        let mut a = Arena::default();
        let big = vec![7u8; 1 << 20];
        for slot in 0..3 {
            a.push_empty();
            a.set(slot, &big);
        }
        a.clear(0);
        a.clear(1); // holes now outweigh the live bytes: compacted
        assert_eq!(a.live_bytes(), 1 << 20);
        assert_eq!(a.bytes.len(), 1 << 20);
        assert_eq!(a.get(2), Some(&big[..]));
        assert_eq!(a.get(0), None);
        a.set(0, b"x");
        assert_eq!(a.get(0), Some(&b"x"[..]));
    }
}
