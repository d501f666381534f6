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
}
