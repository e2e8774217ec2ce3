//! Core layer (sans-IO), owned by the hub, one per session: the dashboard of PROTOCOL §11 —
//! what apps wrote to it, and the layouts composed from that.
//!
//! Owns the dashboard mode (`main` or `expanded`), the always-on flag, the four system sections
//! (set by system apps through `dashboard_system_update`) and each app's latest content per
//! mode. It composes layouts; it never sends: the hub hands the composed layout to the display
//! manager's dashboard (or always-on) view as a display of the box.
//!
//! Composition (PROTOCOL §11):
//! - main mode: `double_text_wall`; `topText` = topLeft [+ "\n" + bottomLeft];
//!   `bottomText` = topRight + "\n" + (bottomRight + "\n\n" if set) + the newest app content
//!   written for `main`;
//! - expanded mode: `text_wall` `"<topLeft> | <topRight>\n<newest expanded content>"`, or
//!   "…\nNo expanded content available";
//! - always-on: `dashboard_card` with `leftText` = topLeft and `rightText` = the newest main
//!   content (or topRight when there is none); when it is switched off, an empty card with
//!   `durationMs: 0`.
//!
//! Invariants: at most one content entry per app and mode (latest wins); "newest" is by the
//! order updates arrived, never by a clock; an app's content is gone once `remove_app` ran.

use serde_json::json;

use super::display::AppId;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Main,
    Expanded,
}

impl Mode {
    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "main" => Some(Mode::Main),
            "expanded" => Some(Mode::Expanded),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Main => "main",
            Mode::Expanded => "expanded",
        }
    }
}

/// The four system sections, in the SDK's names.
pub const SECTIONS: [&str; 4] = ["topLeft", "topRight", "bottomLeft", "bottomRight"];

#[derive(Debug)]
struct Content {
    app: AppId,
    mode: Mode,
    text: String,
    seq: u64,
}

#[derive(Debug)]
pub struct Dashboard {
    mode: Mode,
    always_on: bool,
    sections: [String; 4],
    content: Vec<Content>,
    seq: u64,
}

impl Default for Dashboard {
    fn default() -> Self {
        Dashboard {
            mode: Mode::Main,
            always_on: false,
            sections: Default::default(),
            content: Vec::new(),
            seq: 0,
        }
    }
}

impl Dashboard {
    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn always_on(&self) -> bool {
        self.always_on
    }

    /// `dashboard_content_update`: `text` for each of `modes`.
    pub fn content_update(&mut self, app: AppId, text: &str, modes: &[Mode]) {
        for &mode in modes {
            self.seq += 1;
            let seq = self.seq;
            match self
                .content
                .iter_mut()
                .find(|c| c.app == app && c.mode == mode)
            {
                Some(c) => {
                    c.text.clear();
                    c.text.push_str(text);
                    c.seq = seq;
                }
                None => self.content.push(Content {
                    app,
                    mode,
                    text: text.to_string(),
                    seq,
                }),
            }
        }
    }

    /// `dashboard_system_update`; false for an unknown section.
    pub fn system_update(&mut self, section: &str, text: &str) -> bool {
        match SECTIONS.iter().position(|s| *s == section) {
            Some(i) => {
                self.sections[i] = text.to_string();
                true
            }
            None => false,
        }
    }

    /// True when the mode changed.
    pub fn set_mode(&mut self, mode: Mode) -> bool {
        std::mem::replace(&mut self.mode, mode) != mode
    }

    /// True when the flag changed.
    pub fn set_always_on(&mut self, on: bool) -> bool {
        std::mem::replace(&mut self.always_on, on) != on
    }

    /// Forget `app`'s content; true when it had any.
    pub fn remove_app(&mut self, app: AppId) -> bool {
        let before = self.content.len();
        self.content.retain(|c| c.app != app);
        self.content.len() != before
    }

    fn newest(&self, mode: Mode) -> Option<&str> {
        self.content
            .iter()
            .filter(|c| c.mode == mode)
            .max_by_key(|c| c.seq)
            .map(|c| c.text.as_str())
    }

    /// The dashboard view's layout for the current mode, as JSON text.
    pub fn compose(&self) -> String {
        let [tl, tr, bl, br] = &self.sections;
        match self.mode {
            Mode::Main => {
                let mut top = tl.clone();
                if !bl.is_empty() {
                    top.push('\n');
                    top.push_str(bl);
                }
                let mut bottom = format!("{tr}\n");
                if !br.is_empty() {
                    bottom.push_str(br);
                    bottom.push_str("\n\n");
                }
                bottom.push_str(self.newest(Mode::Main).unwrap_or(""));
                json!({"layoutType": "double_text_wall", "topText": top, "bottomText": bottom})
                    .to_string()
            }
            Mode::Expanded => {
                let body = self
                    .newest(Mode::Expanded)
                    .unwrap_or("No expanded content available");
                json!({"layoutType": "text_wall", "text": format!("{tl} | {tr}\n{body}")})
                    .to_string()
            }
        }
    }

    /// The always-on view's layout (an empty card when it is off).
    pub fn compose_always_on(&self) -> String {
        let (left, right) = if self.always_on {
            let [tl, tr, ..] = &self.sections;
            (tl.as_str(), self.newest(Mode::Main).unwrap_or(tr))
        } else {
            ("", "")
        };
        json!({"layoutType": "dashboard_card", "leftText": left, "rightText": right}).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn v(s: String) -> Value {
        serde_json::from_str(&s).unwrap()
    }

    #[test]
    fn main_mode_composes_sections_and_the_newest_content() {
        let mut d = Dashboard::default();
        assert_eq!(
            v(d.compose()),
            json!({"layoutType": "double_text_wall", "topText": "", "bottomText": "\n"})
        );
        d.system_update("topLeft", "12:00");
        d.system_update("topRight", "80%");
        d.content_update(1, "one", &[Mode::Main]);
        d.content_update(2, "two", &[Mode::Main, Mode::Expanded]);
        assert_eq!(v(d.compose())["topText"], "12:00");
        assert_eq!(v(d.compose())["bottomText"], "80%\ntwo");
        d.system_update("bottomLeft", "Mon");
        d.system_update("bottomRight", "3 new");
        d.content_update(1, "one again", &[Mode::Main]);
        assert_eq!(v(d.compose())["topText"], "12:00\nMon");
        assert_eq!(v(d.compose())["bottomText"], "80%\n3 new\n\none again");
        assert!(d.remove_app(1));
        assert_eq!(v(d.compose())["bottomText"], "80%\n3 new\n\ntwo");
        assert!(!d.system_update("middle", "x"));
    }

    #[test]
    fn expanded_mode_and_always_on() {
        let mut d = Dashboard::default();
        d.system_update("topLeft", "L");
        d.system_update("topRight", "R");
        assert!(d.set_mode(Mode::Expanded));
        assert!(!d.set_mode(Mode::Expanded));
        assert_eq!(
            v(d.compose()),
            json!({"layoutType": "text_wall", "text": "L | R\nNo expanded content available"})
        );
        d.content_update(3, "big", &[Mode::Expanded]);
        assert_eq!(v(d.compose())["text"], "L | R\nbig");
        assert!(d.set_always_on(true));
        assert_eq!(v(d.compose_always_on())["rightText"], "R");
        d.content_update(3, "m", &[Mode::Main]);
        assert_eq!(
            v(d.compose_always_on()),
            json!({"layoutType": "dashboard_card", "leftText": "L", "rightText": "m"})
        );
        d.set_always_on(false);
        assert_eq!(v(d.compose_always_on())["leftText"], "");
    }
}
