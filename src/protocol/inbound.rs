//! Protocol layer: the messages glasses and apps send, decoded by borrowing.
//!
//! Decoding is two-step, as the hot path needs: [`message_type`] reads only the `type` of a
//! message (fields it does not name are checked without allocating), so a relayed event costs
//! no allocation; the few control messages are then decoded into their typed structs. An
//! internally tagged serde enum would buffer every field of every message first, which is why
//! the envelope is a struct of its own.
//!
//! Invariants: a message is an object with a string `type`, or it is refused as malformed.
//! [`message_type`] accepts only what serde_json reads into a tree (`serde_json::Value`):
//! nesting within its limit (127 levels), surrogate escapes paired, numbers finite — though it
//! builds no tree. Skipping a field the serde way (`IgnoredAny`, `RawValue`) checks none of
//! these, so every message goes through [`message_type`] before anything of it is decoded,
//! and a field kept raw and passed on (a relayed event, a published `data`, a `layout`) is
//! JSON any serde_json peer reads.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Why a message could not be read at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    NotAnObject,
    /// It starts as an object but is not JSON that serde_json reads into a tree.
    Invalid,
    NoType,
}

impl Malformed {
    pub fn message(self) -> &'static str {
        match self {
            Malformed::NotAnObject => "expected a JSON object",
            Malformed::Invalid => {
                "not valid JSON (a syntax error, nesting deeper than 127 levels, an unpaired \
                 surrogate escape or a number out of range)"
            }
            Malformed::NoType => "message has no string 'type'",
        }
    }
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
        Err(_) => Err(Malformed::Invalid),
    }
}

/// A message's `type`, every other field read as [`Checked`] (a derived struct would skip them
/// unchecked). A repeated `type` is refused, as a derived struct refuses it.
struct Envelope<'a> {
    kind: Cow<'a, str>,
}

impl<'de> Deserialize<'de> for Envelope<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Fields;
        impl<'de> Visitor<'de> for Fields {
            type Value = Envelope<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a message")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Envelope<'de>, A::Error> {
                let mut kind = None;
                while let Some(IsType(is_type)) = map.next_key()? {
                    if !is_type {
                        map.next_value::<Checked>()?;
                    } else if kind.is_some() {
                        return Err(de::Error::duplicate_field("type"));
                    } else {
                        kind = Some(map.next_value::<TypeName<'de>>()?.0);
                    }
                }
                let kind = kind.ok_or_else(|| de::Error::missing_field("type"))?;
                Ok(Envelope { kind })
            }
        }
        d.deserialize_map(Fields)
    }
}

/// A key of the message, and whether it is `type` (once unescaped).
struct IsType(bool);

impl<'de> Deserialize<'de> for IsType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Key;
        impl Visitor<'_> for Key {
            type Value = IsType;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, key: &str) -> Result<IsType, E> {
                Ok(IsType(key == "type"))
            }
        }
        d.deserialize_str(Key)
    }
}

/// The `type` value: a string, borrowed when it has no escapes.
struct TypeName<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for TypeName<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = TypeName<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<TypeName<'de>, E> {
                Ok(TypeName(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<TypeName<'de>, E> {
                Ok(TypeName(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(Name)
    }
}

/// Any JSON value, read as serde_json reads one into a tree (within its nesting limit, strings
/// unescaped and checked, numbers parsed) and forgotten at once: no tree, no allocation.
struct Checked;

impl<'de> Deserialize<'de> for Checked {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Checked)
    }
}

impl<'de> Visitor<'de> for Checked {
    type Value = Checked;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_entry::<Checked, Checked>()?.is_some() {}
        Ok(Checked)
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

/// How precise and frequent a location stream an app wants (the `rate` of a
/// `{"stream": "location_stream", "rate": …}` subscription, PROTOCOL §8.2), and the tier the
/// box asks the glasses for with `set_location_tier`. Ordered from the least to the most
/// demanding; `standard` (the tier of a subscription without a rate) sits between
/// `hundredMeters` and `tenMeters`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocationTier {
    Reduced,
    ThreeKilometers,
    Kilometer,
    HundredMeters,
    Standard,
    TenMeters,
    High,
    Realtime,
}

impl LocationTier {
    pub fn parse(rate: &str) -> Option<LocationTier> {
        Some(match rate {
            "reduced" => LocationTier::Reduced,
            "threeKilometers" => LocationTier::ThreeKilometers,
            "kilometer" => LocationTier::Kilometer,
            "hundredMeters" => LocationTier::HundredMeters,
            "standard" => LocationTier::Standard,
            "tenMeters" => LocationTier::TenMeters,
            "high" => LocationTier::High,
            "realtime" => LocationTier::Realtime,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            LocationTier::Reduced => "reduced",
            LocationTier::ThreeKilometers => "threeKilometers",
            LocationTier::Kilometer => "kilometer",
            LocationTier::HundredMeters => "hundredMeters",
            LocationTier::Standard => "standard",
            LocationTier::TenMeters => "tenMeters",
            LocationTier::High => "high",
            LocationTier::Realtime => "realtime",
        }
    }
}

/// Glasses: `glasses_connection_state` (only what the capabilities need: the model, whether it
/// is connected, and a `capabilities` object some glasses send for a model of their own).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionState<'a> {
    #[serde(borrow, default)]
    pub model_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
    #[serde(default)]
    pub capabilities: Option<serde_json::Value>,
}

/// Apps: `ownership_release` (SDK 2.1.29 `AppSession.releaseOwnership`, sent before the app
/// closes its connection on purpose). Both fields are read by the handler, which refuses a
/// reason it does not know and a package other than the connection's.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnershipRelease<'a> {
    #[serde(borrow, default)]
    pub package_name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub reason: Option<Cow<'a, str>>,
}

/// Why an app lets go of its session (`ownership_release.reason`, PROTOCOL §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseReason {
    /// The app's server got a second `session_request` for a session it holds: it reconnects
    /// (to the URL of that request) right after closing this connection.
    SwitchingClouds,
    CleanShutdown,
    UserLogout,
}

impl ReleaseReason {
    pub fn parse(reason: &str) -> Option<ReleaseReason> {
        match reason {
            "switching_clouds" => Some(ReleaseReason::SwitchingClouds),
            "clean_shutdown" => Some(ReleaseReason::CleanShutdown),
            "user_logout" => Some(ReleaseReason::UserLogout),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ReleaseReason::SwitchingClouds => "switching_clouds",
            ReleaseReason::CleanShutdown => "clean_shutdown",
            ReleaseReason::UserLogout => "user_logout",
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
        assert_eq!(message_type("{\"type\":"), Err(Malformed::Invalid));
        assert_eq!(message_type("{\"type\":5}"), Err(Malformed::NoType));
        assert_eq!(message_type("{\"kind\":\"x\"}"), Err(Malformed::NoType));
        assert_eq!(message_type("{}"), Err(Malformed::NoType));
    }

    /// `{"type":..., "x": <depth containers>}`: the message itself is one more level.
    fn nested(ty: &str, depth: usize) -> String {
        let open = r#"{"a":"#.repeat(depth);
        format!(r#"{{"type":"{ty}","x":{open}1{}}}"#, "}".repeat(depth))
    }

    #[test]
    fn nesting_is_limited_where_serde_json_limits_a_tree() {
        // serde_json reads 127 levels into a tree and refuses the 128th.
        for (levels, ok) in [(127, true), (128, false), (10_000, false)] {
            for ty in ["button_press", r#"button\u005fpress"#] {
                let text = nested(ty, levels - 1);
                let tree = serde_json::from_str::<serde_json::Value>(&text);
                assert_eq!(tree.is_ok(), ok, "{levels}");
                let want = if ok {
                    Ok("button_press")
                } else {
                    Err(&Malformed::Invalid)
                };
                assert_eq!(message_type(&text).as_deref(), want, "{levels} {ty}");
            }
        }
        let arrays = format!(
            r#"{{"type":"t","x":{}{}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        );
        assert_eq!(message_type(&arrays), Err(Malformed::Invalid));
        let arrays = format!(
            r#"{{"type":"t","x":{}{}}}"#,
            "[".repeat(126),
            "]".repeat(126)
        );
        assert_eq!(message_type(&arrays).as_deref(), Ok("t"));
    }

    #[test]
    fn unpaired_surrogate_escapes_are_refused_anywhere() {
        for s in [
            r#"\ud800"#,
            r#"\udfff"#,
            r#"\ud800\u0041"#,
            r#"\ud800\ud800"#,
            r#"\udc00\ud800"#,
            r#"\ud800 "#,
        ] {
            for text in [
                format!(r#"{{"type":"button_press","s":"{s}"}}"#),
                format!(r#"{{"type":"button_press","{s}":1}}"#),
                format!(r#"{{"type":"button_\u0070ress","s":["{s}"]}}"#),
                format!(r#"{{"type":"x{s}"}}"#),
            ] {
                assert_eq!(message_type(&text), Err(Malformed::Invalid), "{text}");
            }
        }
        let pair = r#"{"type":"button_press","s":"\ud83d\ude00","\uD800\uDC00":1}"#;
        assert_eq!(message_type(pair).as_deref(), Ok("button_press"));
        let pair = r#"{"type":"\ud83d\ude00","s":"x"}"#;
        assert_eq!(message_type(pair).as_deref(), Ok("\u{1f600}"));
    }

    #[test]
    fn numbers_out_of_range_are_refused() {
        for n in ["1e309", "-1e400", "1e99999999999"] {
            let text = format!(r#"{{"type":"t","n":{n}}}"#);
            assert_eq!(message_type(&text), Err(Malformed::Invalid), "{text}");
        }
        let text = r#"{"type":"t","n":1e300,"m":1e-400}"#;
        assert_eq!(message_type(text).as_deref(), Ok("t"));
    }

    /// A field kept raw checks neither nesting nor surrogates: that is why every message goes
    /// through `message_type` first (were serde_json to check them, this would fail and the
    /// note in the module comment could go).
    #[test]
    fn raw_fields_are_not_checked_by_serde_json() {
        let deep = format!(
            r#"{{"type":"data_stream","data":{}{}}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert!(decode::<Publish<'_>>(&deep).is_some());
        assert_eq!(message_type(&deep), Err(Malformed::Invalid));
        let lone = r#"{"type":"data_stream","data":{"type":"transcription","text":"\ud800"}}"#;
        assert!(decode::<Publish<'_>>(lone).is_some());
        assert_eq!(message_type(lone), Err(Malformed::Invalid));
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
