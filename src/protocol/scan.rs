//! Protocol layer: the fast path of [`super::inbound::message_type`] — one pass over a message
//! that checks its JSON syntax and finds its top-level `type`, with no parse tree, no
//! allocation and no serde machinery (on the relay's hot path this pass is most of the cost of
//! reading an event).
//!
//! It accepts a strict subset of what serde_json accepts when it reads a message into a tree
//! (`serde_json::Value`): anything unusual — an escape in a top-level key or in the `type`
//! value, a control character, a malformed escape or an unpaired surrogate escape in a string,
//! nesting deeper than `MAX_DEPTH`, a number that might be out of `f64`'s range, a repeated
//! or missing `type`, any syntax error — makes it answer `None`, and the caller asks
//! serde_json, whose answer stays the reference for every refusal and every odd case.
//!
//! Invariant: when [`object_type`] answers `Some(t)`, serde_json reads the same text into a
//! `Value` (within its nesting limit of 128, surrogates paired, numbers finite) and reads it
//! as an object whose `type` is the string `t`, borrowed (checked side by side in the tests,
//! over every single-byte edit of sample messages, and by the `scanner` fuzz target).

/// Nesting (objects and arrays, the message itself included) past which serde_json decides
/// (its own limit is 127 levels; deeper is refused).
const MAX_DEPTH: usize = 32;

/// A number whose integer digits plus its (positive) exponent stay within this is below
/// 10^300, so surely finite as an `f64`; a larger one is left to serde_json, which refuses a
/// number that overflows.
const MAX_MAGNITUDE: usize = 300;

/// The top-level `type` of `text` if it is a plain JSON object this scanner fully accepts.
/// (Inlined into its one caller on the hot path, as it was while private.)
#[inline]
pub fn object_type(text: &str) -> Option<&str> {
    let mut c = Cursor {
        b: text.as_bytes(),
        i: 0,
    };
    c.ws();
    c.eat(b'{')?;
    let mut ty = None;
    loop {
        c.ws();
        let key = c.plain_string()?;
        c.ws();
        c.eat(b':')?;
        c.ws();
        if &c.b[key.0..key.1] == b"type" {
            if ty.is_some() {
                return None;
            }
            ty = Some(c.plain_string()?);
        } else {
            c.value(1)?;
        }
        c.ws();
        match c.bump()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    c.ws();
    let (start, end) = ty?;
    // The quotes around it are ASCII, so both ends are character boundaries.
    (c.i == c.b.len()).then(|| text.get(start..end)).flatten()
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `v` below `n` (at most 128) is set in the answer. Above the
/// lowest such byte there may be false marks (a borrow runs up), never below it: only the
/// lowest mark is to be read.
fn bytes_below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(ONES * u64::from(n)) & !v & HIGHS
}

/// Marks (read only the lowest) for the bytes of `v` that end a plain run of string: `"`, `\`
/// or a control character. Bytes of multi-byte UTF-8 characters are never marked.
fn special_bytes(v: u64) -> u64 {
    bytes_below(v ^ (ONES * u64::from(b'"')), 1)
        | bytes_below(v ^ (ONES * u64::from(b'\\')), 1)
        | bytes_below(v, 0x20)
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn bump(&mut self) -> Option<u8> {
        let x = self.peek()?;
        self.i += 1;
        Some(x)
    }

    fn eat(&mut self, want: u8) -> Option<()> {
        (self.bump()? == want).then_some(())
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// A string with no escapes and no control characters; the range of its contents.
    fn plain_string(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        match self.bump_to_special()? {
            b'"' => Some((start, self.i - 1)),
            _ => None,
        }
    }

    /// Skip to just past the next `"`, `\` or control character; that byte. Eight bytes at a
    /// time while they last (see [`special_bytes`]), then one by one.
    fn bump_to_special(&mut self) -> Option<u8> {
        let mut i = self.i;
        while let Some(word) = self.b.get(i..i + 8) {
            let mut eight = [0; 8];
            eight.copy_from_slice(word);
            let found = special_bytes(u64::from_le_bytes(eight));
            if found != 0 {
                i += found.trailing_zeros() as usize / 8;
                break;
            }
            i += 8;
        }
        let rest = self.b.get(i..)?;
        let at = rest
            .iter()
            .position(|&x| x == b'"' || x == b'\\' || x < 0x20)?;
        self.i = i + at + 1;
        Some(rest[at])
    }

    /// Any string whose escapes are well formed as serde_json reads a string into a tree:
    /// `\uXXXX` needs four hex digits, and a surrogate must be a high one (D800-DBFF)
    /// directly followed by an escaped low one (DC00-DFFF).
    fn string(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            match self.bump_to_special()? {
                b'"' => return Some(()),
                b'\\' => match self.bump()? {
                    b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                    b'u' => match self.hex4()? {
                        0xD800..=0xDBFF => {
                            self.literal(b"\\u")?;
                            self.hex4().filter(|low| (0xDC00..=0xDFFF).contains(low))?;
                        }
                        0xDC00..=0xDFFF => return None,
                        _ => {}
                    },
                    _ => return None,
                },
                _ => return None,
            }
        }
    }

    /// Four hex digits, as a code unit.
    fn hex4(&mut self) -> Option<u16> {
        let mut unit = 0;
        for _ in 0..4 {
            let digit = char::from(self.bump()?).to_digit(16)?;
            unit = unit << 4 | digit as u16;
        }
        Some(unit)
    }

    /// One or more digits; how many.
    fn digits(&mut self) -> Option<usize> {
        let start = self.i;
        self.bump().filter(u8::is_ascii_digit)?;
        while self.peek().is_some_and(|d| d.is_ascii_digit()) {
            self.i += 1;
        }
        Some(self.i - start)
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?` (a digit after a leading `0` is left
    /// for the caller, which expects `,`, `}` or `]` there and refuses it), no larger than
    /// [`MAX_MAGNITUDE`] allows.
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        let whole = if self.peek() == Some(b'0') {
            self.i += 1;
            1
        } else {
            self.digits()?
        };
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.digits()?;
        }
        let mut magnitude = whole;
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            let sign = self.peek();
            if let Some(b'+' | b'-') = sign {
                self.i += 1;
            }
            let start = self.i;
            self.digits()?;
            if sign != Some(b'-') {
                // Saturating: only "past the bound" matters.
                magnitude += self.b[start..self.i].iter().fold(0, |n: usize, d| {
                    (n * 10 + usize::from(d - b'0')).min(MAX_MAGNITUDE + 1)
                });
            }
        }
        (magnitude <= MAX_MAGNITUDE).then_some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// One value at nesting `depth` (the enclosing containers).
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.string(),
            b'{' | b'[' if depth >= MAX_DEPTH => None,
            b'{' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b'}') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.string()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.bump()? {
                        b',' => continue,
                        b'}' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b'[' => {
                self.i += 1;
                self.ws();
                if self.peek() == Some(b']') {
                    self.i += 1;
                    return Some(());
                }
                loop {
                    self.ws();
                    self.value(depth + 1)?;
                    self.ws();
                    match self.bump()? {
                        b',' => continue,
                        b']' => return Some(()),
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use std::borrow::Cow;

    #[derive(Deserialize)]
    struct Envelope<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }

    /// The reference: serde_json reads `text` into a tree, as an object, and reads it as a
    /// message with a borrowed string `type`.
    fn reference(text: &str) -> Option<&str> {
        serde_json::from_str::<serde_json::Value>(text)
            .ok()?
            .as_object()?;
        match serde_json::from_str::<Envelope<'_>>(text).ok()?.kind {
            Cow::Borrowed(t) => Some(t),
            Cow::Owned(_) => None,
        }
    }

    const SAMPLES: &[&str] = &[
        r#"{"type":"head_position","position":"up","timestamp":"2025-01-01T00:00:00.000Z"}"#,
        r#" {"a":[1,-2.5e+3,{"b":"\u0041\n"}],"type":"button_press","z":null,"t":true,"f":false} "#,
        r#"{"x":{},"y":[],"type":"location_update","lat":-0.25,"lng":1E9,"n":0}"#,
        "{\"type\" : \"touch_event\" ,\r\n\t\"gesture_name\":\"forward_swipe\"}",
        r#"{"type":"glasses_battery_update","level":100,"charging":false,"note":"é ✓"}"#,
        r#"{"type":"x","s":"\ud83d\ude00 \uD800\uDFFF \u20ac","n":1.5e298,"m":-9e-999,"k":1E+299}"#,
    ];

    #[test]
    fn special_bytes_finds_the_first_end_of_a_run() {
        let plain = *b"ab\xc3\xa9 ~\x7f\xff";
        assert_eq!(special_bytes(u64::from_le_bytes(plain)), 0);
        assert_eq!(special_bytes(u64::from_le_bytes(*b"!#[]{} 0")), 0);
        for at in 0..8 {
            for x in [b'"', b'\\', 0, 0x1f] {
                let mut w = plain;
                w[at] = x;
                if at < 7 {
                    w[7] = b'"'; // a later mark must not hide the first
                }
                let found = special_bytes(u64::from_le_bytes(w));
                assert_eq!(found.trailing_zeros() as usize / 8, at, "{w:?}");
            }
        }
    }

    #[test]
    fn common_messages_take_the_fast_path() {
        for text in SAMPLES {
            assert!(object_type(text).is_some(), "{text}");
            assert_eq!(object_type(text), reference(text), "{text}");
        }
    }

    #[test]
    fn unusual_messages_are_left_to_serde() {
        for text in [
            r#"{"type":"a\"b"}"#,
            r#"{"typ\u0065":"x"}"#,
            r#"{"type":"x","type":"y"}"#,
            r#"{"type":"x",}"#,
            r#"{"type":"x","n":01}"#,
            r#"{"type":"x","n":1.}"#,
            r#"{"type":"x","s":"\x"}"#,
            r#"{"type":"x","s":"\u12g4"}"#,
            "{\"type\":\"x\",\"s\":\"a\u{1}b\"}",
            r#"{"type":"x"} x"#,
            r#"{"kind":"x"}"#,
            r#"["type"]"#,
            "{}",
        ] {
            assert_eq!(object_type(text), None, "{text}");
        }
        let deep = format!(
            "{{\"type\":\"x\",\"d\":{}{}}}",
            "[".repeat(40),
            "]".repeat(40)
        );
        assert_eq!(object_type(&deep), None);
        assert_eq!(reference(&deep), Some("x"));
    }

    /// serde_json refuses these when it reads them into a tree (though not when it skips them):
    /// the scanner must never answer for them.
    #[test]
    fn unpaired_surrogates_and_numbers_out_of_range_are_left_to_serde() {
        for s in [
            r#"\ud800"#,
            r#"\uDBFF"#,
            r#"\udc00"#,
            r#"\uDFFF"#,
            r#"\udc00\ud800"#,
            r#"\ud800\u0041"#,
            r#"\ud800\ud800"#,
            r#"\ud800\ud800\udc00"#,
            r#"\ud800x"#,
            r#"\ud800\n"#,
            r#"\ud800\"#,
            r#"\ud800\u"#,
            r#"\ud800\udc0"#,
        ] {
            for text in [
                format!(r#"{{"type":"button_press","s":"{s}"}}"#),
                format!(r#"{{"type":"button_press","a":[{{"{s}":1}}]}}"#),
            ] {
                assert_eq!(object_type(&text), None, "{text}");
                assert_eq!(reference(&text), None, "{text}");
            }
        }
        for n in [
            "1e309",
            "1e400",
            "-1E+309",
            "2e308",
            "1e99999999999",
            "1".repeat(310).as_str(),
        ] {
            let text = format!(r#"{{"type":"x","n":{n}}}"#);
            assert_eq!(object_type(&text), None, "{text}");
            assert_eq!(reference(&text), None, "{text}");
        }
        // Near the bound the scanner may leave a finite number to serde_json; far from it, not.
        for n in [
            "1e300",
            "9".repeat(300).as_str(),
            "0.5e299",
            "1e-99999999999",
            "0e400",
        ] {
            let text = format!(r#"{{"type":"x","n":{n}}}"#);
            assert_eq!(reference(&text), Some("x"), "{text}");
        }
        assert_eq!(object_type(r#"{"type":"x","n":1e299}"#), Some("x"));
    }

    /// Every single-byte edit (replace, insert, delete) of every sample, with bytes that matter
    /// to JSON: where the scanner answers, serde_json gives the same answer.
    #[test]
    fn never_answers_differently_from_serde() {
        let alphabet = b"{}[]\":,\\ \t0123456789-+.eEtrufalsnu\x01x/dDcCbB";
        let mut answered = 0;
        let mut check = |bytes: &[u8]| {
            if let Ok(text) = std::str::from_utf8(bytes) {
                if let Some(t) = object_type(text) {
                    answered += 1;
                    assert_eq!(Some(t), reference(text), "{text}");
                }
            }
        };
        for text in SAMPLES {
            let b = text.as_bytes();
            for at in 0..=b.len() {
                if at < b.len() {
                    check(&[&b[..at], &b[at + 1..]].concat());
                }
                for &x in alphabet {
                    check(&[&b[..at], &[x], &b[at..]].concat());
                    if at < b.len() {
                        check(&[&b[..at], &[x], &b[at + 1..]].concat());
                    }
                }
            }
        }
        assert!(
            answered > 1000,
            "the scanner answered only {answered} edits"
        );
    }
}
