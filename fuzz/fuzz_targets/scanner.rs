//! Differential fuzzing of how a message's `type` is read: `augmentos_edge::protocol::inbound::
//! message_type` (the one-pass scanner, `protocol::scan::object_type`, with serde_json behind
//! it for whatever the scanner leaves) against serde_json reading the same text the plain way:
//! into a tree (`serde_json::Value`), and as a struct with a borrowed string `type`.
//!
//! Input layout: byte 0's low 2 bits pick how the rest (as UTF-8, invalid sequences replaced)
//! becomes the message: 0 as is; 1 as the value of a field, `{"type":"t","v":<rest>}`; 2 the
//! same nested in `byte 1` arrays (so depths around both the scanner's limit, 32, and serde_json's,
//! 128, are reached); 3 as the contents of a string, `{"type":"t","s":"<rest>"}` (escapes).
//!
//! Invariants checked:
//! - `message_type` accepts exactly what serde_json reads into a tree as an object and reads as a
//!   struct with a string `type`, and answers the same `type`;
//! - a refusal says which: `NotAnObject` for text that does not start with `{`, `NoType` for an
//!   object serde_json reads whose `type` is missing, repeated or not a string;
//! - when the scanner answers, serde_json answers the same `type`, borrowed from the text at the
//!   same place;
//! - a `data` field kept raw (`RawValue`, as a publisher's `data` is spliced through unparsed) of
//!   an accepted message is JSON serde_json reads into a tree.

#![no_main]

use augmentos_edge::protocol::inbound::{self, message_type, Malformed, Publish};
use augmentos_edge::protocol::scan::object_type;
use libfuzzer_sys::fuzz_target;
use serde::Deserialize;
use serde_json::Value;
use std::borrow::Cow;

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// serde_json's verdict: `None` when it does not read `text` into a tree; `Some(Err(()))` for an
/// object without a single string `type`; else the `type`.
fn reference(text: &str) -> Option<Result<Cow<'_, str>, ()>> {
    if !serde_json::from_str::<Value>(text).ok()?.is_object() {
        return None;
    }
    Some(
        serde_json::from_str::<Envelope<'_>>(text)
            .map(|e| e.kind)
            .map_err(|_| ()),
    )
}

fn message(data: &[u8]) -> String {
    let (mode, rest) = match data.split_first() {
        Some((m, rest)) => (m & 3, rest),
        None => return String::new(),
    };
    match mode {
        0 => String::from_utf8_lossy(rest).into_owned(),
        1 => format!(r#"{{"type":"t","v":{}}}"#, String::from_utf8_lossy(rest)),
        2 => {
            let (depth, rest) = rest
                .split_first()
                .map_or((0, rest), |(d, r)| (*d as usize, r));
            format!(
                r#"{{"type":"t","v":{}{}{}}}"#,
                "[".repeat(depth),
                String::from_utf8_lossy(rest),
                "]".repeat(depth)
            )
        }
        _ => format!(r#"{{"type":"t","s":"{}"}}"#, String::from_utf8_lossy(rest)),
    }
}

fuzz_target!(|data: &[u8]| {
    let text = message(data);
    let text = text.as_str();
    let want = reference(text);
    let got = message_type(text);
    match (&want, &got) {
        (Some(Ok(w)), Ok(g)) => assert_eq!(w, g, "{text:?}"),
        (Some(Err(())), Err(Malformed::NoType)) => {}
        (None, Err(Malformed::NotAnObject)) => {
            assert!(!text.trim_start().starts_with('{'), "{text:?}")
        }
        (None, Err(Malformed::Invalid | Malformed::NoType)) => {
            assert!(text.trim_start().starts_with('{'), "{text:?}")
        }
        _ => panic!("serde_json: {want:?}, message_type: {got:?}, for {text:?}"),
    }
    if let Some(t) = object_type(text) {
        match want {
            Some(Ok(Cow::Borrowed(w))) => assert_eq!(
                (w.as_ptr(), w.len()),
                (t.as_ptr(), t.len()),
                "the scanner's type is not serde_json's: {text:?}"
            ),
            _ => panic!("the scanner answered {t:?}, serde_json {want:?}, for {text:?}"),
        }
    }
    if got.is_ok() {
        if let Some(p) = inbound::decode::<Publish<'_>>(text) {
            let data = p.data.get();
            assert!(
                serde_json::from_str::<Value>(data).is_ok(),
                "raw data not read into a tree: {text:?}"
            );
        }
    }
});
