//! Test support for the live captions tests (`tests/captions.rs`, `tests/captions_stack.rs`):
//! the whole captioning stack over real processes, and a glasses client that speaks.
//!
//! [`Stack::start`] writes a config (TCP and a Unix socket), runs the real `augmentos-edge`
//! binary, the on-box transcriber (`contrib/transcriber`, a system app allowed on the Unix
//! socket only, publishing `transcription`, given [`PHRASES`] as the event's vocabulary unless
//! told otherwise) and the captions app (`examples/live-captions`, the stock
//! `@mentra/sdk@2.1.29`). [`Stack::glasses`] connects a tungstenite glasses client, starts the
//! captions app and waits for `microphone_state_change` with `isMicrophoneEnabled: true`;
//! [`Glasses::stream`] sends audio on a schedule (real time in 20 ms frames, odd sizes, bursts)
//! and keeps every `display_event` and microphone change with its arrival time.
//!
//! [`speech`] has `espeak-ng` speak sentences into 16 kHz 16-bit mono PCM with silence around
//! each; [`score`] matches the captions app's `caption` events to the sentences by their audio
//! clock times and computes recall, WER and latencies.
//!
//! Invariants: every wait has a deadline ([`STEP`]); no helper asserts anything about elapsed
//! time (latencies are printed, never asserted); child processes are killed on drop and the
//! temporary directory is removed unless `CAPTIONS_KEEP=1`.

// Not every test file uses every helper.
#![allow(dead_code)]

pub use crate::ports::free_port;
use crate::tools::{npm_ci, runs, skip};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tungstenite::client::IntoClientRequest;
use tungstenite::http::HeaderValue;
use tungstenite::{Message, WebSocket};

pub const APP: &str = "com.example.captions";
pub const APP_KEY: &str = "captions-test-key-0123456789";
pub const STT: &str = "system.local.transcriber";
pub const STT_KEY: &str = "transcriber-test-key-9876543210";
pub const USER: &str = "alice@example.com";
const JWT_SECRET: &str = "test-secret-captions-123";
pub const STEP: Duration = Duration::from_secs(20);
pub const RATE: usize = 16_000;
/// Bytes of one 20 ms frame of 16 kHz 16-bit mono audio.
pub const FRAME: usize = 640;
/// Silence before the first sentence and after each one.
pub const GAP_MS: usize = 1200;
/// The event's vocabulary as a venue would give it to the transcriber (`--phrases`): the
/// script of what is said (the test sentences among them) and some other lines of the event.
pub const PHRASES: &str = "Welcome to the conference
Please turn on the kitchen lights
What time is the meeting tomorrow
The train to the city leaves at noon
The keynote starts at ten in the main hall
Lunch is served on the second floor
Please silence your phones during the talks
";

pub type R<T = ()> = Result<T, String>;

/// The root of the repository, or None (after a message) when a tool is missing outside CI.
/// Installs `examples/live-captions/node_modules` with `npm ci` on first use.
pub fn prerequisites() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut missing = Vec::new();
    for tool in ["espeak-ng", "node", "npm"] {
        if !runs(Command::new(tool).arg("--version")) {
            missing.push(tool.to_string());
        }
    }
    if !runs(Command::new("python3").args(["-c", "import pocketsphinx, moonshine_voice"])) {
        missing.push(
            "python3 with pocketsphinx and moonshine_voice \
             (pip install -r contrib/transcriber/requirements.txt)"
                .into(),
        );
    }
    if !missing.is_empty() {
        skip(&format!(
            "live captions test skipped: missing {}",
            missing.join(", ")
        ));
        return None;
    }
    if let Err(e) = npm_ci(
        &root.join("examples/live-captions"),
        "@mentra/sdk/package.json",
    ) {
        panic!("{e}");
    }
    Some(root)
}

/// How to run the stack.
pub struct Options {
    /// The transcriber's `--phrases` (None: the general English model).
    pub phrases: Option<&'static str>,
    /// More transcriber arguments (test hooks, `--max-backlog-ms`).
    pub stt_args: Vec<String>,
    /// The config's `timings` (camelCase keys in milliseconds), or null.
    pub timings: Value,
    /// The transcriber is the venue's feed (`venueFeed`): never started per session; run it in
    /// venue mode with [`Stack::venue_transcriber`].
    pub venue: bool,
    /// More captions apps, each (package name, its `TARGET_LANGUAGE`): started by the test,
    /// in [`Stack::extra`].
    pub extra_apps: Vec<(&'static str, &'static str)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            phrases: Some(PHRASES),
            stt_args: Vec::new(),
            timings: Value::Null,
            venue: false,
            extra_apps: Vec::new(),
        }
    }
}

/// The box, the transcriber and the captions app, each a child process, in a temporary dir.
pub struct Stack {
    pub root: PathBuf,
    pub port: u16,
    pub stt_port: u16,
    pub sock: PathBuf,
    pub config: PathBuf,
    phrases: Option<PathBuf>,
    pub stt: Proc,
    pub app: Proc,
    /// The captions apps of [`Options::extra_apps`], in that order.
    pub extra: Vec<Proc>,
    server: Proc,
    // Last: dropped after the processes, so their logs are still there to read on failure.
    pub dir: TempDir,
}

impl Stack {
    pub fn start(root: &Path, opts: Options) -> R<Stack> {
        let dir = TempDir::new()?;
        let (port, app_port, stt_port) = (free_port()?, free_port()?, free_port()?);
        let sock = dir.0.join("edge.sock");
        let mut config = json!({
            "listen": [format!("127.0.0.1:{port}"), format!("unix:{}", sock.display())],
            "publicWsUrl": format!("ws://127.0.0.1:{port}"),
            "internalWsUrl": format!("ws://127.0.0.1:{port}"),
            "jwtSecret": JWT_SECRET,
            "apps": [{
                "packageName": APP, "name": "Live Captions",
                "publicUrl": format!("http://127.0.0.1:{app_port}"),
                "hashedApiKey": sha256_hex(APP_KEY), "isSystemApp": false,
                "permissions": ["MICROPHONE"], "allowedAddresses": [],
            }, {
                "packageName": STT, "name": "On-box transcriber",
                "publicUrl": format!("http://127.0.0.1:{stt_port}"),
                "hashedApiKey": sha256_hex(STT_KEY), "isSystemApp": true,
                "permissions": ["MICROPHONE"], "allowedAddresses": ["unix"],
                "publishes": ["transcription", "translation"],
            }],
        });
        let extra_ports = opts
            .extra_apps
            .iter()
            .map(|_| free_port())
            .collect::<R<Vec<u16>>>()?;
        for ((pkg, _), p) in opts.extra_apps.iter().zip(&extra_ports) {
            config["apps"].as_array_mut().expect("array").push(json!({
                "packageName": pkg, "name": "Live Captions (translated)",
                "publicUrl": format!("http://127.0.0.1:{p}"),
                "hashedApiKey": sha256_hex(APP_KEY), "isSystemApp": false,
                "permissions": ["MICROPHONE"], "allowedAddresses": [],
            }));
        }
        if !opts.timings.is_null() {
            config["timings"] = opts.timings.clone();
        }
        if opts.venue {
            config["apps"][1]["venueFeed"] = json!("main");
        }
        let config_path = dir.0.join("edge.json");
        fs::write(&config_path, config.to_string()).map_err(|e| e.to_string())?;
        let phrases = match opts.phrases {
            Some(text) => {
                let p = dir.0.join("phrases.txt");
                fs::write(&p, text).map_err(|e| e.to_string())?;
                Some(p)
            }
            None => None,
        };
        let server = Proc::spawn(
            Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
                .args(["serve", "--config"])
                .arg(&config_path),
            &dir.0,
            "server",
        )?;
        let deadline = Instant::now() + STEP;
        while TcpStream::connect(("127.0.0.1", port)).is_err()
            || UnixStream::connect(&sock).is_err()
        {
            if Instant::now() > deadline {
                return Err("the server did not listen".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let mut stt = Self::transcriber(
            root,
            &dir.0,
            &sock,
            stt_port,
            &phrases,
            &opts.stt_args,
            "transcriber",
        )?;
        let mut app = Proc::spawn(
            Command::new("node")
                .arg("captions.mjs")
                .current_dir(root.join("examples/live-captions"))
                .env("PORT", app_port.to_string())
                .env("PACKAGE_NAME", APP)
                .env("API_KEY", APP_KEY),
            &dir.0,
            "captions",
        )?;
        let mut extra = Vec::new();
        for ((pkg, target), p) in opts.extra_apps.iter().zip(&extra_ports) {
            extra.push(Proc::spawn(
                Command::new("node")
                    .arg("captions.mjs")
                    .current_dir(root.join("examples/live-captions"))
                    .env("PORT", p.to_string())
                    .env("PACKAGE_NAME", pkg)
                    .env("API_KEY", APP_KEY)
                    .env("TARGET_LANGUAGE", target),
                &dir.0,
                &format!("captions-{target}"),
            )?);
        }
        stt.wait_event("listening", STEP)?;
        app.wait_event("listening", STEP)?;
        for e in &mut extra {
            e.wait_event("listening", STEP)?;
        }
        Ok(Stack {
            root: root.to_path_buf(),
            port,
            stt_port,
            sock,
            config: config_path,
            phrases,
            stt,
            app,
            extra,
            server,
            dir,
        })
    }

    fn transcriber(
        root: &Path,
        dir: &Path,
        sock: &Path,
        port: u16,
        phrases: &Option<PathBuf>,
        extra: &[String],
        name: &str,
    ) -> R<Proc> {
        let mut cmd = Command::new("python3");
        cmd.arg(root.join("contrib/transcriber/transcriber.py"))
            .arg("--socket")
            .arg(sock)
            .args(["--port", &port.to_string(), "--package", STT])
            .args(extra)
            .env("TRANSCRIBER_API_KEY", STT_KEY)
            .env("PYTHONDONTWRITEBYTECODE", "1");
        if let Some(p) = phrases {
            cmd.arg("--phrases").arg(p);
        }
        Proc::spawn(&mut cmd, dir, name)
    }

    /// Starts the transcriber again (as its supervisor would after a crash), without test hooks,
    /// logging to `<name>.stderr`; waits until it listens.
    pub fn restart_transcriber(&mut self, name: &str) -> R {
        let mut stt = Self::transcriber(
            &self.root,
            &self.dir.0,
            &self.sock,
            self.stt_port,
            &self.phrases,
            &[],
            name,
        )?;
        stt.wait_event("listening", STEP)?;
        self.stt = stt;
        Ok(())
    }

    /// The transcriber in venue mode instead (replacing the one started with the stack): the
    /// room's audio from the WAV file `wav`, played in real time, published once as the venue
    /// feed. Waits until it is connected to the box.
    pub fn venue_transcriber(&mut self, wav: &Path) -> R {
        self.venue_transcriber_with(wav, &[])
    }

    /// [`Stack::venue_transcriber`] with more transcriber arguments (`--translate`).
    pub fn venue_transcriber_with(&mut self, wav: &Path, args: &[&str]) -> R {
        let mut extra = vec![
            "--venue-audio".to_string(),
            wav.to_string_lossy().into_owned(),
            "--port".to_string(),
            "0".to_string(),
        ];
        extra.extend(args.iter().map(|a| a.to_string()));
        let mut stt = Self::transcriber(
            &self.root,
            &self.dir.0,
            &self.sock,
            self.stt_port,
            &self.phrases,
            &extra,
            "venue-transcriber",
        )?;
        stt.wait_event("connected", STEP)?;
        self.stt = stt;
        Ok(())
    }

    /// Glasses connected, the captions app started, the microphone on.
    pub fn glasses(&mut self) -> R<Glasses> {
        let token = cli(&[
            "token",
            "--user",
            USER,
            "--config",
            &self.config.to_string_lossy(),
        ])?;
        let mut g = Glasses::connect(self.port, &token, &self.dir.0.join("glasses.log"))?;
        g.send(json!({"type": "connection_init"}))?;
        g.send(json!({"type": "start_app", "packageName": APP}))?;
        self.app.wait_event("session", STEP)?;
        g.wait_mic(true, STEP)?;
        // The app's subscription travels on its own connection; give it a moment to be applied.
        g.idle(Duration::from_millis(500))?;
        Ok(g)
    }

    /// The last lines of every process's log, for a failure message.
    pub fn logs(&self) -> String {
        let mut names: Vec<String> = fs::read_dir(&self.dir.0)
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.ends_with(".stderr") || n.ends_with(".log"))
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .iter()
            .map(|f| format!("\n--- {f} (tail)\n{}", tail(&self.dir.0.join(f), 30)))
            .collect()
    }

    /// The transcriber's metrics (GET /metrics on its webhook port) as name → value.
    pub fn transcriber_metrics(&self) -> R<HashMap<String, f64>> {
        let mut s = TcpStream::connect(("127.0.0.1", self.stt_port)).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(STEP)).map_err(|e| e.to_string())?;
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .map_err(|e| e.to_string())?;
        let mut text = String::new();
        s.read_to_string(&mut text).map_err(|e| e.to_string())?;
        let body = text.split("\r\n\r\n").nth(1).ok_or("no metrics body")?;
        Ok(body
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter_map(|(k, v)| Some((k.to_string(), v.parse().ok()?)))
            .collect())
    }
}

/// When each piece of the audio is sent: (ms after the start of streaming, byte range).
pub type Schedule = Vec<(u64, std::ops::Range<usize>)>;

/// Real time in fixed-size chunks (`FRAME` for the glasses' 20 ms frames).
pub fn realtime(len: usize, chunk: usize) -> Schedule {
    (0..len)
        .step_by(chunk)
        .map(|i| ((i / 2 * 1000 / RATE) as u64, i..(i + chunk).min(len)))
        .collect()
}

/// Real time on average, in chunks of awkward sizes (odd byte counts split samples).
pub fn odd_chunks(len: usize) -> Schedule {
    let sizes = [1, 333, 7, 1279, 2, 4097, 641, 99];
    let (mut out, mut i, mut k) = (Vec::new(), 0, 0);
    while i < len {
        let n = sizes[k % sizes.len()].min(len - i);
        out.push(((i / 2 * 1000 / RATE) as u64, i..i + n));
        i += n;
        k += 1;
    }
    out
}

/// `burst_ms` of audio at once, every `burst_ms` (a network that stalls and catches up), in
/// 20 ms frames.
pub fn bursts(len: usize, burst_ms: usize) -> Schedule {
    let per = RATE * 2 * burst_ms / 1000;
    (0..len)
        .step_by(FRAME)
        .map(|i| ((i / per * burst_ms) as u64, i..(i + FRAME).min(len)))
        .collect()
}

/// Silence, then white noise at `amplitude` (fixed seed).
pub fn noise(ms: usize, amplitude: i32) -> Vec<u8> {
    let mut x: u32 = 0x2545_f491;
    (0..RATE * ms / 1000)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            let v = (x % (2 * amplitude as u32 + 1)) as i32 - amplitude;
            (v as i16).to_le_bytes()
        })
        .collect()
}

/// The PCM made louder by `gain` and clipped at full scale.
pub fn clipped(pcm: &[u8], gain: i32) -> Vec<u8> {
    pcm.chunks_exact(2)
        .flat_map(|c| {
            let v = i16::from_le_bytes([c[0], c[1]]) as i32 * gain;
            (v.clamp(-32768, 32767) as i16).to_le_bytes()
        })
        .collect()
}

/// `pcm` (16 kHz 16-bit mono) as a WAV file.
pub fn wav_file(pcm: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(44 + pcm.len());
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&(RATE as u32).to_le_bytes());
    out.extend_from_slice(&(RATE as u32 * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

pub fn silence(ms: usize) -> Vec<u8> {
    vec![0; RATE * 2 * ms / 1000]
}

/// The captions matched to the sentences, and what they measure.
pub struct Score {
    pub hit: usize,
    pub total: usize,
    pub errors: usize,
    /// Per sentence: whether it got a final caption.
    pub finals: Vec<bool>,
    /// Sentence end → its last final caption on the glasses, ms (sorted).
    pub final_ms: Vec<u64>,
    /// Sentence start → its first interim caption on the glasses, ms (sorted).
    pub interim_ms: Vec<u64>,
    pub report: String,
}

impl Score {
    pub fn recall(&self) -> f64 {
        self.hit as f64 / self.total.max(1) as f64
    }
    pub fn wer(&self) -> f64 {
        self.errors as f64 / self.total.max(1) as f64
    }
    pub fn summary(&self) -> String {
        format!(
            "word recall {:.2} ({}/{}), WER {:.2}; sentence end → final caption on the glasses \
             {:?} ms; sentence start → first interim {:?} ms{}",
            self.recall(),
            self.hit,
            self.total,
            self.wer(),
            self.final_ms,
            self.interim_ms,
            self.report
        )
    }
}

/// Matches `captions` (the app's `caption` events) to `spoken` by the overlap of their audio
/// clock times, and finds their arrival on the glasses in `displays`. `t0` is when the first
/// sample of the audio clock was sent.
pub fn score(
    captions: &[Value],
    spoken: &[Spoken],
    displays: &[(Instant, String)],
    t0: Instant,
) -> Score {
    let mut finals: Vec<Vec<&Value>> = vec![Vec::new(); spoken.len()];
    let mut first_interim: Vec<Option<&Value>> = vec![None; spoken.len()];
    let half_gap = GAP_MS as u64 / 2;
    for c in captions {
        let (s, e) = (
            c["startTime"].as_u64().unwrap_or(0),
            c["endTime"].as_u64().unwrap_or(0),
        );
        let Some(k) = (0..spoken.len()).max_by_key(|&k| {
            e.min(spoken[k].end_ms + half_gap)
                .saturating_sub(s.max(spoken[k].start_ms.saturating_sub(half_gap)))
        }) else {
            continue;
        };
        if c["isFinal"] == true {
            finals[k].push(c);
        } else if first_interim[k].is_none() {
            first_interim[k] = Some(c);
        }
    }
    // An interim's first showing; a final's last (its text may repeat the last interim's).
    let first = |text: &str| displays.iter().find(|(_, t)| t == text).map(|(at, _)| *at);
    let last = |text: &str| {
        displays
            .iter()
            .rev()
            .find(|(_, t)| t == text)
            .map(|(at, _)| *at)
    };
    let mut sc = Score {
        hit: 0,
        total: 0,
        errors: 0,
        finals: Vec::new(),
        final_ms: Vec::new(),
        interim_ms: Vec::new(),
        report: String::new(),
    };
    for (k, s) in spoken.iter().enumerate() {
        let heard: Vec<String> = finals[k]
            .iter()
            .flat_map(|c| words(c["heard"].as_str().unwrap_or("")))
            .collect();
        let said = words(&s.text);
        let mut pool: HashMap<&str, usize> = HashMap::new();
        for w in &heard {
            *pool.entry(w).or_default() += 1;
        }
        for w in &said {
            if let Some(n) = pool.get_mut(w.as_str()).filter(|n| **n > 0) {
                *n -= 1;
                sc.hit += 1;
            }
        }
        sc.total += said.len();
        sc.errors += edit_distance(&said, &heard);
        sc.report += &format!("\n  said {:?} heard {:?}", s.text, heard.join(" "));
        sc.finals.push(!finals[k].is_empty());
        if let Some(f) = finals[k].last() {
            if let Some(at) = last(f["text"].as_str().unwrap_or("")) {
                let end = t0 + Duration::from_millis(s.end_ms);
                sc.final_ms
                    .push(at.saturating_duration_since(end).as_millis() as u64);
            }
        }
        if let Some(c) = first_interim[k] {
            if let Some(at) = first(c["text"].as_str().unwrap_or("")) {
                let start = t0 + Duration::from_millis(s.start_ms);
                sc.interim_ms
                    .push(at.saturating_duration_since(start).as_millis() as u64);
            }
        }
    }
    sc.final_ms.sort_unstable();
    sc.interim_ms.sort_unstable();
    sc
}

/// One sentence on the stream's audio clock (ms from the first sample).
#[derive(Clone)]
pub struct Spoken {
    pub text: String,
    pub start_ms: u64,
    pub end_ms: u64,
}

/// The sentences spoken by espeak-ng, resampled to 16 kHz, with `GAP_MS` of silence before
/// each and after the last. Also written to `speech.raw` in `dir`.
pub fn speech(dir: &Path, sentences: &[&str]) -> R<(Vec<u8>, Vec<Spoken>)> {
    let mut samples: Vec<i16> = vec![0; RATE * GAP_MS / 1000];
    let mut spoken = Vec::new();
    for (i, text) in sentences.iter().enumerate() {
        let wav = dir.join(format!("s{i}.wav"));
        let out = Command::new("espeak-ng")
            .args(["-v", "en-us", "-w"])
            .arg(&wav)
            .arg(text)
            .output()
            .map_err(|e| format!("espeak-ng: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "espeak-ng failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let (rate, pcm) = read_wav(&fs::read(&wav).map_err(|e| e.to_string())?)?;
        let start_ms = (samples.len() * 1000 / RATE) as u64;
        samples.extend(resample(&pcm, rate, RATE));
        spoken.push(Spoken {
            text: text.to_string(),
            start_ms,
            end_ms: (samples.len() * 1000 / RATE) as u64,
        });
        samples.extend(std::iter::repeat_n(0, RATE * GAP_MS / 1000));
    }
    let bytes: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    fs::write(dir.join("speech.raw"), &bytes).map_err(|e| e.to_string())?;
    Ok((bytes, spoken))
}

/// 16-bit mono PCM WAV → (sample rate, samples). The data chunk runs to the end of the file.
pub fn read_wav(b: &[u8]) -> R<(usize, Vec<i16>)> {
    if b.len() < 44 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("espeak-ng wrote no WAV".into());
    }
    let (mut i, mut rate) = (12, 0);
    while i + 8 <= b.len() {
        let id = &b[i..i + 4];
        let len = u32::from_le_bytes([b[i + 4], b[i + 5], b[i + 6], b[i + 7]]) as usize;
        if id == b"fmt " {
            let f = &b[i + 8..];
            if u16::from_le_bytes([f[2], f[3]]) != 1 || u16::from_le_bytes([f[14], f[15]]) != 16 {
                return Err("espeak-ng WAV is not 16-bit mono".into());
            }
            rate = u32::from_le_bytes([f[4], f[5], f[6], f[7]]) as usize;
        } else if id == b"data" {
            let data = &b[i + 8..];
            let pcm = data
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]))
                .collect();
            return Ok((rate, pcm));
        }
        i += 8 + len + (len & 1);
    }
    Err("no data chunk in the WAV".into())
}

/// Linear interpolation after a 3-tap low-pass (enough for 22.05 → 16 kHz speech).
pub fn resample(x: &[i16], from: usize, to: usize) -> Vec<i16> {
    let f: Vec<f64> = (0..x.len())
        .map(|i| {
            let a = x[i.saturating_sub(1)] as f64;
            let c = x[(i + 1).min(x.len() - 1)] as f64;
            0.25 * a + 0.5 * x[i] as f64 + 0.25 * c
        })
        .collect();
    let n = x.len() * to / from;
    (0..n)
        .map(|j| {
            let p = j as f64 * from as f64 / to as f64;
            let i = p as usize;
            let t = p - i as f64;
            let b = f.get(i + 1).copied().unwrap_or(f[i]);
            (f[i] * (1.0 - t) + b * t).round().clamp(-32768.0, 32767.0) as i16
        })
        .collect()
}

pub fn words(s: &str) -> Vec<String> {
    s.split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect()
}

pub fn edit_distance(a: &[String], b: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut cur = vec![i + 1];
        for (j, y) in b.iter().enumerate() {
            cur.push(
                (prev[j] + usize::from(x != y))
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

pub fn display_text(m: &Value) -> Option<String> {
    if m["type"] != "display_event" {
        return None;
    }
    m["layout"]["text"].as_str().map(str::to_string)
}

// ---------------------------------------------------------------------------------------------
// Processes, the glasses client, helpers
// ---------------------------------------------------------------------------------------------

/// A child process; stdout lines that are JSON objects with an `event` arrive on a channel.
pub struct Proc {
    child: Child,
    events: Receiver<Value>,
}

impl Proc {
    pub fn spawn(cmd: &mut Command, dir: &Path, name: &str) -> R<Proc> {
        let stderr = File::create(dir.join(format!("{name}.stderr"))).map_err(|e| e.to_string())?;
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| format!("cannot start {name}: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut copy = File::create(dir.join(format!("{name}.stdout"))).ok();
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(f) = copy.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if v["event"].is_string() && tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        Ok(Proc { child, events })
    }

    pub fn wait_event(&mut self, name: &str, within: Duration) -> R<Value> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) if v["event"] == name => return Ok(v),
                Ok(v) if v["event"] == "error" || v["event"] == "fatal" => {
                    return Err(format!("process reported {v}"))
                }
                Ok(_) => {}
                Err(_) => return Err(format!("no {name:?} event within {within:?}")),
            }
        }
    }

    /// The events so far (all of them; `caption`s are the captions app's).
    pub fn drain(&mut self) -> Vec<Value> {
        self.events.try_iter().collect()
    }

    /// Waits for the process to exit; its status code.
    pub fn wait_exit(&mut self, within: Duration) -> R<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait().map_err(|e| e.to_string())? {
                return Ok(st.code());
            }
            if Instant::now() > deadline {
                return Err(format!("the process did not exit within {within:?}"));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Glasses {
    ws: WebSocket<TcpStream>,
    log: Option<File>,
    /// Every `display_event`'s text with its arrival time.
    pub displays: Vec<(Instant, String)>,
    /// Every `microphone_state_change` with its arrival time.
    pub mic: Vec<(Instant, bool)>,
}

impl Glasses {
    pub fn connect(port: u16, token: &str, log: &Path) -> R<Glasses> {
        let stream = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
        stream
            .set_read_timeout(Some(STEP))
            .map_err(|e| e.to_string())?;
        let mut req = format!("ws://127.0.0.1:{port}/glasses-ws")
            .into_client_request()
            .map_err(|e| e.to_string())?;
        let bearer =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|e| e.to_string())?;
        req.headers_mut().insert("Authorization", bearer);
        let (ws, _) = tungstenite::client::client(req, stream).map_err(|e| e.to_string())?;
        let mut g = Glasses {
            ws,
            log: File::create(log).ok(),
            displays: Vec::new(),
            mic: Vec::new(),
        };
        g.set_read_timeout(Duration::from_millis(200))?;
        Ok(g)
    }

    pub fn set_read_timeout(&mut self, d: Duration) -> R {
        self.ws
            .get_ref()
            .set_read_timeout(Some(d))
            .map_err(|e| e.to_string())
    }

    pub fn send(&mut self, v: Value) -> R {
        if let Some(f) = self.log.as_mut() {
            let _ = writeln!(f, "> {v}");
        }
        self.ws
            .send(Message::text(v.to_string()))
            .map_err(|e| format!("glasses send: {e}"))
    }

    pub fn send_binary(&mut self, b: &[u8]) -> R {
        self.ws
            .send(Message::binary(b.to_vec()))
            .map_err(|e| format!("glasses audio send: {e}"))
    }

    /// Sends `pcm` on `schedule` (times from now), reading in between; returns when the
    /// stream started.
    pub fn stream(&mut self, pcm: &[u8], schedule: &Schedule) -> R<Instant> {
        self.set_read_timeout(Duration::from_millis(2))?;
        let t0 = Instant::now();
        for (at, range) in schedule {
            let due = t0 + Duration::from_millis(*at);
            while Instant::now() < due {
                self.poll()?;
            }
            self.send_binary(&pcm[range.clone()])?;
        }
        Ok(t0)
    }

    /// Reads (recording displays and microphone changes) for `d`.
    pub fn idle(&mut self, d: Duration) -> R {
        self.set_read_timeout(Duration::from_millis(2))?;
        let end = Instant::now() + d;
        while Instant::now() < end {
            self.poll()?;
        }
        Ok(())
    }

    /// Reads until the microphone is switched to `on` (or fails after `within`).
    pub fn wait_mic(&mut self, on: bool, within: Duration) -> R<Instant> {
        self.set_read_timeout(Duration::from_millis(20))?;
        let deadline = Instant::now() + within;
        let seen = self.mic.len();
        loop {
            if let Some(&(at, _)) = self.mic[seen..].iter().find(|(_, m)| *m == on) {
                return Ok(at);
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no microphone_state_change with isMicrophoneEnabled: {on}"
                ));
            }
            self.poll()?;
        }
    }

    /// One read; records what it got.
    fn poll(&mut self) -> R {
        if let Some(m) = self.read()? {
            if let Some(t) = display_text(&m) {
                self.displays.push((Instant::now(), t));
            }
            if m["type"] == "microphone_state_change" {
                self.mic
                    .push((Instant::now(), m["isMicrophoneEnabled"] == true));
            }
        }
        Ok(())
    }

    pub fn read(&mut self) -> R<Option<Value>> {
        match self.ws.read() {
            Ok(Message::Text(t)) => {
                if let Some(f) = self.log.as_mut() {
                    let _ = writeln!(f, "< {}", t.as_str());
                }
                serde_json::from_str(t.as_str())
                    .map(Some)
                    .map_err(|e| e.to_string())
            }
            Ok(Message::Close(c)) => Err(format!("the server closed the glasses' socket: {c:?}")),
            Ok(_) => Ok(None),
            Err(tungstenite::Error::Io(e))
                if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                Ok(None)
            }
            Err(e) => Err(format!("glasses read: {e}")),
        }
    }
}

pub fn cli(args: &[&str]) -> R<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_augmentos-edge"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "augmentos-edge {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

pub fn tail(path: &Path, n: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> R<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!("edge-cap-{}-{nanos:x}", std::process::id()));
        fs::create_dir_all(&p).map_err(|e| e.to_string())?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("CAPTIONS_KEEP").is_none() {
            let _ = fs::remove_dir_all(&self.0);
        }
    }
}
