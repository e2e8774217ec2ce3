//! Protocol layer: every inbound text message as a typed value, decoded once.
//!
//! [`GlassesMsg::decode`] and [`AppMsg::decode`] read a message's `type` with
//! [`message_type`] (the one-pass scanner for a plain message) and map it to a variant by one
//! `match` on that text; from then on the type is a value (a variant, a [`Stream`], a
//! [`RequestKind`]), never text again. A glasses event that is no control message becomes a
//! [`RawEvent`]: its stream (or, for a type no subscription can name, the type as it came)
//! and the original text, passed through as the bytes they are.
//!
//! Invariants: decoding builds no parse tree and allocates nothing for a message whose `type`
//! has no escapes (a relayed event costs the scan and one `match`); the fields of control
//! messages are decoded later, by their handlers, into the structs of [`super::inbound`] and
//! [`super::requests`]; every name a glasses event is decoded as is a [`Stream`] a
//! subscription can name, and the stream a subscription names is found by [`Stream::from_name`].

use super::inbound::{message_type, Malformed};
use super::requests::RequestKind;
use std::borrow::Cow;

/// A stream an app can subscribe to by a plain name (SDK 2.1.29 `StreamType`; qualified
/// subscriptions such as `transcription:en-US` name one of these too). The aliases
/// `location_stream` and `notification_dismissed` name `LocationUpdate` and
/// `PhoneNotificationDismissed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    ButtonPress,
    HeadPosition,
    TouchEvent,
    GlassesBatteryUpdate,
    PhoneBatteryUpdate,
    GlassesConnectionState,
    LocationUpdate,
    VpsCoordinates,
    Transcription,
    Translation,
    Vad,
    AudioChunk,
    PhoneNotification,
    PhoneNotificationDismissed,
    CalendarEvent,
    StartApp,
    StopApp,
    OpenDashboard,
    DashboardState,
    CoreStatusUpdate,
    Video,
    PhotoRequest,
    PhotoResponse,
    RtmpStreamStatus,
    ManagedStreamStatus,
    PhotoTaken,
    SettingsUpdateRequest,
    CustomMessage,
}

impl Stream {
    pub const ALL: [Stream; 28] = [
        Stream::ButtonPress,
        Stream::HeadPosition,
        Stream::TouchEvent,
        Stream::GlassesBatteryUpdate,
        Stream::PhoneBatteryUpdate,
        Stream::GlassesConnectionState,
        Stream::LocationUpdate,
        Stream::VpsCoordinates,
        Stream::Transcription,
        Stream::Translation,
        Stream::Vad,
        Stream::AudioChunk,
        Stream::PhoneNotification,
        Stream::PhoneNotificationDismissed,
        Stream::CalendarEvent,
        Stream::StartApp,
        Stream::StopApp,
        Stream::OpenDashboard,
        Stream::DashboardState,
        Stream::CoreStatusUpdate,
        Stream::Video,
        Stream::PhotoRequest,
        Stream::PhotoResponse,
        Stream::RtmpStreamStatus,
        Stream::ManagedStreamStatus,
        Stream::PhotoTaken,
        Stream::SettingsUpdateRequest,
        Stream::CustomMessage,
    ];

    /// The stream's wire name: the `streamType` a wildcard subscriber receives it under.
    pub fn name(self) -> &'static str {
        match self {
            Stream::ButtonPress => "button_press",
            Stream::HeadPosition => "head_position",
            Stream::TouchEvent => "touch_event",
            Stream::GlassesBatteryUpdate => "glasses_battery_update",
            Stream::PhoneBatteryUpdate => "phone_battery_update",
            Stream::GlassesConnectionState => "glasses_connection_state",
            Stream::LocationUpdate => "location_update",
            Stream::VpsCoordinates => "vps_coordinates",
            Stream::Transcription => "transcription",
            Stream::Translation => "translation",
            Stream::Vad => "VAD",
            Stream::AudioChunk => "audio_chunk",
            Stream::PhoneNotification => "phone_notification",
            Stream::PhoneNotificationDismissed => "phone_notification_dismissed",
            Stream::CalendarEvent => "calendar_event",
            Stream::StartApp => "start_app",
            Stream::StopApp => "stop_app",
            Stream::OpenDashboard => "open_dashboard",
            Stream::DashboardState => "dashboard_state",
            Stream::CoreStatusUpdate => "core_status_update",
            Stream::Video => "video",
            Stream::PhotoRequest => "photo_request",
            Stream::PhotoResponse => "photo_response",
            Stream::RtmpStreamStatus => "rtmp_stream_status",
            Stream::ManagedStreamStatus => "managed_stream_status",
            Stream::PhotoTaken => "photo_taken",
            Stream::SettingsUpdateRequest => "settings_update_request",
            Stream::CustomMessage => "custom_message",
        }
    }

    /// The stream a subscription's base name (aliases taken) stands for; `None` for a name no
    /// glasses event is decoded as. For subscriptions (rare), not for events.
    pub fn from_name(name: &str) -> Option<Stream> {
        match name {
            "location_stream" => Some(Stream::LocationUpdate),
            "notification_dismissed" => Some(Stream::PhoneNotificationDismissed),
            _ => Stream::ALL.into_iter().find(|s| s.name() == name),
        }
    }
}

/// A glasses event for the subscribers: what it is, and the original text, relayed as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEvent<'a> {
    pub ty: EventType<'a>,
    pub text: &'a str,
}

/// What a relayed event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventType<'a> {
    /// A stream subscriptions can name.
    Stream(Stream),
    /// Any other type, as it came (borrowed when it has no escapes): only wildcard subscribers
    /// (`all`, `*`) receive it, under this name.
    Other(Cow<'a, str>),
}

impl RawEvent<'_> {
    /// The stream, if subscriptions can name it.
    pub fn stream(&self) -> Option<Stream> {
        match self.ty {
            EventType::Stream(s) => Some(s),
            EventType::Other(_) => None,
        }
    }
}

/// A message from the glasses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlassesMsg<'a> {
    ConnectionInit,
    StartApp,
    StopApp,
    /// `request_settings` or `settings_update_request`.
    RequestSettings,
    /// A reply to an app's request (`photo_response`, `audio_play_response`,
    /// `rgb_led_control_response`, `rtmp_stream_status`): routed to the app that asked, never
    /// relayed.
    Reply(RequestKind),
    /// `keep_alive_ack`: the glasses answer a keep-alive of a live RTMP stream.
    KeepAliveAck,
    /// `location_update`: a reply to a `location_poll_request` when it carries a
    /// `correlationId`, an event for the subscribers otherwise.
    Location(RawEvent<'a>),
    /// `core_status_update`: the device settings and glasses model it reports are taken, then
    /// it is relayed.
    CoreStatus(RawEvent<'a>),
    /// `glasses_connection_state`: the model it names is taken, then it is relayed.
    ConnectionState(RawEvent<'a>),
    /// Anything else: relayed to the subscribers.
    Event(RawEvent<'a>),
}

impl<'a> GlassesMsg<'a> {
    /// The one decode of a glasses message: its type, read once, matched once.
    pub fn decode(text: &'a str) -> Result<GlassesMsg<'a>, Malformed> {
        let ty = message_type(text)?;
        // The most frequent events first: a string `match` is tried arm by arm.
        let stream = match &*ty {
            "head_position" => Stream::HeadPosition,
            "button_press" => Stream::ButtonPress,
            "touch_event" => Stream::TouchEvent,
            "glasses_battery_update" => Stream::GlassesBatteryUpdate,
            "phone_battery_update" => Stream::PhoneBatteryUpdate,
            "VAD" => Stream::Vad,
            "phone_notification" => Stream::PhoneNotification,
            "phone_notification_dismissed" | "notification_dismissed" => {
                Stream::PhoneNotificationDismissed
            }
            "calendar_event" => Stream::CalendarEvent,
            "vps_coordinates" => Stream::VpsCoordinates,
            "transcription" => Stream::Transcription,
            "translation" => Stream::Translation,
            "audio_chunk" => Stream::AudioChunk,
            "open_dashboard" => Stream::OpenDashboard,
            "dashboard_state" => Stream::DashboardState,
            "video" => Stream::Video,
            "photo_request" => Stream::PhotoRequest,
            "managed_stream_status" => Stream::ManagedStreamStatus,
            "photo_taken" => Stream::PhotoTaken,
            "custom_message" => Stream::CustomMessage,
            "location_update" => {
                return Ok(GlassesMsg::Location(RawEvent {
                    ty: EventType::Stream(Stream::LocationUpdate),
                    text,
                }))
            }
            "glasses_connection_state" => {
                return Ok(GlassesMsg::ConnectionState(RawEvent {
                    ty: EventType::Stream(Stream::GlassesConnectionState),
                    text,
                }))
            }
            "core_status_update" => {
                return Ok(GlassesMsg::CoreStatus(RawEvent {
                    ty: EventType::Stream(Stream::CoreStatusUpdate),
                    text,
                }))
            }
            "connection_init" => return Ok(GlassesMsg::ConnectionInit),
            "start_app" => return Ok(GlassesMsg::StartApp),
            "stop_app" => return Ok(GlassesMsg::StopApp),
            "request_settings" | "settings_update_request" => {
                return Ok(GlassesMsg::RequestSettings)
            }
            "photo_response" => return Ok(GlassesMsg::Reply(RequestKind::Photo)),
            "audio_play_response" => return Ok(GlassesMsg::Reply(RequestKind::Audio)),
            "rgb_led_control_response" => return Ok(GlassesMsg::Reply(RequestKind::Led)),
            "rtmp_stream_status" => return Ok(GlassesMsg::Reply(RequestKind::Stream)),
            "keep_alive_ack" => return Ok(GlassesMsg::KeepAliveAck),
            _ => {
                return Ok(GlassesMsg::Event(RawEvent {
                    ty: EventType::Other(ty),
                    text,
                }))
            }
        };
        Ok(GlassesMsg::Event(RawEvent {
            ty: EventType::Stream(stream),
            text,
        }))
    }
}

/// The dashboard messages an app may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DashboardMsg {
    ContentUpdate,
    /// System apps only, as are the next two.
    ModeChange,
    SystemUpdate,
    AlwaysOnChange,
}

impl DashboardMsg {
    /// The message's `type` (for refusals that name it).
    pub fn name(self) -> &'static str {
        match self {
            DashboardMsg::ContentUpdate => "dashboard_content_update",
            DashboardMsg::ModeChange => "dashboard_mode_change",
            DashboardMsg::SystemUpdate => "dashboard_system_update",
            DashboardMsg::AlwaysOnChange => "dashboard_always_on_change",
        }
    }
}

/// A message from an app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppMsg<'a> {
    TpaConnectionInit,
    SubscriptionUpdate,
    /// `data_stream`: a transcript or translation published into the session.
    DataStream,
    DisplayEvent,
    Dashboard(DashboardMsg),
    /// A request to the glasses that waits for a reply (`photo_request`,
    /// `audio_play_request`, `rgb_led_control`, `location_poll_request`,
    /// `rtmp_stream_request`).
    Request(RequestKind),
    AudioStop,
    /// `rtmp_stream_stop`.
    StreamStop,
    /// `ownership_release`: the app's goodbye; the close that follows is not a drop.
    OwnershipRelease,
    /// `publish_unserved`: a translation publisher names the demanded pairs it cannot serve.
    PublishUnserved,
    /// A type the box does not act on (ignored, as the cloud ignores it).
    Other(Cow<'a, str>),
}

impl<'a> AppMsg<'a> {
    /// The one decode of an app message: its type, read once, matched once.
    pub fn decode(text: &'a str) -> Result<AppMsg<'a>, Malformed> {
        let ty = message_type(text)?;
        Ok(match &*ty {
            "data_stream" => AppMsg::DataStream,
            "display_event" => AppMsg::DisplayEvent,
            "dashboard_content_update" => AppMsg::Dashboard(DashboardMsg::ContentUpdate),
            "dashboard_mode_change" => AppMsg::Dashboard(DashboardMsg::ModeChange),
            "dashboard_system_update" => AppMsg::Dashboard(DashboardMsg::SystemUpdate),
            "dashboard_always_on_change" => AppMsg::Dashboard(DashboardMsg::AlwaysOnChange),
            "subscription_update" => AppMsg::SubscriptionUpdate,
            "tpa_connection_init" => AppMsg::TpaConnectionInit,
            "photo_request" => AppMsg::Request(RequestKind::Photo),
            "audio_play_request" => AppMsg::Request(RequestKind::Audio),
            "rgb_led_control" => AppMsg::Request(RequestKind::Led),
            "location_poll_request" => AppMsg::Request(RequestKind::Location),
            "rtmp_stream_request" => AppMsg::Request(RequestKind::Stream),
            "audio_stop_request" => AppMsg::AudioStop,
            "rtmp_stream_stop" => AppMsg::StreamStop,
            "ownership_release" => AppMsg::OwnershipRelease,
            "publish_unserved" => AppMsg::PublishUnserved,
            _ => AppMsg::Other(ty),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glasses(ty: &str) -> GlassesMsg<'static> {
        let text = format!(r#"{{"type":"{ty}","x":1}}"#).leak();
        GlassesMsg::decode(text).unwrap()
    }

    fn event(msg: &GlassesMsg<'static>) -> Option<RawEvent<'static>> {
        match msg {
            GlassesMsg::Event(e)
            | GlassesMsg::Location(e)
            | GlassesMsg::CoreStatus(e)
            | GlassesMsg::ConnectionState(e) => Some(e.clone()),
            _ => None,
        }
    }

    #[test]
    fn each_glasses_control_type_decodes_to_its_variant() {
        use RequestKind::*;
        for (ty, want) in [
            ("connection_init", GlassesMsg::ConnectionInit),
            ("start_app", GlassesMsg::StartApp),
            ("stop_app", GlassesMsg::StopApp),
            ("request_settings", GlassesMsg::RequestSettings),
            ("settings_update_request", GlassesMsg::RequestSettings),
            ("photo_response", GlassesMsg::Reply(Photo)),
            ("audio_play_response", GlassesMsg::Reply(Audio)),
            ("rgb_led_control_response", GlassesMsg::Reply(Led)),
            ("rtmp_stream_status", GlassesMsg::Reply(Stream)),
            ("keep_alive_ack", GlassesMsg::KeepAliveAck),
        ] {
            assert_eq!(glasses(ty), want, "{ty}");
        }
        let text = r#"{"type":"location_update","lat":1}"#;
        let loc = RawEvent {
            ty: EventType::Stream(super::Stream::LocationUpdate),
            text,
        };
        assert_eq!(GlassesMsg::decode(text), Ok(GlassesMsg::Location(loc)));
        let text = r#"{"type":"core_status_update","status":{}}"#;
        let core = RawEvent {
            ty: EventType::Stream(super::Stream::CoreStatusUpdate),
            text,
        };
        assert_eq!(GlassesMsg::decode(text), Ok(GlassesMsg::CoreStatus(core)));
    }

    /// Every stream a subscription names decodes, as a glasses type, to that stream (or to the
    /// control message of that name): the decode's `match` and [`Stream::name`] agree.
    #[test]
    fn every_stream_name_decodes_to_its_stream() {
        for s in Stream::ALL {
            assert_eq!(Stream::from_name(s.name()), Some(s));
            let msg = glasses(s.name());
            match event(&msg) {
                Some(e) => assert_eq!(e.ty, EventType::Stream(s), "{}", s.name()),
                None => assert!(
                    matches!(
                        s,
                        Stream::StartApp
                            | Stream::StopApp
                            | Stream::SettingsUpdateRequest
                            | Stream::PhotoResponse
                            | Stream::RtmpStreamStatus
                    ),
                    "{} decoded as {msg:?}",
                    s.name()
                ),
            }
        }
        let dismissed = event(&glasses("notification_dismissed")).unwrap();
        assert_eq!(
            dismissed.ty,
            EventType::Stream(Stream::PhoneNotificationDismissed)
        );
        assert_eq!(
            Stream::from_name("location_stream"),
            Some(Stream::LocationUpdate)
        );
        assert_eq!(Stream::from_name("augmentos"), None);
        assert_eq!(Stream::from_name("Button_press"), None);
    }

    #[test]
    fn an_unknown_glasses_type_passes_through_with_its_type() {
        let text = r#"{"type":"vendor_thing","data":[1,2]}"#;
        let Ok(GlassesMsg::Event(e)) = GlassesMsg::decode(text) else {
            panic!("not an event");
        };
        assert!(matches!(
            e.ty,
            EventType::Other(Cow::Borrowed("vendor_thing"))
        ));
        assert!(std::ptr::eq(e.text, text), "the original text, not a copy");
        assert_eq!(e.stream(), None);
        // Escaped: unescaped once, owned; a known name written with escapes is still known.
        let Ok(GlassesMsg::Event(e)) = GlassesMsg::decode(r#"{"type":"a\"b"}"#) else {
            panic!("not an event");
        };
        assert_eq!(e.ty, EventType::Other(Cow::Owned("a\"b".into())));
        let Ok(GlassesMsg::Event(e)) = GlassesMsg::decode(r#"{"type":"button\u005fpress"}"#) else {
            panic!("not an event");
        };
        assert_eq!(e.stream(), Some(Stream::ButtonPress));
        assert_eq!(GlassesMsg::decode("{}"), Err(Malformed::NoType));
        assert_eq!(GlassesMsg::decode("[]"), Err(Malformed::NotAnObject));
    }

    #[test]
    fn each_app_type_decodes_to_its_variant() {
        use RequestKind::*;
        for (ty, want) in [
            ("tpa_connection_init", AppMsg::TpaConnectionInit),
            ("subscription_update", AppMsg::SubscriptionUpdate),
            ("data_stream", AppMsg::DataStream),
            ("display_event", AppMsg::DisplayEvent),
            (
                "dashboard_content_update",
                AppMsg::Dashboard(DashboardMsg::ContentUpdate),
            ),
            (
                "dashboard_mode_change",
                AppMsg::Dashboard(DashboardMsg::ModeChange),
            ),
            (
                "dashboard_system_update",
                AppMsg::Dashboard(DashboardMsg::SystemUpdate),
            ),
            (
                "dashboard_always_on_change",
                AppMsg::Dashboard(DashboardMsg::AlwaysOnChange),
            ),
            ("photo_request", AppMsg::Request(Photo)),
            ("audio_play_request", AppMsg::Request(Audio)),
            ("rgb_led_control", AppMsg::Request(Led)),
            ("location_poll_request", AppMsg::Request(Location)),
            ("rtmp_stream_request", AppMsg::Request(Stream)),
            ("audio_stop_request", AppMsg::AudioStop),
            ("rtmp_stream_stop", AppMsg::StreamStop),
            ("ownership_release", AppMsg::OwnershipRelease),
            ("publish_unserved", AppMsg::PublishUnserved),
            ("button_press", AppMsg::Other("button_press".into())),
        ] {
            let text = format!(r#"{{"type":"{ty}"}}"#);
            assert_eq!(AppMsg::decode(&text), Ok(want), "{ty}");
            if let Ok(AppMsg::Dashboard(d)) = AppMsg::decode(&text) {
                assert_eq!(d.name(), ty);
            }
        }
        assert_eq!(AppMsg::decode("nope"), Err(Malformed::NotAnObject));
    }
}
