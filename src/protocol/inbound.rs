//! Protocol layer: the messages glasses and apps send, decoded by borrowing.
//!
//! Decoding is two-step, as the hot path needs: [`message_type`] reads only the `type` of a
//! message (fields it does not name are skipped without allocating), so a relayed event costs
//! no allocation; the few control messages are then decoded into their typed structs. An
//! internally tagged serde enum would buffer every field of every message first, which is why
//! the envelope is a struct of its own. Invariant: a message is an object with a string `type`,
//! or it is refused as malformed.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// Why a message could not be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    NotAnObject,
    NoType,
}

impl Malformed {
    pub fn message(self) -> &'static str {
        match self {
            Malformed::NotAnObject => "expected a JSON object",
            Malformed::NoType => "message has no string 'type'",
        }
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
}

/// The `type` of a JSON object message, borrowed from `text` when it has no escapes.
pub fn message_type(text: &str) -> Result<Cow<'_, str>, Malformed> {
    // A plain message is read in one pass; serde_json reads (and refuses) the rest.
    if let Some(ty) = super::scan::object_type(text) {
        return Ok(Cow::Borrowed(ty));
    }
    if !text.trim_start().starts_with('{') {
        return Err(Malformed::NotAnObject);
    }
    match serde_json::from_str::<Envelope<'_>>(text) {
        Ok(e) => Ok(e.kind),
        Err(e) if e.is_data() => Err(Malformed::NoType),
        Err(_) => Err(Malformed::NotAnObject),
    }
}

/// Decode a typed message; `None` when a field it needs is missing or of the wrong type.
pub fn decode<'a, T: Deserialize<'a>>(text: &'a str) -> Option<T> {
    serde_json::from_str(text).ok()
}

/// Glasses: `connection_init` (the token may instead come with the upgrade).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionInit<'a> {
    #[serde(borrow, default)]
    pub core_token: Option<Cow<'a, str>>,
}

/// Glasses: `start_app` and `stop_app`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppLifecycle<'a> {
    #[serde(borrow)]
    pub package_name: Cow<'a, str>,
}

/// Apps: `tpa_connection_init`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TpaConnectionInit<'a> {
    #[serde(borrow)]
    pub package_name: Cow<'a, str>,
    #[serde(borrow)]
    pub session_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub api_key: Option<Cow<'a, str>>,
}

/// Apps: `subscription_update`. Entries are strings or `{ "stream": …, "rate": … }` objects;
/// each is checked on its own, so one bad entry does not refuse the rest.
#[derive(Deserialize)]
pub struct SubscriptionUpdate {
    pub subscriptions: Vec<serde_json::Value>,
}

impl SubscriptionUpdate {
    /// The stream an entry names, or "" when it names none.
    pub fn stream(entry: &serde_json::Value) -> &str {
        match entry {
            serde_json::Value::String(s) => s.as_str(),
            serde_json::Value::Object(o) => o
                .get("stream")
                .and_then(serde_json::Value::as_str)
                .unwrap_or(""),
            _ => "",
        }
    }
}

/// Glasses: `touch_event` (only the gesture is read, to route gesture subscriptions).
#[derive(Deserialize)]
pub struct TouchEvent<'a> {
    #[serde(borrow, default)]
    pub gesture_name: Cow<'a, str>,
}

/// Apps with the right to publish: `data_stream` carrying a transcript or translation. `data`
/// is kept as the raw text it arrived as, to be relayed without re-encoding.
#[derive(Deserialize)]
pub struct Publish<'a> {
    #[serde(borrow)]
    pub data: &'a serde_json::value::RawValue,
}

/// The routing fields of published `TranscriptionData` / `TranslationData` (PROTOCOL §8.4).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedMeta<'a> {
    #[serde(rename = "type", borrow)]
    pub kind: Cow<'a, str>,
    #[serde(borrow, default)]
    pub transcribe_language: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub translate_language: Option<Cow<'a, str>>,
    #[serde(default)]
    pub is_final: Option<bool>,
}

/// Apps: `display_event`. The layout is kept as the raw JSON it came as (passed through to the
/// glasses); `durationMs` and `forceDisplay` are read leniently (anything but a non-negative
/// number, or `true`, counts as absent), as the SDK drops bad durations itself.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DisplayRequest<'a> {
    #[serde(borrow, default)]
    pub view: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub layout: &'a RawValue,
    #[serde(borrow, default)]
    duration_ms: Option<&'a RawValue>,
    #[serde(borrow, default)]
    force_display: Option<&'a RawValue>,
}

impl DisplayRequest<'_> {
    /// `durationMs` in whole milliseconds, when it is a non-negative number.
    pub fn duration_ms(&self) -> Option<u64> {
        let n: f64 = self.duration_ms?.get().parse().ok()?;
        (n.is_finite() && n >= 0.0).then(|| n.min(u64::MAX as f64) as u64)
    }

    pub fn force(&self) -> bool {
        self.force_display.is_some_and(|r| r.get() == "true")
    }

    /// The layout's `layoutType`, if it is an object with a string one.
    pub fn layout_type(&self) -> Option<Cow<'_, str>> {
        #[derive(Deserialize)]
        struct Head<'b> {
            #[serde(rename = "layoutType", borrow)]
            layout_type: Cow<'b, str>,
        }
        decode::<Head<'_>>(self.layout.get()).map(|h| h.layout_type)
    }
}

/// Apps: `dashboard_content_update`.
#[derive(Deserialize)]
pub struct DashboardContentUpdate<'a> {
    #[serde(borrow)]
    pub content: Cow<'a, str>,
    #[serde(borrow, default)]
    pub modes: Vec<Cow<'a, str>>,
}

/// Apps: `dashboard_mode_change`.
#[derive(Deserialize)]
pub struct DashboardModeChange<'a> {
    #[serde(borrow)]
    pub mode: Cow<'a, str>,
}

/// Apps: `dashboard_system_update`.
#[derive(Deserialize)]
pub struct DashboardSystemUpdate<'a> {
    #[serde(borrow)]
    pub section: Cow<'a, str>,
    #[serde(borrow)]
    pub content: Cow<'a, str>,
}

/// System apps: `dashboard_always_on_change` (the glasses message's name, taken from a system
/// app as the switch of the always-on dashboard).
#[derive(Deserialize)]
pub struct DashboardAlwaysOnChange {
    pub enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_is_borrowed_and_other_fields_skipped() {
        let t = message_type(r#"{"a":[1,{"b":"\u0041"}],"type":"head_position","z":null}"#);
        assert!(matches!(t, Ok(Cow::Borrowed("head_position"))));
        let t = message_type(r#"{"type":"a\"b"}"#).unwrap();
        assert_eq!(t, "a\"b");
    }

    #[test]
    fn malformed_messages_are_told_apart() {
        assert_eq!(message_type("nope"), Err(Malformed::NotAnObject));
        assert_eq!(message_type("[\"type\"]"), Err(Malformed::NotAnObject));
        assert_eq!(message_type("{\"type\":"), Err(Malformed::NotAnObject));
        assert_eq!(message_type("{\"type\":5}"), Err(Malformed::NoType));
        assert_eq!(message_type("{\"kind\":\"x\"}"), Err(Malformed::NoType));
        assert_eq!(message_type("{}"), Err(Malformed::NoType));
    }

    #[test]
    fn typed_messages() {
        let m: TpaConnectionInit<'_> =
            decode(r#"{"type":"tpa_connection_init","packageName":"p","sessionId":"u-p"}"#)
                .unwrap();
        assert_eq!((&*m.package_name, &*m.session_id), ("p", "u-p"));
        assert!(m.api_key.is_none());
        assert!(decode::<AppLifecycle<'_>>(r#"{"type":"start_app"}"#).is_none());
    }

    #[test]
    fn display_request_keeps_the_layout_raw_and_reads_duration_leniently() {
        let text = r#"{"type":"display_event","view":"main","layout":{"layoutType":"text_wall","text":"a\"b"},"durationMs":2500,"sessionId":""}"#;
        let d: DisplayRequest<'_> = decode(text).unwrap();
        assert_eq!(
            d.layout.get(),
            r#"{"layoutType":"text_wall","text":"a\"b"}"#
        );
        assert_eq!(d.layout_type().as_deref(), Some("text_wall"));
        assert_eq!(d.duration_ms(), Some(2500));
        assert!(!d.force());
        for (dur, want) in [
            ("-5", None),
            ("\"x\"", None),
            ("null", None),
            ("1.9", Some(1)),
        ] {
            let t = format!(
                r#"{{"layout":{{"layoutType":"clear_view"}},"durationMs":{dur},"forceDisplay":true}}"#
            );
            let d: DisplayRequest<'_> = decode(&t).unwrap();
            assert_eq!(d.duration_ms(), want, "{dur}");
            assert!(d.force());
        }
        let d: DisplayRequest<'_> = decode(r#"{"layout":"nope"}"#).unwrap();
        assert_eq!(d.layout_type(), None);
        assert!(decode::<DisplayRequest<'_>>(r#"{"type":"display_event"}"#).is_none());
    }
}
