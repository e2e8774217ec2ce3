//! Protocol layer (values): what each known glasses model can do, as SDK 2.1.29's
//! `Capabilities` object (`session.capabilities`; in `tpa_connection_ack` and
//! `capabilities_update`). The models and their hardware are those the MentraOS cloud keeps
//! profiles for (Even Realities G1, Mentra Live, Vuzix Z100, and the Mentra Mach1 and the
//! simulated glasses, which show the Z100's display); the table is ours.
//!
//! Invariants: every profile has every field of the SDK type (`has*` booleans, the detail
//! objects or `null`, `power`, `hasWifi`); a model is found by its name compared without case
//! and spaces ("Mentra Mach1" = "mentra mach 1"); a model not in the table gets what its glasses
//! report (a `capabilities` object sent with the model name), else [`conservative`].

use serde_json::{json, Value};

/// A model's profile: display, microphone, camera, speaker, IMU, button, light, Wi-Fi.
struct Profile {
    name: &'static str,
    display: Option<fn() -> Value>,
    microphone: Option<fn() -> Value>,
    camera: Option<fn() -> Value>,
    speaker: Option<fn() -> Value>,
    imu: Option<fn() -> Value>,
    button: Option<fn() -> Value>,
    light: Option<fn() -> Value>,
    wifi: bool,
}

fn g1_display() -> Value {
    json!({"count": 2, "isColor": false, "color": "green", "canDisplayBitmap": true,
        "resolution": {"width": 640, "height": 200}, "fieldOfView": {"horizontal": 25},
        "maxTextLines": 5, "adjustBrightness": true})
}

fn z100_display() -> Value {
    json!({"count": 1, "isColor": false, "color": "green", "canDisplayBitmap": false,
        "resolution": {"width": 640, "height": 480}, "fieldOfView": {"horizontal": 30},
        "maxTextLines": 7, "adjustBrightness": true})
}

fn one_mic() -> Value {
    json!({"count": 1, "hasVAD": false})
}

fn one_mic_vad() -> Value {
    json!({"count": 1, "hasVAD": true})
}

fn live_camera() -> Value {
    let res = |w: u32, h: u32| json!({"width": w, "height": h});
    json!({"resolution": res(1920, 1080), "hasHDR": false, "hasFocus": true,
        "video": {"canRecord": true, "canStream": true, "supportedStreamTypes": ["rtmp"],
            "supportedResolutions": [res(1920, 1080), res(1280, 720), res(640, 480)]}})
}

fn one_speaker() -> Value {
    json!({"count": 1, "isPrivate": false})
}

fn six_axis_imu() -> Value {
    json!({"axisCount": 6, "hasAccelerometer": true, "hasCompass": false, "hasGyroscope": true})
}

fn one_button() -> Value {
    json!({"count": 1, "buttons": [{"type": "press",
        "events": ["press", "double_press", "long_press"], "isCapacitive": false}]})
}

fn live_lights() -> Value {
    json!({"count": 2, "lights": [
        {"id": "privacy", "purpose": "privacy", "isFullColor": false, "color": "white",
            "position": "front_facing"},
        {"id": "user_feedback", "purpose": "user_feedback", "isFullColor": true,
            "color": "rgb", "position": "user_facing"}]})
}

const DISPLAY_ONLY: Profile = Profile {
    name: "",
    display: Some(z100_display),
    microphone: None,
    camera: None,
    speaker: None,
    imu: None,
    button: None,
    light: None,
    wifi: false,
};

const MODELS: &[Profile] = &[
    Profile {
        name: "Even Realities G1",
        display: Some(g1_display),
        microphone: Some(one_mic),
        ..DISPLAY_ONLY
    },
    Profile {
        name: "Mentra Live",
        display: None,
        microphone: Some(one_mic_vad),
        camera: Some(live_camera),
        speaker: Some(one_speaker),
        imu: Some(six_axis_imu),
        button: Some(one_button),
        light: Some(live_lights),
        wifi: true,
    },
    Profile {
        name: "Vuzix Z100",
        ..DISPLAY_ONLY
    },
    Profile {
        name: "Mentra Mach1",
        ..DISPLAY_ONLY
    },
    Profile {
        name: "Simulated Glasses",
        ..DISPLAY_ONLY
    },
];

impl Profile {
    fn capabilities(&self, model: &str) -> Value {
        let part = |p: Option<fn() -> Value>| p.map_or(Value::Null, |f| f());
        json!({
            "modelName": model,
            "hasCamera": self.camera.is_some(),
            "camera": part(self.camera),
            "hasDisplay": self.display.is_some(),
            "display": part(self.display),
            "hasMicrophone": self.microphone.is_some(),
            "microphone": part(self.microphone),
            "hasSpeaker": self.speaker.is_some(),
            "speaker": part(self.speaker),
            "hasIMU": self.imu.is_some(),
            "imu": part(self.imu),
            "hasButton": self.button.is_some(),
            "button": part(self.button),
            "hasLight": self.light.is_some(),
            "light": part(self.light),
            "power": {"hasExternalBattery": false},
            "hasWifi": self.wifi,
        })
    }
}

/// Names compared without case and spaces.
fn same_model(a: &str, b: &str) -> bool {
    let squeeze = |s: &str| {
        s.chars()
            .filter(|c| !c.is_whitespace())
            .flat_map(char::to_lowercase)
            .collect::<String>()
    };
    squeeze(a) == squeeze(b)
}

/// The profile of a known model (under the table's spelling of its name), or `None`.
pub fn known(model: &str) -> Option<Value> {
    MODELS
        .iter()
        .find(|p| same_model(p.name, model))
        .map(|p| p.capabilities(p.name))
}

/// What the box says before the glasses named their model, and for a model it has no profile
/// for that reported none: a display (the box exists to show text) and a microphone (the
/// phone's, at least), nothing that would make an app ask for hardware that may not be there —
/// no camera, speaker, IMU, button, light or Wi-Fi. `modelName` is the reported name, or
/// `"unknown"`.
pub fn conservative(model: Option<&str>) -> Value {
    let profile = Profile {
        microphone: Some(one_mic),
        display: Some(|| {
            json!({"count": 1, "isColor": false, "canDisplayBitmap": false,
                "adjustBrightness": false})
        }),
        ..DISPLAY_ONLY
    };
    profile.capabilities(model.unwrap_or("unknown"))
}

/// The capabilities of a model the table does not know, from a `capabilities` object its
/// glasses sent: every `has*` flag that is a boolean is taken, with its detail object when it
/// is one; the rest stays conservative. `modelName` is the reported name.
pub fn reported(model: &str, caps: &Value) -> Value {
    let mut out = conservative(Some(model));
    let (Some(o), Value::Object(given)) = (out.as_object_mut(), caps) else {
        return out;
    };
    for (flag, detail) in [
        ("hasCamera", "camera"),
        ("hasDisplay", "display"),
        ("hasMicrophone", "microphone"),
        ("hasSpeaker", "speaker"),
        ("hasIMU", "imu"),
        ("hasButton", "button"),
        ("hasLight", "light"),
        ("hasWifi", ""),
    ] {
        let Some(&Value::Bool(has)) = given.get(flag) else {
            continue;
        };
        o.insert(flag.into(), Value::Bool(has));
        if detail.is_empty() {
            continue;
        }
        let d = match given.get(detail) {
            Some(d @ Value::Object(_)) if has => d.clone(),
            _ => Value::Null,
        };
        o.insert(detail.into(), d);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIELDS: [&str; 17] = [
        "modelName",
        "hasCamera",
        "camera",
        "hasDisplay",
        "display",
        "hasMicrophone",
        "microphone",
        "hasSpeaker",
        "speaker",
        "hasIMU",
        "imu",
        "hasButton",
        "button",
        "hasLight",
        "light",
        "power",
        "hasWifi",
    ];

    #[test]
    fn every_profile_has_every_sdk_field_and_agrees_with_itself() {
        let mut all: Vec<Value> = MODELS.iter().map(|p| known(p.name).unwrap()).collect();
        all.push(conservative(None));
        for caps in &all {
            let o = caps.as_object().unwrap();
            assert_eq!(o.len(), FIELDS.len(), "{caps}");
            for f in FIELDS {
                assert!(o.contains_key(f), "{f} missing in {caps}");
            }
            for (flag, detail) in [("hasCamera", "camera"), ("hasDisplay", "display")] {
                assert_eq!(caps[flag].as_bool().unwrap(), caps[detail].is_object());
            }
        }
    }

    #[test]
    fn models_are_found_without_case_or_spaces() {
        let live = known("mentra live").unwrap();
        assert_eq!(live["modelName"], "Mentra Live");
        assert_eq!(live["hasCamera"], true);
        assert_eq!(live["hasDisplay"], false);
        assert_eq!(live["camera"]["video"]["supportedStreamTypes"][0], "rtmp");
        let g1 = known("Even Realities G1").unwrap();
        assert_eq!(
            (g1["hasCamera"].clone(), g1["hasSpeaker"].clone()),
            (false.into(), false.into())
        );
        assert_eq!(g1["display"]["resolution"]["height"], 200);
        assert_eq!(known("Mentra Mach 1").unwrap()["modelName"], "Mentra Mach1");
        assert_eq!(known("Vuzix Z100 Pro"), None);
        assert_eq!(known(""), None);
    }

    #[test]
    fn an_unknown_model_gets_what_it_reports_else_the_conservative_profile() {
        let plain = conservative(Some("Acme Specs"));
        assert_eq!(plain["modelName"], "Acme Specs");
        assert_eq!(plain["hasCamera"], false);
        assert_eq!(plain["hasDisplay"], true);
        let caps = json!({"modelName": "liar", "hasCamera": true, "camera": {"x": 1},
            "hasSpeaker": "yes", "hasDisplay": false, "display": {"count": 9}, "hasWifi": true});
        let got = reported("Acme Specs", &caps);
        assert_eq!(
            got["modelName"], "Acme Specs",
            "the reported name, not the object's"
        );
        assert_eq!(got["camera"], json!({"x": 1}));
        assert_eq!(got["hasSpeaker"], false, "not a boolean: conservative");
        assert_eq!(got["hasDisplay"], false);
        assert_eq!(
            got["display"],
            Value::Null,
            "no detail for hardware it has not"
        );
        assert_eq!(got["hasWifi"], true);
        assert_eq!(reported("Acme Specs", &json!([1])), plain);
    }
}
