//! Core layer (sans-IO), part of the server composition: speech for the SDK's `audio.speak`,
//! `GET /api/tts?text=…&voice_id=…` (SDK 2.1.29 sends the glasses that URL as the `audioUrl`
//! of an `audio_play_request`; the phone fetches it).
//!
//! Owns the request checks, the voice table, the cache of finished WAVs and the syntheses in
//! flight with the HTTP connections waiting for each. It synthesises nothing itself: a request
//! that misses the cache becomes a [`TtsJob`] the shell takes with [`Tts::poll_job`] and runs
//! off the event loop (`reactor/tts.rs`, `espeak-ng` in a worker thread), and hands back with
//! [`Tts::on_done`]; every connection waiting for it is then answered.
//!
//! Rules (README, "Speech"):
//! - the text (form-decoded: `+` is a space) has its control characters replaced by spaces and
//!   is trimmed; empty → 400 `TTS_TEXT_MISSING`, more than `max_chars` characters → 413
//!   `TTS_TEXT_TOO_LONG`, a malformed escape → 400 `BAD_QUERY`. Markup is not interpreted
//!   (espeak-ng runs without `-m`): SSML-like text is read as text;
//! - `voice_id` (the SDK's ElevenLabs ids) maps through the configured `voices` table to an
//!   espeak-ng voice; anything else, or none, gets `default_voice` (counted as unknown);
//! - the same (voice, text) in flight is joined, not synthesised twice; at most
//!   `max_concurrent` distinct syntheses run at once, one more is refused at once with 503
//!   `TTS_BUSY` and `Retry-After: 1` (a phone asked to play now is better told than queued);
//! - answers are WAV (`audio/wav`, 22 050 Hz 16-bit mono, what espeak-ng writes natively: no
//!   encoder is needed, and every phone plays it), with the streaming header's sizes made exact;
//! - a failure is a JSON error: 503 `TTS_UNAVAILABLE` (espeak-ng missing), 504 `TTS_TIMEOUT`,
//!   500 `TTS_FAILED` (no audio came out, e.g. an unknown espeak voice in the config).
//!
//! Invariants: memory is bounded (cache by `cache_bytes`, waiters by the connection caps, jobs
//! by `max_concurrent`); a connection gone before its answer is skipped (ids carry a
//! generation); nothing reads a clock (the shell measures each synthesis and reports it).

use super::metrics::Family;
use crate::http::percent_decode;
use crate::net::{ConnId, Net, Outbox, Phase};
use crate::time::Now;
use std::sync::Arc;
use std::time::Duration;

/// What the config sets (README, the `tts` key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtsConfig {
    /// The espeak-ng program (a path or a name looked up in `PATH`).
    pub command: String,
    /// Characters of text per request, after cleaning.
    pub max_chars: usize,
    /// Syntheses running at once (the worker's threads).
    pub max_concurrent: usize,
    /// Bytes of finished WAVs kept for repeats.
    pub cache_bytes: usize,
    /// A synthesis running longer is killed and answered 504.
    pub timeout: Duration,
    /// The espeak-ng voice for requests without a known `voice_id`.
    pub default_voice: String,
    /// `voice_id` → espeak-ng voice.
    pub voices: Vec<(String, String)>,
}

impl Default for TtsConfig {
    fn default() -> Self {
        TtsConfig {
            command: "espeak-ng".into(),
            max_chars: 500,
            max_concurrent: 2,
            cache_bytes: 8 << 20,
            timeout: Duration::from_secs(10),
            default_voice: "en-us".into(),
            voices: Vec::new(),
        }
    }
}

/// Whether `v` may be given to espeak-ng as a voice name: letters, digits, `-`, `_`, `+`,
/// `/`, starting with a letter or digit (never an option), at most 64 bytes.
pub fn valid_voice(v: &str) -> bool {
    v.len() <= 64
        && v.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'+' | b'/'))
}

/// One synthesis for the shell: speak `text` with the espeak-ng `voice`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtsJob {
    pub id: u64,
    pub voice: String,
    pub text: String,
}

/// Why a synthesis gave no audio.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TtsFailure {
    /// The program could not be started (not installed): the message says what.
    Unavailable(String),
    /// Killed after the timeout.
    TimedOut,
    /// It ran but wrote no usable audio (its stderr, shortened).
    Failed(String),
}

/// What the shell reports for a job: the WAV bytes or the failure, and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TtsDone {
    pub id: u64,
    pub result: Result<Vec<u8>, TtsFailure>,
    pub took: Duration,
}

#[derive(Debug, Default, Clone)]
pub struct TtsCounters {
    pub requests: u64,
    pub cache_hits: u64,
    /// Requests that joined a synthesis already running for the same text and voice.
    pub joined: u64,
    pub syntheses: u64,
    pub synthesis_failures: u64,
    pub unknown_voices: u64,
    /// Characters synthesised and the time it took (the shell's measure).
    pub chars_synthesised: u64,
    pub synthesis_us: u64,
    /// Refusals by code.
    pub refused: [u64; REFUSALS.len()],
}

/// The codes of requests refused before any synthesis.
const REFUSALS: [&str; 4] = [
    "TTS_TEXT_MISSING",
    "TTS_TEXT_TOO_LONG",
    "BAD_QUERY",
    "TTS_BUSY",
];

struct Running {
    id: u64,
    key: String,
    chars: usize,
    waiters: Vec<ConnId>,
}

pub struct Tts {
    cfg: TtsConfig,
    /// Finished WAVs, least recently used first, keyed by `voice \n text`.
    cache: Vec<(String, Arc<[u8]>)>,
    cached_bytes: usize,
    running: Vec<Running>,
    jobs: Vec<TtsJob>,
    next_id: u64,
    pub counters: TtsCounters,
}

/// How long past the synthesis timeout a waiting connection is kept (the shell's answer for a
/// killed synthesis arrives first).
const WAIT_MARGIN: Duration = Duration::from_secs(2);

impl Tts {
    pub fn new(cfg: TtsConfig) -> Tts {
        Tts {
            cfg,
            cache: Vec::new(),
            cached_bytes: 0,
            running: Vec::new(),
            jobs: Vec::new(),
            next_id: 0,
            counters: TtsCounters::default(),
        }
    }

    pub fn config(&self) -> &TtsConfig {
        &self.cfg
    }

    /// Bytes held by the cache (never above `cache_bytes`).
    pub fn cached_bytes(&self) -> usize {
        self.cached_bytes
    }

    /// A synthesis the shell must run.
    pub fn poll_job(&mut self) -> Option<TtsJob> {
        (!self.jobs.is_empty()).then(|| self.jobs.remove(0))
    }

    fn refuse(&mut self, net: &mut Net, id: ConnId, status: u16, code: &'static str, msg: &str) {
        if let Some(i) = REFUSALS.iter().position(|c| *c == code) {
            self.counters.refused[i] += 1;
        }
        let extra: &[&str] = if code == "TTS_BUSY" {
            &["Retry-After: 1"]
        } else {
            &[]
        };
        net.respond_error(id, status, code, msg, extra);
    }

    /// `GET /api/tts` on `id` with its `query`: answered from the cache, joined to a synthesis
    /// in flight, refused, or made a job (the connection then waits).
    pub fn on_request(&mut self, net: &mut Net, id: ConnId, query: Option<&str>, now: Now) {
        self.counters.requests += 1;
        let (text, voice_id) = match parse_query(query.unwrap_or("")) {
            Some(q) => q,
            None => {
                let msg = "malformed escape or invalid UTF-8 in the query";
                return self.refuse(net, id, 400, "BAD_QUERY", msg);
            }
        };
        let text = clean(text.as_deref().unwrap_or(""));
        let chars = text.chars().count();
        if chars == 0 {
            let msg = "give the text to speak: /api/tts?text=…";
            return self.refuse(net, id, 400, "TTS_TEXT_MISSING", msg);
        }
        if chars > self.cfg.max_chars {
            let msg = format!(
                "at most {} characters of text per request",
                self.cfg.max_chars
            );
            return self.refuse(net, id, 413, "TTS_TEXT_TOO_LONG", &msg);
        }
        let voice = self.voice(voice_id.as_deref()).to_string();
        let key = format!("{voice}\n{text}");
        if let Some(i) = self.cache.iter().position(|(k, _)| *k == key) {
            self.counters.cache_hits += 1;
            // Most recently used last.
            let entry = self.cache.remove(i);
            let wav = entry.1.clone();
            self.cache.push(entry);
            return answer_wav(net, id, &wav);
        }
        if let Some(r) = self.running.iter_mut().find(|r| r.key == key) {
            self.counters.joined += 1;
            r.waiters.push(id);
            return wait(net, id, self.cfg.timeout, now);
        }
        if self.running.len() >= self.cfg.max_concurrent {
            let msg = "the box is synthesising as much speech as it may at once; retry shortly";
            return self.refuse(net, id, 503, "TTS_BUSY", msg);
        }
        self.next_id += 1;
        let job = self.next_id;
        self.counters.syntheses += 1;
        self.running.push(Running {
            id: job,
            key,
            chars,
            waiters: vec![id],
        });
        self.jobs.push(TtsJob {
            id: job,
            voice,
            text,
        });
        wait(net, id, self.cfg.timeout, now)
    }

    /// The espeak-ng voice for `voice_id` (the default for an unknown or missing one).
    fn voice(&mut self, voice_id: Option<&str>) -> &str {
        match voice_id.filter(|v| !v.is_empty()) {
            None => &self.cfg.default_voice,
            Some(v) => match self.cfg.voices.iter().find(|(id, _)| id == v) {
                Some((_, voice)) => voice,
                None => {
                    self.counters.unknown_voices += 1;
                    &self.cfg.default_voice
                }
            },
        }
    }

    /// Whether `id` waits for a synthesis (a second request on it is not read meanwhile).
    pub fn is_waiting(&self, id: ConnId) -> bool {
        self.running.iter().any(|r| r.waiters.contains(&id))
    }

    /// The shell's report of a job: answer everyone waiting for it, cache the audio.
    pub fn on_done(&mut self, net: &mut Net, done: TtsDone) {
        let Some(i) = self.running.iter().position(|r| r.id == done.id) else {
            return;
        };
        let run = self.running.remove(i);
        self.counters.synthesis_us += u64::try_from(done.took.as_micros()).unwrap_or(u64::MAX);
        let wav = done.result.and_then(|mut wav| {
            if fix_wav_sizes(&mut wav) {
                Ok(wav)
            } else {
                Err(TtsFailure::Failed("no audio came out".into()))
            }
        });
        let wav: Arc<[u8]> = match wav {
            Ok(wav) => wav.into(),
            Err(failure) => {
                self.counters.synthesis_failures += 1;
                let (status, code, msg) = match &failure {
                    TtsFailure::Unavailable(why) => (503, "TTS_UNAVAILABLE", why.as_str()),
                    TtsFailure::TimedOut => (504, "TTS_TIMEOUT", "speech synthesis timed out"),
                    TtsFailure::Failed(why) => (500, "TTS_FAILED", why.as_str()),
                };
                log::warn!("event=tts_failed code={code} reason={msg:?}");
                for w in run.waiters {
                    if still_waiting(net, w) {
                        net.respond_error(w, status, code, msg, &[]);
                    }
                }
                return;
            }
        };
        self.counters.chars_synthesised += run.chars as u64;
        for w in run.waiters {
            if still_waiting(net, w) {
                answer_wav(net, w, &wav);
            }
        }
        self.remember(run.key, wav);
    }

    /// Keep `wav` under `key`, dropping the least recently used past `cache_bytes`.
    fn remember(&mut self, key: String, wav: Arc<[u8]>) {
        if wav.len() > self.cfg.cache_bytes {
            return;
        }
        while self.cached_bytes + wav.len() > self.cfg.cache_bytes && !self.cache.is_empty() {
            let (_, old) = self.cache.remove(0);
            self.cached_bytes -= old.len();
        }
        self.cached_bytes += wav.len();
        self.cache.push((key, wav));
    }

    /// The `/metrics` families of speech.
    pub fn families(&self) -> Vec<Family<'static>> {
        let c = &self.counters;
        let refused = REFUSALS
            .iter()
            .zip(c.refused)
            .map(|(code, n)| (vec![("code", *code)], n as f64))
            .collect();
        vec![
            Family::one("tts_requests_total", "counter", "GET /api/tts requests.", c.requests as f64),
            Family::one("tts_cache_hits_total", "counter", "Speech requests answered from the cache.", c.cache_hits as f64),
            Family::one("tts_joined_total", "counter", "Speech requests that joined the same synthesis in flight.", c.joined as f64),
            Family::one("tts_syntheses_total", "counter", "Syntheses started (espeak-ng runs).", c.syntheses as f64),
            Family::one("tts_synthesis_failures_total", "counter", "Syntheses that gave no audio (missing program, timeout, error).", c.synthesis_failures as f64),
            Family::one("tts_unknown_voices_total", "counter", "Speech requests whose voice_id is not in the voice table (the default voice spoke).", c.unknown_voices as f64),
            Family::one("tts_synthesised_chars_total", "counter", "Characters synthesised.", c.chars_synthesised as f64),
            Family::one("tts_synthesis_seconds_total", "counter", "Time spent synthesising, as the worker measured it.", c.synthesis_us as f64 / 1e6),
            Family::labelled("tts_refused_total", "counter", "Speech requests refused before synthesis, by code.", refused),
            Family::one("tts_cache_bytes", "gauge", "Bytes of speech held in the cache.", self.cached_bytes as f64),
            Family::one("tts_running", "gauge", "Syntheses in flight.", self.running.len() as f64),
        ]
    }
}

impl super::Server {
    /// The server with speech configured as `cfg` says.
    pub fn with_tts(mut self, cfg: TtsConfig) -> Self {
        self.tts = Tts::new(cfg);
        self
    }

    /// A speech synthesis the shell must run off the loop ([`Tts::poll_job`]).
    pub fn poll_tts_job(&mut self) -> Option<TtsJob> {
        self.tts.poll_job()
    }

    /// The shell's report of a synthesis: the connections waiting for it are answered.
    pub fn handle_tts_done(&mut self, done: TtsDone, now: Now) {
        self.net.now = now.mono;
        self.tts.on_done(&mut self.net, done);
        self.after(now, None);
    }
}

/// Whether `id` is still an HTTP connection waiting for its answer.
fn still_waiting(net: &Net, id: ConnId) -> bool {
    net.get(id)
        .is_some_and(|c| matches!(c.phase, Phase::Http) && !c.close_after_flush)
}

/// Keep `id` open until the synthesis is answered (its request deadline moves past the
/// synthesis timeout).
fn wait(net: &mut Net, id: ConnId, timeout: Duration, now: Now) {
    net.set_deadline(id, Some(now.mono + timeout + WAIT_MARGIN));
}

fn answer_wav(net: &mut Net, id: ConnId, wav: &[u8]) {
    if let Some(out) = net.out(id) {
        crate::http::write_response(out, 200, "audio/wav", &["Cache-Control: max-age=3600"], wav);
    }
    net.finish(id);
}

/// `text` and `voice_id` from a query string (`application/x-www-form-urlencoded`, as the
/// SDK's `URLSearchParams` writes it); other keys (`model_id`, `voice_settings`) are ignored.
/// `None`: a malformed escape or invalid UTF-8 in one of the two.
pub fn parse_query(query: &str) -> Option<(Option<String>, Option<String>)> {
    let (mut text, mut voice) = (None, None);
    for pair in query.split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match k {
            "text" => &mut text,
            "voice_id" => &mut voice,
            _ => continue,
        };
        let mut decoded = String::with_capacity(v.len());
        for (i, part) in v.split('+').enumerate() {
            if i > 0 {
                decoded.push(' ');
            }
            decoded.push_str(&percent_decode(part)?);
        }
        *slot = Some(decoded);
    }
    Some((text, voice))
}

/// The text with every control character (newlines included) made a space, trimmed.
pub fn clean(text: &str) -> String {
    let spaced: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    spaced.trim().to_string()
}

/// Make the sizes in a WAV header exact (espeak-ng writing to a pipe leaves them at
/// `0x7ffff000`-ish placeholders); false when it is no RIFF/WAVE with a non-empty `data` chunk.
pub fn fix_wav_sizes(wav: &mut [u8]) -> bool {
    if wav.len() < 12 || &wav[..4] != b"RIFF" || &wav[8..12] != b"WAVE" {
        return false;
    }
    let riff = u32::try_from(wav.len() - 8).unwrap_or(u32::MAX);
    wav[4..8].copy_from_slice(&riff.to_le_bytes());
    let mut at = 12;
    while at + 8 <= wav.len() {
        let len = u32::from_le_bytes([wav[at + 4], wav[at + 5], wav[at + 6], wav[at + 7]]);
        if &wav[at..at + 4] == b"data" {
            let data = wav.len() - at - 8;
            if data == 0 {
                return false;
            }
            let data = u32::try_from(data).unwrap_or(u32::MAX);
            wav[at + 4..at + 8].copy_from_slice(&data.to_le_bytes());
            return true;
        }
        at = at.saturating_add(8).saturating_add(len as usize);
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Peer, ServerConfig};
    use crate::time::{Instant, Wall};

    fn now() -> Now {
        Now::new(Instant::from_micros(1_000_000), Wall::from_micros(0))
    }

    /// A WAV as espeak-ng writes it to a pipe: placeholder sizes, `samples` of audio.
    fn espeak_wav(samples: &[i16]) -> Vec<u8> {
        let mut w = b"RIFF\x24\xf0\xff\x7fWAVEfmt ".to_vec();
        w.extend_from_slice(&[
            16, 0, 0, 0, 1, 0, 1, 0, 0x22, 0x56, 0, 0, 0x44, 0xac, 0, 0, 2, 0, 16, 0,
        ]);
        w.extend_from_slice(b"data\x00\xf0\xff\x7f");
        for s in samples {
            w.extend_from_slice(&s.to_le_bytes());
        }
        w
    }

    struct Rig {
        net: Net,
        tts: Tts,
    }

    impl Rig {
        fn new(cfg: TtsConfig) -> Rig {
            Rig {
                net: Net::new(ServerConfig::default()),
                tts: Tts::new(cfg),
            }
        }

        fn get(&mut self, query: &str) -> ConnId {
            let id = self.net.insert(Peer::InProcess, Phase::Http).unwrap();
            self.tts.on_request(&mut self.net, id, Some(query), now());
            id
        }

        /// The status, the `code` of a JSON body (or the body's length), of `id`'s answer.
        fn answer(&mut self, id: ConnId) -> Option<(u16, String)> {
            let out = self.net.output(id).to_vec();
            if out.is_empty() {
                return None;
            }
            let text = String::from_utf8_lossy(&out);
            let status = text[9..12].parse().unwrap();
            let head_end = text.find("\r\n\r\n").unwrap() + 4;
            let body = &out[head_end..];
            let what = match serde_json::from_slice::<serde_json::Value>(body) {
                Ok(v) => v["code"].as_str().unwrap_or("").to_string(),
                Err(_) => format!("{} bytes", body.len()),
            };
            Some((status, what))
        }

        fn done(&mut self, job: &TtsJob, result: Result<Vec<u8>, TtsFailure>) {
            let done = TtsDone {
                id: job.id,
                result,
                took: Duration::from_millis(30),
            };
            self.tts.on_done(&mut self.net, done);
        }
    }

    #[test]
    fn query_is_form_decoded_and_cleaned() {
        let (t, v) =
            parse_query("text=Hello+there%2C%20friend%2B&voice_id=abc&model_id=x").unwrap();
        assert_eq!(t.as_deref(), Some("Hello there, friend+"));
        assert_eq!(v.as_deref(), Some("abc"));
        assert_eq!(parse_query("voice_id=%zz"), None);
        assert_eq!(parse_query("").unwrap(), (None, None));
        assert_eq!(clean("\u{0}a\nb\u{7}\u{1b}[31m c\t "), "a b  [31m c");
    }

    #[test]
    fn miss_then_job_then_answer_then_cache_hit() {
        let mut r = Rig::new(TtsConfig::default());
        let a = r.get("text=Hello+world");
        assert_eq!(r.answer(a), None, "waits for the synthesis");
        let job = r.tts.poll_job().expect("a job");
        assert_eq!(
            (job.voice.as_str(), job.text.as_str()),
            ("en-us", "Hello world")
        );
        assert_eq!(r.tts.poll_job(), None);
        // The same text while it runs joins it.
        let b = r.get("text=Hello%20world");
        assert_eq!(r.tts.poll_job(), None);
        r.done(&job, Ok(espeak_wav(&[0, 500, -500, 0])));
        let wav_len = 44 + 8;
        assert_eq!(r.answer(a), Some((200, format!("{wav_len} bytes"))));
        assert_eq!(r.answer(b), Some((200, format!("{wav_len} bytes"))));
        // The sizes in the answer's header are exact.
        let out = r.net.output(a).to_vec();
        let body = &out[out.len() - wav_len..];
        assert_eq!(u32::from_le_bytes(body[4..8].try_into().unwrap()), 44);
        assert_eq!(u32::from_le_bytes(body[40..44].try_into().unwrap()), 8);
        // A repeat is a hit: no job.
        let c = r.get("text=Hello+world");
        assert_eq!(r.tts.poll_job(), None);
        assert_eq!(r.answer(c), Some((200, format!("{wav_len} bytes"))));
        let k = &r.tts.counters;
        assert_eq!(
            (k.requests, k.syntheses, k.joined, k.cache_hits),
            (3, 1, 1, 1)
        );
    }

    #[test]
    fn refusals() {
        let mut r = Rig::new(TtsConfig {
            max_chars: 10,
            max_concurrent: 1,
            ..TtsConfig::default()
        });
        let id = r.get("voice_id=x");
        assert_eq!(r.answer(id), Some((400, "TTS_TEXT_MISSING".into())));
        let id = r.get("text=%00%01+%0A");
        assert_eq!(r.answer(id), Some((400, "TTS_TEXT_MISSING".into())));
        let id = r.get("text=%ZZ");
        assert_eq!(r.answer(id), Some((400, "BAD_QUERY".into())));
        let id = r.get("text=eleven+char");
        assert_eq!(r.answer(id), Some((413, "TTS_TEXT_TOO_LONG".into())));
        // Ten characters once the control characters are spaces and trimmed.
        let first = r.get("text=%07ten+chars!%1B");
        assert_eq!(r.answer(first), None);
        assert_eq!(r.tts.poll_job().unwrap().text, "ten chars!");
        let busy = r.get("text=other");
        assert_eq!(r.answer(busy), Some((503, "TTS_BUSY".into())));
        assert!(String::from_utf8_lossy(r.net.output(busy)).contains("Retry-After: 1"));
        assert_eq!(r.tts.counters.refused, [2, 1, 1, 1]);
    }

    #[test]
    fn voices_map_and_default() {
        let mut r = Rig::new(TtsConfig {
            voices: vec![("21m00Tcm4TlvDq8ikWAM".into(), "en-gb".into())],
            ..TtsConfig::default()
        });
        r.get("text=a&voice_id=21m00Tcm4TlvDq8ikWAM");
        assert_eq!(r.tts.poll_job().unwrap().voice, "en-gb");
        r.get("text=b&voice_id=-v+evil");
        assert_eq!(r.tts.poll_job().unwrap().voice, "en-us");
        assert_eq!(r.tts.counters.unknown_voices, 1);
        assert!(valid_voice("en-us") && valid_voice("mb/mb-en1") && valid_voice("en+f3"));
        assert!(!valid_voice("-x") && !valid_voice("") && !valid_voice("en us"));
    }

    #[test]
    fn failures_are_json_and_nothing_is_cached() {
        let mut r = Rig::new(TtsConfig::default());
        for (failure, status, code) in [
            (
                TtsFailure::Unavailable("espeak-ng: not found".into()),
                503,
                "TTS_UNAVAILABLE",
            ),
            (TtsFailure::TimedOut, 504, "TTS_TIMEOUT"),
            (TtsFailure::Failed("bad voice".into()), 500, "TTS_FAILED"),
        ] {
            let id = r.get("text=hi");
            let job = r.tts.poll_job().unwrap();
            r.done(&job, Err(failure));
            assert_eq!(r.answer(id), Some((status, code.into())));
        }
        // Audio with no samples (espeak-ng with an unknown voice writes nothing) is a failure.
        let id = r.get("text=hi");
        let job = r.tts.poll_job().unwrap();
        r.done(&job, Ok(espeak_wav(&[])));
        assert_eq!(r.answer(id), Some((500, "TTS_FAILED".into())));
        assert_eq!(r.tts.cached_bytes(), 0);
        assert_eq!(r.tts.counters.synthesis_failures, 4);
    }

    #[test]
    fn cache_is_bounded_least_recently_used_out() {
        let wav = espeak_wav(&[1; 28]); // 100 bytes
        let mut r = Rig::new(TtsConfig {
            cache_bytes: 250,
            ..TtsConfig::default()
        });
        for text in ["a", "b"] {
            r.get(&format!("text={text}"));
            let job = r.tts.poll_job().unwrap();
            r.done(&job, Ok(wav.clone()));
        }
        r.get("text=a"); // a hit: "b" is now the oldest
        assert_eq!(r.tts.poll_job(), None);
        r.get("text=c");
        let job = r.tts.poll_job().unwrap();
        r.done(&job, Ok(wav.clone()));
        assert_eq!(r.tts.cached_bytes(), 200);
        r.get("text=b");
        assert!(r.tts.poll_job().is_some(), "b was dropped");
        r.get("text=a");
        r.get("text=c");
        assert_eq!(r.tts.counters.cache_hits, 3);
    }

    #[test]
    fn a_connection_gone_is_not_answered() {
        let mut r = Rig::new(TtsConfig::default());
        let a = r.get("text=hi");
        let job = r.tts.poll_job().unwrap();
        r.net.remove(a);
        let b = r.net.insert(Peer::InProcess, Phase::Http).unwrap();
        r.done(&job, Ok(espeak_wav(&[3])));
        assert_eq!(r.answer(b), None, "a reused slot is another connection");
        assert!(fix_wav_sizes(&mut espeak_wav(&[1])));
        assert!(!fix_wav_sizes(&mut b"RIFF\0\0\0\0WAVE".to_vec()));
        assert!(!fix_wav_sizes(&mut b"not a wav at all".to_vec()));
    }
}
