//! Protocol layer: the wire types of app requests to the glasses and of their replies
//! (PROTOCOL §3, §4, §5, §10) — what SDK 2.1.29 sends (`photo_request`, `audio_play_request`,
//! `audio_stop_request`, `rgb_led_control`, `location_poll_request`, `rtmp_stream_request`,
//! `rtmp_stream_stop`), the 2.1.29 shapes forwarded to the glasses, the reply fields the box
//! routes by, and the errors each SDK module understands.
//!
//! Owns no state. Invariants: inbound values borrow from the input; numbers and stream
//! configurations an app chose are passed to the glasses as the raw JSON they came as (never
//! re-encoded, so `1000` stays `1000`); each outbound struct fixes its `type`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The kinds of app request that wait for a reply from the glasses: what an app's request
/// type and the glasses' reply type both name (see [`super::message`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Photo,
    Audio,
    Led,
    Location,
    Stream,
}

// ---- app → box -----------------------------------------------------------------------------

/// Apps: `photo_request` (SDK `CameraModule.requestPhoto`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PhotoRequest<'a> {
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    #[serde(default)]
    pub save_to_gallery: Option<bool>,
    #[serde(borrow, default)]
    pub custom_webhook_url: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub auth_token: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub size: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub compress: Option<Cow<'a, str>>,
}

/// Apps: `audio_play_request` (SDK `AudioManager.playAudio`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioPlayRequest<'a> {
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    #[serde(borrow)]
    pub audio_url: Cow<'a, str>,
    #[serde(borrow, default)]
    pub volume: Option<&'a RawValue>,
    #[serde(default)]
    pub stop_other_audio: Option<bool>,
    #[serde(borrow, default)]
    pub track_id: Option<&'a RawValue>,
}

/// Apps: `audio_stop_request`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioStopRequest<'a> {
    #[serde(borrow, default)]
    pub track_id: Option<&'a RawValue>,
}

/// Apps: `rgb_led_control` (SDK `LedModule`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LedControl<'a> {
    #[serde(borrow)]
    pub request_id: Cow<'a, str>,
    #[serde(borrow)]
    pub action: Cow<'a, str>,
    #[serde(borrow, default)]
    pub color: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ontime: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub offtime: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub count: Option<&'a RawValue>,
}

/// Apps: `location_poll_request` (SDK `LocationManager.getLatestLocation`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LocationPoll<'a> {
    #[serde(borrow)]
    pub correlation_id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub accuracy: Option<Cow<'a, str>>,
}

/// Apps: `rtmp_stream_request` (SDK `CameraModule.startStream`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtmpStreamRequest<'a> {
    #[serde(borrow)]
    pub rtmp_url: Cow<'a, str>,
    #[serde(borrow, default)]
    pub video: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub audio: Option<&'a RawValue>,
    #[serde(borrow, default)]
    pub stream: Option<&'a RawValue>,
}

/// Apps: `rtmp_stream_stop`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RtmpStreamStop<'a> {
    #[serde(borrow, default)]
    pub stream_id: Option<Cow<'a, str>>,
}

// ---- glasses → box ---------------------------------------------------------------------------

/// Glasses: the id a reply is routed by — `requestId` (`photo_response`, `audio_play_response`,
/// `rgb_led_control_response`), `correlationId` (`location_update`) or `streamId`
/// (`rtmp_stream_status`); other fields are skipped.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReplyIds<'a> {
    #[serde(borrow, default)]
    pub request_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub correlation_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub stream_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub status: Option<Cow<'a, str>>,
    #[serde(default)]
    pub success: Option<bool>,
    #[serde(borrow, default)]
    pub error: Option<ReplyError<'a>>,
}

/// A reply's `error`: a string (`audio_play_response`) or `{code, message}` (`photo_response`).
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ReplyError<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Coded {
        #[serde(borrow, default)]
        code: Option<Cow<'a, str>>,
        #[serde(borrow, default)]
        message: Option<Cow<'a, str>>,
    },
    /// Any other shape: still a reply, routed by its id.
    Other(serde::de::IgnoredAny),
}

impl ReplyError<'_> {
    pub fn code(&self) -> Option<&str> {
        match self {
            ReplyError::Coded { code, .. } => code.as_deref(),
            ReplyError::Text(_) | ReplyError::Other(_) => None,
        }
    }

    pub fn message(&self) -> Option<&str> {
        match self {
            ReplyError::Coded { message, .. } => message.as_deref(),
            ReplyError::Text(t) => Some(t),
            ReplyError::Other(_) => None,
        }
    }
}

/// `rtmp_stream_status` values after which the stream is over.
pub fn stream_ended(status: &str) -> bool {
    matches!(
        status,
        "stopped" | "error" | "timeout" | "disconnected" | "reconnect_failed"
    )
}

// ---- box → glasses ---------------------------------------------------------------------------

/// Glasses: `photo_request` (2.1.29 `PhotoRequestToGlasses`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhotoToGlasses<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub request_id: &'a str,
    pub app_id: &'a str,
    pub webhook_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<&'a str>,
    pub save_to_gallery: bool,
    pub size: &'a str,
    pub compress: &'a str,
    pub timestamp: &'a str,
}

/// Glasses: `audio_play_request` (2.1.29 `AudioPlayRequestToGlasses`, plus the SDK's
/// `trackId` when it gave one).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioToGlasses<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub request_id: &'a str,
    pub app_id: &'a str,
    pub audio_url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub volume: Option<&'a RawValue>,
    pub stop_other_audio: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<&'a RawValue>,
    pub timestamp: &'a str,
}

/// Glasses: `audio_stop_request`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioStopToGlasses<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub app_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub track_id: Option<&'a RawValue>,
    pub timestamp: &'a str,
}

/// Glasses: `rgb_led_control` (2.1.29 `RgbLedControlToGlasses`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LedToGlasses<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub request_id: &'a str,
    pub app_id: &'a str,
    pub action: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub color: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ontime: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offtime: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<&'a RawValue>,
    pub timestamp: &'a str,
}

/// Glasses: `request_single_location`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SingleLocation<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub accuracy: &'a str,
    pub correlation_id: &'a str,
    pub timestamp: &'a str,
}

/// Glasses: `start_rtmp_stream` (2.1.29 `StartRtmpStream`); the stream id is the box's.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StartRtmp<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub rtmp_url: &'a str,
    pub app_id: &'a str,
    pub stream_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub video: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub audio: Option<&'a RawValue>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream: Option<&'a RawValue>,
    pub timestamp: &'a str,
}

/// Glasses: `stop_rtmp_stream`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StopRtmp<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub app_id: &'a str,
    pub stream_id: &'a str,
    pub timestamp: &'a str,
}

// ---- box → app (errors each SDK module understands) ------------------------------------------

/// Apps: `audio_play_response` — resolves `playAudio` (here with `success: false`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AudioPlayFailed<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub request_id: &'a str,
    pub success: bool,
    pub error: &'a str,
    pub timestamp: &'a str,
}

/// Glasses: `keep_rtmp_stream_alive` (2.1.29 `KeepRtmpStreamAlive`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeepStreamAlive<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub stream_id: &'a str,
    pub ack_id: &'a str,
    pub timestamp: &'a str,
}

/// Glasses: `keep_alive_ack` (`streamId`, `ackId`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeepAliveAck<'a> {
    #[serde(borrow, default)]
    pub stream_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub ack_id: Option<Cow<'a, str>>,
}

/// Apps: `rtmp_stream_status` with an ending status — the SDK's camera module stops counting
/// the stream as running.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StreamStatusOut<'a> {
    #[serde(rename = "type")]
    pub kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_id: Option<&'a str>,
    pub status: &'a str,
    pub error_details: &'a str,
    pub app_id: &'a str,
    pub timestamp: &'a str,
}

/// App server: the JSON body POSTed to `<publicUrl>/photo-upload` that SDK 2.1.29's
/// `setupPhotoUploadEndpoint` takes as a failed photo (it rejects `requestPhoto`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PhotoError<'a> {
    pub request_id: &'a str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub success: bool,
    pub error_code: &'a str,
    pub error_message: &'a str,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::inbound::decode;

    #[test]
    fn sdk_numbers_and_configs_pass_through_unchanged() {
        let t = r#"{"type":"rgb_led_control","requestId":"led_1","action":"on","color":"red","ontime":1000,"offtime":0,"count":1.5}"#;
        let m: LedControl<'_> = decode(t).unwrap();
        let out = LedToGlasses {
            kind: "rgb_led_control",
            request_id: &m.request_id,
            app_id: "com.x",
            action: &m.action,
            color: m.color.as_deref(),
            ontime: m.ontime,
            offtime: m.offtime,
            count: m.count,
            timestamp: "t",
        };
        let s = serde_json::to_string(&out).unwrap();
        assert!(
            s.contains(r#""ontime":1000,"offtime":0,"count":1.5"#),
            "{s}"
        );
        let r: RtmpStreamRequest<'_> =
            decode(r#"{"rtmpUrl":"rtmp://x/y","video":{"width":1280,"fps":30.0}}"#).unwrap();
        assert_eq!(r.video.unwrap().get(), r#"{"width":1280,"fps":30.0}"#);
        assert!(r.audio.is_none());
    }

    #[test]
    fn reply_ids_and_errors_of_either_shape() {
        let r: ReplyIds<'_> = decode(
            r#"{"type":"photo_response","requestId":"p1","success":false,"error":{"code":"CAMERA_BUSY","message":"busy"}}"#,
        )
        .unwrap();
        assert_eq!(r.request_id.as_deref(), Some("p1"));
        assert_eq!(r.success, Some(false));
        let e = r.error.unwrap();
        assert_eq!((e.code(), e.message()), (Some("CAMERA_BUSY"), Some("busy")));
        let r: ReplyIds<'_> = decode(
            r#"{"type":"audio_play_response","requestId":"a","success":false,"error":"404"}"#,
        )
        .unwrap();
        assert_eq!(r.error.unwrap().message(), Some("404"));
        let r: ReplyIds<'_> =
            decode(r#"{"type":"location_update","lat":1,"lng":2,"correlationId":"poll_1"}"#)
                .unwrap();
        assert_eq!(r.correlation_id.as_deref(), Some("poll_1"));
        assert!(decode::<ReplyIds<'_>>(r#"{"requestId":5}"#).is_none());
        assert!(stream_ended("stopped") && !stream_ended("streaming"));
    }
}
