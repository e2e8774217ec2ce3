//! Core layer (sans-IO), part of the hub: a session's subscription index — which apps want a
//! stream, and under which `streamType` each must receive it.
//!
//! SDK 2.1.29 delivers a `data_stream` only when its `streamType` is exactly one of the app's
//! handler keys, so every route remembers the app's own subscription string (query included) and
//! delivers under it. A subscription is indexed by its stream (`transcription`, `touch_event`,
//! …) and a qualifier (the language, language pair or gesture; empty for plain streams), so an
//! event is matched by one hash lookup and a short scan, without allocating.
//!
//! Streams are [`Stream`] values, as the glasses message was decoded into ([`GlassesMsg`]): an
//! event's stream is found by comparing those values, never its type as text. A subscription
//! to a stream no glasses event is decoded as (`augmentos:<key>`, which the device settings
//! answer, not the relay) has no route: no event could match it.
//!
//! Invariants: the index is rebuilt from the apps' subscription lists whenever one changes
//! (rare), never patched; streams are kept in a short list searched linearly (a session
//! subscribes to a handful, and comparing a few short strings beats hashing one); an event
//! reaches an app once per subscription it matches (twice only
//! if the app subscribed under two matching strings), and a wildcard (`all`, `*`) subscriber
//! gets it once more only if no specific subscription of that app matched.

#[cfg(doc)]
use crate::protocol::message::GlassesMsg;
use crate::protocol::message::Stream;

/// One subscription of one app.
#[derive(Debug)]
pub struct Route {
    pub app: usize,
    /// The qualifier the subscription names ("" for a plain stream, or for `touch_event`).
    qualifier: Box<str>,
    /// The app's subscription string as a JSON string literal, quotes included: the
    /// `streamType` it is delivered under.
    pub stream_json: Box<[u8]>,
}

/// The subscription index of one session.
#[derive(Debug, Default)]
pub struct Routes {
    by_stream: Vec<(Stream, Vec<Route>)>,
    /// Apps subscribed to `all` or `*`.
    wildcard: Vec<usize>,
}

/// What an event is, for matching: its stream and qualifier.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    /// A glasses event of this stream (`touch_event` carries its gesture instead).
    Plain(Stream),
    /// A glasses event of a type no subscription names: for wildcard subscribers only.
    Other,
    Touch {
        gesture: &'a str,
    },
    Transcription {
        language: &'a str,
    },
    Translation {
        from: &'a str,
        to: &'a str,
    },
}

impl Event<'_> {
    /// The base stream, whose routes it is matched against.
    pub fn base(&self) -> Option<Stream> {
        match self {
            Event::Plain(s) => Some(*s),
            Event::Other => None,
            Event::Touch { .. } => Some(Stream::TouchEvent),
            Event::Transcription { .. } => Some(Stream::Transcription),
            Event::Translation { .. } => Some(Stream::Translation),
        }
    }
}

/// Split a subscription string into (stream, qualifier) for the index; `None` for wildcards.
fn key_of(sub: &str) -> Option<(&str, &str)> {
    let base = sub.split('?').next().unwrap_or(sub);
    match base {
        "all" | "*" => None,
        "location_stream" => Some(("location_update", "")),
        "notification_dismissed" => Some(("phone_notification_dismissed", "")),
        _ => Some(base.split_once(':').unwrap_or((base, ""))),
    }
}

impl Routes {
    /// Build the index from each app's subscription list.
    pub fn build<'a>(apps: impl Iterator<Item = (usize, &'a [String])>) -> Routes {
        let mut r = Routes::default();
        for (app, subs) in apps {
            for sub in subs {
                match key_of(sub) {
                    None => {
                        if !r.wildcard.contains(&app) {
                            r.wildcard.push(app);
                        }
                    }
                    Some((name, qualifier)) => {
                        let Some(stream) = Stream::from_name(name) else {
                            continue;
                        };
                        let stream_json = serde_json::to_vec(sub).unwrap_or_default();
                        let at = match r.by_stream.iter().position(|(s, _)| *s == stream) {
                            Some(at) => at,
                            None => {
                                r.by_stream.push((stream, Vec::new()));
                                r.by_stream.len() - 1
                            }
                        };
                        r.by_stream[at].1.push(Route {
                            app,
                            qualifier: qualifier.into(),
                            stream_json: stream_json.into_boxed_slice(),
                        });
                    }
                }
            }
        }
        // Kept for the session's life: no room for subscriptions that are not there.
        r.by_stream.shrink_to_fit();
        for (_, routes) in &mut r.by_stream {
            routes.shrink_to_fit();
        }
        r.wildcard.shrink_to_fit();
        r
    }

    /// Room held beyond what the index uses (entries of spare capacity, all lists together).
    #[cfg(test)]
    pub fn spare(&self) -> usize {
        let spare = |cap: usize, len: usize| cap - len;
        spare(self.by_stream.capacity(), self.by_stream.len())
            + spare(self.wildcard.capacity(), self.wildcard.len())
            + self
                .by_stream
                .iter()
                .map(|(_, r)| spare(r.capacity(), r.len()))
                .sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.by_stream.is_empty() && self.wildcard.is_empty()
    }

    fn routes_of(&self, stream: Option<Stream>) -> Option<&[Route]> {
        let stream = stream?;
        self.by_stream
            .iter()
            .find(|(s, _)| *s == stream)
            .map(|(_, r)| &r[..])
    }

    /// Whether any app subscribed to the stream named `stream` (any qualifier), wildcards
    /// aside.
    pub fn wants(&self, stream: &str) -> bool {
        self.routes_of(Stream::from_name(stream)).is_some()
    }

    /// Every (route) matching `event`, then every wildcard app that no route of its own
    /// matched; `f` gets the app and the `streamType` JSON literal to deliver under (`None`:
    /// the event's base stream).
    pub fn each(&self, event: Event<'_>, mut f: impl FnMut(usize, Option<&[u8]>)) {
        let mut matched_any = false;
        let routes = self.routes_of(event.base());
        if let Some(routes) = routes {
            for r in routes {
                if matches(event, &r.qualifier) {
                    matched_any = true;
                    f(r.app, Some(&r.stream_json));
                }
            }
        }
        for &app in &self.wildcard {
            let own = matched_any
                && routes.is_some_and(|routes| {
                    routes
                        .iter()
                        .any(|r| r.app == app && matches(event, &r.qualifier))
                });
            if !own {
                f(app, None);
            }
        }
    }
}

#[inline]
fn matches(event: Event<'_>, qualifier: &str) -> bool {
    match event {
        Event::Plain(_) | Event::Other => qualifier.is_empty(),
        Event::Touch { gesture } => qualifier.is_empty() || qualifier == gesture,
        Event::Transcription { language } => qualifier == language,
        Event::Translation { from, to } => match qualifier.split_once("-to-") {
            Some((src, tgt)) => tgt == to && (src == from || src == "all"),
            None => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliveries(r: &Routes, e: Event<'_>) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        r.each(e, |app, s| {
            let s = s.map_or_else(
                || format!("*{}", e.base().map_or("?", Stream::name)),
                |s| serde_json::from_slice::<String>(s).unwrap(),
            );
            out.push((app, s));
        });
        out.sort();
        out
    }

    #[test]
    fn an_event_no_subscription_names_reaches_wildcards_only() {
        let subs: Vec<(usize, Vec<String>)> = vec![
            (0, vec!["augmentos:brightness".into()]),
            (1, vec!["*".into()]),
        ];
        let r = Routes::build(subs.iter().map(|(a, s)| (*a, &s[..])));
        assert_eq!(deliveries(&r, Event::Other), vec![(1, "*?".into())]);
        let alone = Routes::build(subs[..1].iter().map(|(a, s)| (*a, &s[..])));
        assert!(
            alone.is_empty(),
            "augmentos:<key> is answered by the settings, not routed"
        );
    }

    #[test]
    fn an_index_holds_no_room_beyond_its_subscriptions() {
        let subs: Vec<(usize, Vec<String>)> = vec![
            (0, vec!["button_press".into()]),
            (1, vec!["button_press".into(), "all".into()]),
            (2, vec!["transcription:en-US".into()]),
        ];
        let r = Routes::build(subs.iter().map(|(a, s)| (*a, &s[..])));
        assert_eq!(r.spare(), 0);
    }

    #[test]
    fn each_subscriber_gets_its_own_stream_string() {
        let subs: Vec<(usize, Vec<String>)> = vec![
            (0, vec!["transcription:en-US".into(), "touch_event".into()]),
            (
                1,
                vec!["transcription:en-US?hints=ja%2Cfr".into(), "all".into()],
            ),
            (
                2,
                vec![
                    "translation:all-to-en-US".into(),
                    "touch_event:double_tap".into(),
                ],
            ),
            (
                3,
                vec![
                    "translation:es-ES-to-en-US".into(),
                    "location_stream".into(),
                ],
            ),
            (
                4,
                vec![
                    "notification_dismissed".into(),
                    "touch_event".into(),
                    "touch_event:double_tap".into(),
                ],
            ),
        ];
        let r = Routes::build(subs.iter().map(|(a, s)| (*a, &s[..])));
        assert_eq!(
            deliveries(&r, Event::Transcription { language: "en-US" }),
            vec![
                (0, "transcription:en-US".into()),
                (1, "transcription:en-US?hints=ja%2Cfr".into())
            ]
        );
        assert_eq!(
            deliveries(&r, Event::Transcription { language: "fr-FR" }),
            vec![(1, "*transcription".into())]
        );
        assert_eq!(
            deliveries(
                &r,
                Event::Translation {
                    from: "es-ES",
                    to: "en-US"
                }
            ),
            vec![
                (1, "*translation".into()),
                (2, "translation:all-to-en-US".into()),
                (3, "translation:es-ES-to-en-US".into())
            ]
        );
        assert_eq!(
            deliveries(
                &r,
                Event::Touch {
                    gesture: "double_tap"
                }
            ),
            vec![
                (0, "touch_event".into()),
                (1, "*touch_event".into()),
                (2, "touch_event:double_tap".into()),
                (4, "touch_event".into()),
                (4, "touch_event:double_tap".into())
            ]
        );
        assert_eq!(
            deliveries(&r, Event::Plain(Stream::LocationUpdate)),
            vec![
                (1, "*location_update".into()),
                (3, "location_stream".into())
            ]
        );
        assert_eq!(
            deliveries(&r, Event::Plain(Stream::PhoneNotificationDismissed)),
            vec![
                (1, "*phone_notification_dismissed".into()),
                (4, "notification_dismissed".into())
            ]
        );
        assert!(r.wants("transcription") && r.wants("translation") && !r.wants("audio_chunk"));
    }
}
