//! Measurement layer: `edge-load venue --transcriber`: the real transcriber
//! (`contrib/transcriber`, venue mode) is the venue feed, so the box's whole cost of captioning
//! a room — one recogniser plus the server — can be read against the number of wearers.
//!
//! The box and N sessions, each with M apps subscribed as the SDK does, are set up exactly as
//! for `edge-load venue` ([`crate::route::outside_venue`]); then, instead of our synthetic
//! publisher, `python3 transcriber.py --venue-audio -` connects over the box's Unix socket as
//! the feed, and this process plays the WAV files into its standard input in real time, 100 ms
//! at a time, as a sound desk would (then 1 s of silence, as its WAV mode does, so the last words
//! are finalised). Phases, each with the CPU time of the transcriber's process tree and of the
//! server, and their RSS: `start` (spawn until the feed is connected: the model loads) and
//! `play` (first chunk until every final the transcriber published reached every app).
//!
//! What was published is read from the transcriber's own log (stderr), a line per result
//! written just before it is sent: finals in order, with the moment the line arrived here, so
//! publish → app latency is measured for finals (receipt minus that moment, both on
//! [`stats::now_us`]). Each app's finals are compared with the published ones, text and
//! order; interims are counted (the box may drop them for an app behind).

use crate::driver::AppResult;
use crate::route::{self, VenueBox};
use crate::stats::{self, Histogram};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

pub const USAGE: &str =
    "  edge-load venue --transcriber [--wav FILE]… [--engine E] [--transcriber-dir DIR]
                  [--sessions N] [--apps M]
      the real transcriber (DIR/transcriber.py, venue mode, default engine) is the venue feed:
      the WAVs (16 kHz 16-bit mono; default DIR/samples/librivox/*.wav, 24.7 s) are played
      into its standard input in real time; reports finals published and delivered per app,
      publish → app latency, interims, and CPU seconds per second of audio and RSS of the
      transcriber (its process tree) and of the server, per phase (start, play)";

/// 16 kHz, 16-bit mono: bytes per second, and per 100 ms chunk.
const RATE: usize = 32_000;
const CHUNK: usize = RATE / 10;

struct Opts {
    wavs: Vec<PathBuf>,
    engine: Option<String>,
    dir: PathBuf,
    /// What `route` parses: sessions, apps, ports.
    route: Vec<String>,
}

fn parse(args: &[String]) -> Opts {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/transcriber");
    let mut o = Opts {
        wavs: Vec::new(),
        engine: None,
        dir: match dir.is_dir() {
            true => dir,
            false => PathBuf::from("contrib/transcriber"),
        },
        route: Vec::new(),
    };
    let mut i = 0;
    while i < args.len() {
        let val = || args.get(i + 1).cloned().unwrap_or_else(|| crate::usage());
        match args[i].as_str() {
            "--transcriber" => {
                i += 1;
                continue;
            }
            "--wav" => o.wavs.push(val().into()),
            "--engine" => o.engine = Some(val()),
            "--transcriber-dir" => o.dir = val().into(),
            _ => {
                o.route.push(args[i].clone());
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    if o.wavs.is_empty() {
        let samples = o.dir.join("samples/librivox");
        let mut found: Vec<PathBuf> = std::fs::read_dir(&samples)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        found.retain(|p| p.extension().is_some_and(|e| e == "wav"));
        found.sort();
        o.wavs = found;
    }
    o
}

pub fn run(args: &[String]) {
    let o = parse(args);
    if let Err(e) = measure(&o) {
        eprintln!("edge-load venue --transcriber: {e}");
        std::process::exit(1);
    }
}

/// The PCM of a 16 kHz 16-bit mono WAV file.
pub fn wav_pcm(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.len() < 12 || &bytes[..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err("not a RIFF/WAVE file".into());
    }
    let (mut at, mut format_ok) = (12, false);
    while at + 8 <= bytes.len() {
        let id = &bytes[at..at + 4];
        let len = u32::from_le_bytes([bytes[at + 4], bytes[at + 5], bytes[at + 6], bytes[at + 7]]);
        let body = &bytes[at + 8..(at + 8 + len as usize).min(bytes.len())];
        match id {
            b"fmt " if body.len() >= 16 => {
                let u16_at = |k: usize| u16::from_le_bytes([body[k], body[k + 1]]);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                format_ok = u16_at(0) == 1 && u16_at(2) == 1 && rate == 16_000 && u16_at(14) == 16;
                if !format_ok {
                    return Err(format!(
                        "not 16 kHz 16-bit mono PCM (format {}, {} channels, {rate} Hz, {} bits): \
                         convert it with ffmpeg -i IN -ar 16000 -ac 1 -c:a pcm_s16le OUT.wav",
                        u16_at(0),
                        u16_at(2),
                        u16_at(14)
                    ));
                }
            }
            b"data" if format_ok => return Ok(body[..body.len() & !1].to_vec()),
            _ => {}
        }
        at += 8 + len as usize + (len as usize & 1);
    }
    Err("no fmt chunk before the data chunk".into())
}

/// CPU ticks (its own and its reaped children's, and every live descendant's) and RSS (KiB) of
/// the process tree under `root`.
fn tree(root: u32) -> (u64, u64) {
    let mut procs: Vec<(u32, u32, u64)> = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|at| &stat[at + 2..]) else {
            continue;
        };
        let f: Vec<u64> = rest
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        if f.len() > 14 {
            // ppid, then utime, stime, cutime, cstime (fields 4, 14-17).
            procs.push((pid, f[0] as u32, f[10] + f[11] + f[12] + f[13]));
        }
    }
    let mut family = vec![root];
    let mut k = 0;
    while k < family.len() {
        let parent = family[k];
        family.extend(procs.iter().filter(|p| p.1 == parent).map(|p| p.0));
        k += 1;
    }
    let ticks = procs
        .iter()
        .filter(|p| family.contains(&p.0))
        .map(|p| p.2)
        .sum();
    let rss = family
        .iter()
        .map(|p| stats::status_kib(&p.to_string(), "VmRSS"))
        .sum();
    (ticks, rss)
}

/// What the transcriber published, from its log: finals (arrival here, text) and interims.
#[derive(Default)]
struct Published {
    finals: Mutex<Vec<(u64, String)>>,
    interims: AtomicU64,
    connected: AtomicBool,
    /// The box refused it (a wrong key or address): no use waiting.
    refused: AtomicBool,
    /// Its last log lines, for a failure's message.
    tail: Mutex<Vec<String>>,
}

/// The text of a `event=final … text="…"` log line (the value is JSON).
fn logged_text(line: &str) -> Option<String> {
    let at = line.find(" text=")? + 6;
    serde_json::Deserializer::from_str(&line[at..])
        .into_iter::<String>()
        .next()?
        .ok()
}

/// Read the transcriber's log as it comes.
fn read_log(log: impl std::io::Read, p: &Published) {
    for line in BufReader::new(log).lines().map_while(Result::ok) {
        let now = stats::now_us();
        if line.starts_with("event=final ") {
            if let Some(t) = logged_text(&line) {
                p.finals.lock().unwrap().push((now, t));
            }
        } else if line.starts_with("event=interim ") {
            p.interims.fetch_add(1, Relaxed);
        } else if line.starts_with("event=connected ") {
            p.connected.store(true, Relaxed);
        } else if line.starts_with("event=venue_connect_failed ") && line.contains("refused") {
            p.refused.store(true, Relaxed);
        }
        let mut tail = p.tail.lock().unwrap();
        if tail.len() == 20 {
            tail.remove(0);
        }
        tail.push(line);
    }
}

/// CPU ticks and RSS of both processes at one moment.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    feed_ticks: u64,
    feed_rss: u64,
    box_ticks: u64,
    box_rss: u64,
}

impl Sample {
    fn take(feed: u32, server: u32) -> Sample {
        let (feed_ticks, feed_rss) = tree(feed);
        let s = server.to_string();
        Sample {
            at: Instant::now(),
            feed_ticks,
            feed_rss,
            box_ticks: stats::cpu_ticks(&s).unwrap_or(0),
            box_rss: stats::status_kib(&s, "VmRSS"),
        }
    }
}

/// One phase: CPU seconds of each process over it, and the most RSS seen.
struct Phase {
    secs: f64,
    feed_cpu: f64,
    box_cpu: f64,
    feed_rss: u64,
    box_rss: u64,
}

/// Samples once a second over a phase, printing the progress line.
struct Watch {
    feed: u32,
    server: u32,
    tck: f64,
    first: Sample,
    last: Sample,
    peak: (u64, u64),
}

impl Watch {
    fn start(feed: u32, server: u32, tck: f64) -> Watch {
        let s = Sample::take(feed, server);
        Watch {
            feed,
            server,
            tck,
            first: s,
            last: s,
            peak: (s.feed_rss, s.box_rss),
        }
    }

    /// Sample if a second passed since the last sample; `what` leads the progress line.
    fn tick(&mut self, what: &str, force: bool) {
        if !force && self.last.at.elapsed() < Duration::from_secs(1) {
            return;
        }
        let s = Sample::take(self.feed, self.server);
        let dt = (s.at - self.last.at).as_secs_f64().max(1e-9);
        let pct = |a: u64, b: u64| a.saturating_sub(b) as f64 / self.tck / dt * 100.0;
        self.peak = (self.peak.0.max(s.feed_rss), self.peak.1.max(s.box_rss));
        if !force {
            eprintln!(
                "[{:6.1} s] {what}  transcriber CPU {:5.1} % RSS {:>7} KiB  server CPU {:5.1} % RSS {:>7} KiB",
                (s.at - self.first.at).as_secs_f64(),
                pct(s.feed_ticks, self.last.feed_ticks),
                s.feed_rss,
                pct(s.box_ticks, self.last.box_ticks),
                s.box_rss,
            );
        }
        self.last = s;
    }

    fn end(mut self) -> Phase {
        self.tick("", true);
        let (a, b) = (self.first, self.last);
        Phase {
            secs: (b.at - a.at).as_secs_f64(),
            feed_cpu: b.feed_ticks.saturating_sub(a.feed_ticks) as f64 / self.tck,
            box_cpu: b.box_ticks.saturating_sub(a.box_ticks) as f64 / self.tck,
            feed_rss: self.peak.0,
            box_rss: self.peak.1,
        }
    }
}

/// The transcriber, killed when dropped.
struct Feed(Child);

impl Drop for Feed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What the feed's run measured.
struct Played {
    start: Phase,
    play: Phase,
    audio_secs: f64,
    published: Arc<Published>,
    /// Finals still undelivered when the drain gave up (0 when all arrived).
    undelivered: u64,
}

fn measure(o: &Opts) -> Result<(), String> {
    if o.wavs.is_empty() {
        return Err(format!(
            "no WAV: give --wav FILE (none in {})",
            o.dir.join("samples/librivox").display()
        ));
    }
    let mut pcm = Vec::new();
    for w in &o.wavs {
        let bytes = std::fs::read(w).map_err(|e| format!("{}: {e}", w.display()))?;
        pcm.extend(wav_pcm(&bytes).map_err(|e| format!("{}: {e}", w.display()))?);
    }
    // As the WAV mode does: a second of silence so the last words are finalised.
    pcm.extend(std::iter::repeat_n(0u8, RATE));
    stats::now_us();
    let socket = std::env::temp_dir().join(format!("edge-load-venue-{}.sock", std::process::id()));
    let socket_s = socket.display().to_string();
    let (played, results) =
        route::outside_venue(&o.route, &socket_s, |vb| play(o, vb, &socket_s, &pcm))?;
    let _ = std::fs::remove_file(&socket);
    let played = played?;
    print!("{}", report(o, &played, &results));
    Ok(())
}

/// Start the transcriber as the feed, play the audio into it, wait for its finals to reach
/// every app.
fn play(o: &Opts, vb: &VenueBox, socket: &str, pcm: &[u8]) -> Result<Played, String> {
    let script = o.dir.join("transcriber.py");
    let mut cmd = Command::new("python3");
    cmd.arg(&script)
        .args(["--socket", socket, "--port", "0", "--package", vb.package])
        .args(["--api-key", &vb.key, "--venue-audio", "-"]);
    if let Some(e) = &o.engine {
        cmd.args(["--engine", e]);
    }
    let tck = stats::clock_ticks() as f64;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start python3 {}: {e}", script.display()))?;
    let (stdin, log) = (child.stdin.take(), child.stderr.take());
    let feed = Feed(child);
    let pid = feed.0.id();
    let published = Arc::new(Published::default());
    if let Some(log) = log {
        let p = published.clone();
        thread::spawn(move || read_log(log, &p));
    }
    eprintln!("transcriber: pid {pid}, {}", script.display());

    // Start: until the feed is connected (the model is loaded first).
    let mut w = Watch::start(pid, vb.pid, tck);
    let limit = Instant::now() + Duration::from_secs(120);
    while !published.connected.load(Relaxed) {
        let refused = published.refused.load(Relaxed);
        if refused || Instant::now() > limit || !stats::alive(&pid.to_string()) {
            let tail = published.tail.lock().unwrap().join("\n");
            return Err(format!(
                "the transcriber did not connect as the feed; its log:\n{tail}"
            ));
        }
        w.tick("start: loading the model", false);
        thread::sleep(Duration::from_millis(10));
    }
    let start = w.end();

    // Play: the audio in real time, then until every final reached every app.
    let mut w = Watch::start(pid, vb.pid, tck);
    let mut stdin: ChildStdin = stdin.ok_or("no stdin to the transcriber")?;
    let t0 = Instant::now();
    let audio_secs = pcm.len() as f64 / RATE as f64;
    let status = |p: &Published| {
        format!(
            "audio {:5.1}/{audio_secs:.1} s  finals {} published, {} delivered",
            t0.elapsed().as_secs_f64().min(audio_secs),
            p.finals.lock().unwrap().len(),
            vb.sh.delivered.load(Relaxed),
        )
    };
    for (k, chunk) in pcm.chunks(CHUNK).enumerate() {
        let due = t0 + Duration::from_secs_f64((k * CHUNK) as f64 / RATE as f64);
        while Instant::now() < due {
            thread::sleep((due - Instant::now()).min(Duration::from_millis(20)));
            w.tick(&status(&published), false);
        }
        stdin
            .write_all(chunk)
            .map_err(|e| format!("writing audio to the transcriber: {e}"))?;
    }
    // Its standard input stays open (the feed stays up) until every final was delivered: the
    // transcriber has until 3 s without a new result or delivery, 10 s at most.
    let mut seen = (0, 0, Instant::now());
    let limit = Instant::now() + Duration::from_secs(10);
    let undelivered = loop {
        let finals = published.finals.lock().unwrap().len() as u64;
        let results = finals + published.interims.load(Relaxed);
        let d = vb.sh.delivered.load(Relaxed);
        let want = finals * vb.apps as u64;
        if (results, d) != (seen.0, seen.1) {
            seen = (results, d, Instant::now());
        }
        let quiet = seen.2.elapsed() > Duration::from_secs(3);
        if (d >= want && quiet) || Instant::now() > limit {
            break want.saturating_sub(d);
        }
        w.tick(&status(&published), false);
        thread::sleep(Duration::from_millis(5));
    };
    let play = w.end();
    drop(stdin);
    drop(feed);
    Ok(Played {
        start,
        play,
        audio_secs,
        published,
        undelivered,
    })
}

/// The summary: per app, finals delivered and lost, in order, latency; per phase, CPU and RSS.
fn report(o: &Opts, p: &Played, results: &[AppResult]) -> String {
    let finals = p.published.finals.lock().unwrap();
    let interims = p.published.interims.load(Relaxed);
    let mut hist = Histogram::default();
    let (mut delivered, mut lost, mut same, mut got_interims) = (0u64, 0u64, 0usize, 0u64);
    for r in results {
        delivered += r.captions.len() as u64;
        lost += (finals.len() as u64).saturating_sub(r.captions.len() as u64);
        got_interims += r.caption_interims;
        let texts_match = r.captions.len() == finals.len()
            && r.captions
                .iter()
                .zip(finals.iter())
                .all(|(a, b)| a.1 == b.1);
        same += usize::from(texts_match);
        for ((at, _), (sent, _)) in r.captions.iter().zip(finals.iter()) {
            hist.record(at.saturating_sub(*sent));
        }
    }
    let apps = results.len();
    let ms = |us: u64| us as f64 / 1000.0;
    let mut out = format!(
        "venue feed by the real transcriber: {} sessions × {} apps ({apps} apps reporting), \
         {:.1} s of audio from {} WAV file(s)\n",
        asked(o, "--sessions"),
        asked(o, "--apps"),
        p.audio_secs,
        o.wavs.len(),
    );
    out += &format!(
        "finals            {} published; delivered {delivered} of {}: lost {lost}; \
         {same} of {apps} apps got every final in order with the same words\n",
        finals.len(),
        finals.len() * apps,
    );
    if p.undelivered > 0 {
        out += &format!(
            "                  the drain gave up with {} undelivered\n",
            p.undelivered
        );
    }
    out += &format!(
        "interims          {interims} published; delivered {got_interims} of {} (lossy for an app behind)\n",
        interims * apps as u64
    );
    out += &format!(
        "latency (finals)  publish → app p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} samples; from the transcriber's log line written just before it sends)\n",
        ms(hist.quantile(0.5)),
        ms(hist.quantile(0.99)),
        ms(hist.max),
        hist.n
    );
    let deliveries = delivered + got_interims;
    let per_delivery = match p.play.box_cpu {
        0.0 => "below the 10 ms CPU tick".to_string(),
        cpu => format!("{:.1} µs", cpu * 1e6 / deliveries.max(1) as f64),
    };
    out += &format!(
        "deliveries        {deliveries} in the play phase (finals and interims); server CPU per delivery {per_delivery}\n"
    );
    for (name, ph) in [("start", &p.start), ("play", &p.play)] {
        let per = |cpu: f64| match name {
            "play" => format!(", {:.3} s per s of audio", cpu / p.audio_secs),
            _ => String::new(),
        };
        out += &format!(
            "phase {name:<6}      {:.1} s: transcriber CPU {:.2} s{}, RSS peak {:.1} MB; server CPU {:.3} s{}, RSS peak {:.1} MB\n",
            ph.secs,
            ph.feed_cpu,
            per(ph.feed_cpu),
            ph.feed_rss as f64 / 1024.0,
            ph.box_cpu,
            per(ph.box_cpu),
            ph.box_rss as f64 / 1024.0,
        );
    }
    out += &format!(
        "box               transcriber + server: {:.3} s CPU per s of audio while playing\n",
        (p.play.feed_cpu + p.play.box_cpu) / p.audio_secs
    );
    out
}

/// Sessions or apps per session, as asked (`route`'s default 4), for the summary line.
fn asked(o: &Opts, flag: &str) -> usize {
    o.route
        .iter()
        .position(|a| a == flag)
        .and_then(|i| o.route.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav(channels: u16, rate: u32, data: &[u8]) -> Vec<u8> {
        let mut w = b"RIFF\0\0\0\0WAVEfmt \x10\0\0\0\x01\0".to_vec();
        w.extend(channels.to_le_bytes());
        w.extend(rate.to_le_bytes());
        w.extend((rate * 2 * channels as u32).to_le_bytes());
        w.extend((2 * channels).to_le_bytes());
        w.extend(16u16.to_le_bytes());
        w.extend(b"LIST\x03\0\0\0abc\0");
        w.extend(b"data");
        w.extend((data.len() as u32).to_le_bytes());
        w.extend(data);
        w
    }

    #[test]
    fn a_16k_mono_wav_gives_its_samples_and_other_formats_are_refused_by_name() {
        assert_eq!(
            wav_pcm(&wav(1, 16_000, &[1, 2, 3, 4])),
            Ok(vec![1, 2, 3, 4])
        );
        let e = wav_pcm(&wav(2, 16_000, &[1, 2, 3, 4])).unwrap_err();
        assert!(e.contains("2 channels"), "{e}");
        let e = wav_pcm(&wav(1, 44_100, &[1, 2])).unwrap_err();
        assert!(e.contains("44100 Hz"), "{e}");
        assert!(wav_pcm(b"RIFX").is_err());
    }

    #[test]
    fn a_final_log_line_gives_its_text() {
        let line = r#"event=final session="venue" text="it \"was\" so" start_ms=10 end_ms=900"#;
        assert_eq!(logged_text(line).as_deref(), Some(r#"it "was" so"#));
        assert_eq!(logged_text("event=final session=\"venue\""), None);
    }
}
