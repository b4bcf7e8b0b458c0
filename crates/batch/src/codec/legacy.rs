//! Batches written by the original Go MetaStore:
//! `json.Marshal(struct{ IsBatch bool "is_batch"; Proposals []string "proposals" })`.
//!
//! Go only ever produced this exact byte prefix (fields in declaration order,
//! no whitespace), so only data starting with it is read as a legacy batch.
//! A tolerant JSON parse would repeat the seed's ambiguity: a single raw
//! proposal such as `{ "is_batch": true, ... }` was stored verbatim by Go and
//! must decode as itself.

use std::borrow::Cow;

/// What every legacy batch starts with, and what the encoder refuses to store
/// raw (it wraps such a single proposal in a frame instead).
pub(crate) const PREFIX: &[u8] = br#"{"is_batch":true,"proposals":"#;

/// Strings of a legacy batch, or `None` when `data` is not one (then it is a
/// raw proposal). Unescaped strings borrow from `data`.
pub(crate) fn decode(data: &[u8]) -> Option<Vec<Cow<'_, [u8]>>> {
    let mut out = Vec::new();
    scan(data, |s, escaped| {
        out.push(if escaped {
            Cow::Owned(unescape(s))
        } else {
            Cow::Borrowed(s)
        })
    })
    .then_some(out)
}

/// Whether `data` is a legacy batch, without allocating.
pub(crate) fn is_batch(data: &[u8]) -> bool {
    scan(data, |_, _| {})
}

fn skip_ws(b: &[u8], pos: &mut usize) {
    while matches!(b.get(*pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        *pos += 1;
    }
}

/// Validates the whole document and hands each string's raw contents (between
/// the quotes, escapes validated but not yet resolved) to `f`.
fn scan<'a>(data: &'a [u8], mut f: impl FnMut(&'a [u8], bool)) -> bool {
    let Some(b) = data.strip_prefix(PREFIX) else {
        return false;
    };
    let mut pos = 0;
    skip_ws(b, &mut pos);
    if b[pos..].starts_with(b"null") {
        // A nil slice; Go never wrote one for a batch, but it is valid.
        pos += 4;
    } else {
        if b.get(pos) != Some(&b'[') {
            return false;
        }
        pos += 1;
        skip_ws(b, &mut pos);
        if b.get(pos) == Some(&b']') {
            pos += 1;
        } else {
            loop {
                let Some((s, escaped)) = string(b, &mut pos) else {
                    return false;
                };
                f(s, escaped);
                skip_ws(b, &mut pos);
                match b.get(pos) {
                    Some(b',') => {
                        pos += 1;
                        skip_ws(b, &mut pos);
                    }
                    Some(b']') => {
                        pos += 1;
                        break;
                    }
                    _ => return false,
                }
            }
        }
    }
    skip_ws(b, &mut pos);
    if b.get(pos) != Some(&b'}') {
        return false;
    }
    pos += 1;
    // json.Encoder (unlike json.Marshal) appends a newline.
    skip_ws(b, &mut pos);
    pos == b.len()
}

/// A JSON string at `*pos`: its raw contents and whether it has escapes.
fn string<'a>(b: &'a [u8], pos: &mut usize) -> Option<(&'a [u8], bool)> {
    if b.get(*pos) != Some(&b'"') {
        return None;
    }
    let start = *pos + 1;
    let mut i = start;
    let mut escaped = false;
    loop {
        match *b.get(i)? {
            b'"' => break,
            b'\\' => {
                escaped = true;
                match *b.get(i + 1)? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                    b'u' => {
                        hex4(b.get(i + 2..i + 6)?)?;
                        i += 6;
                    }
                    _ => return None,
                }
            }
            // Raw control characters are invalid JSON; Go always escaped them.
            0x00..=0x1f => return None,
            _ => i += 1,
        }
    }
    *pos = i + 1;
    Some((&b[start..i], escaped))
}

fn hex4(h: &[u8]) -> Option<u16> {
    let s = std::str::from_utf8(h).ok()?;
    if s.len() != 4 || !s.bytes().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// Resolves the escapes of contents already validated by `string`. Lone
/// surrogates become U+FFFD, as Go's decoder does.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let c = s[i];
        if c != b'\\' {
            out.push(c);
            i += 1;
            continue;
        }
        let Some(&e) = s.get(i + 1) else { break };
        i += 2;
        let simple = match e {
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'u' => None,
            other => Some(other), // '"', '\\', '/'
        };
        if let Some(byte) = simple {
            out.push(byte);
            continue;
        }
        let unit = s.get(i..i + 4).and_then(hex4).unwrap_or(0xfffd);
        i += 4;
        let ch = match unit {
            0xd800..=0xdbff => {
                let low = s
                    .get(i..i + 6)
                    .filter(|n| n.starts_with(b"\\u"))
                    .and_then(|n| hex4(&n[2..]))
                    .filter(|l| (0xdc00..=0xdfff).contains(l));
                match low {
                    Some(low) => {
                        i += 6;
                        let cp = 0x10000
                            + ((u32::from(unit) - 0xd800) << 10)
                            + (u32::from(low) - 0xdc00);
                        char::from_u32(cp).unwrap_or(char::REPLACEMENT_CHARACTER)
                    }
                    None => char::REPLACEMENT_CHARACTER,
                }
            }
            _ => char::from_u32(u32::from(unit)).unwrap_or(char::REPLACEMENT_CHARACTER),
        };
        let mut buf = [0u8; 4];
        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(data: &str) -> Option<Vec<Vec<u8>>> {
        decode(data.as_bytes()).map(|v| v.into_iter().map(Cow::into_owned).collect())
    }

    #[test]
    fn go_marshal_output() {
        assert_eq!(
            strings(r#"{"is_batch":true,"proposals":["a","b"]}"#),
            Some(vec![b"a".to_vec(), b"b".to_vec()])
        );
        assert_eq!(
            strings(
                r#"{"is_batch":true,"proposals":["\u003ckey\u003e \u0026 \"q\" \\ \n\t\r\b\f\u0001 é 日本 \u2028"]}"#
            ),
            Some(vec![
                "<key> & \"q\" \\ \n\t\r\u{8}\u{c}\u{1} é 日本 \u{2028}"
                    .as_bytes()
                    .to_vec()
            ])
        );
        assert_eq!(
            strings(r#"{"is_batch":true,"proposals":["\ud83d\ude00"]}"#),
            Some(vec!["😀".as_bytes().to_vec()])
        );
        assert_eq!(
            strings(r#"{"is_batch":true,"proposals":["\ud83dx"]}"#),
            Some(vec!["\u{fffd}x".as_bytes().to_vec()])
        );
        assert_eq!(
            strings(r#"{"is_batch":true,"proposals":["\ude00\u0041"]}"#),
            Some(vec!["\u{fffd}A".as_bytes().to_vec()])
        );
        assert_eq!(strings(r#"{"is_batch":true,"proposals":[]}"#), Some(vec![]));
        assert_eq!(
            strings(r#"{"is_batch":true,"proposals":null}"#),
            Some(vec![])
        );
        assert_eq!(
            strings("{\"is_batch\":true,\"proposals\":[\"x\"]}\n"),
            Some(vec![b"x".to_vec()])
        );
    }

    #[test]
    fn unescaped_strings_borrow() {
        let data = br#"{"is_batch":true,"proposals":["plain","esc\n"]}"#;
        let v = decode(data).unwrap();
        assert!(matches!(v[0], Cow::Borrowed(_)));
        assert!(matches!(v[1], Cow::Owned(_)));
    }

    #[test]
    fn not_legacy() {
        for s in [
            r#"{ "is_batch": true, "proposals": ["a"] }"#,
            r#"{"is_batch":false,"proposals":["a"]}"#,
            r#"{"proposals":["a"],"is_batch":true}"#,
            r#"{"is_batch":true,"proposals":["a"]"#,
            r#"{"is_batch":true,"proposals":["a"]}x"#,
            r#"{"is_batch":true,"proposals":["a",]}"#,
            r#"{"is_batch":true,"proposals":["\x"]}"#,
            r#"{"is_batch":true,"proposals":["\u12"]}"#,
            r#"{"is_batch":true,"proposals":[1]}"#,
            "{\"is_batch\":true,\"proposals\":[\"a\u{1}\"]}",
            r#"{"is_batch":true,"proposals":"#,
            "",
            "plain",
        ] {
            assert_eq!(strings(s), None, "{s}");
            assert!(!is_batch(s.as_bytes()));
        }
    }
}
