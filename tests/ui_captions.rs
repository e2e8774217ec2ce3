//! Live captions in the browser from the one command, as a new user tries them: runs
//! `contrib/captions-stack.sh` (this build's binary through `EDGE_BIN`), reads from what it
//! prints the glasses emulator's URL, the glasses token, the operator page's URL and the
//! operator token, and has `tests/ui/captions.mjs` walk it in the distribution's headless
//! Chromium: paste the token, pick a WAV file as the source, start Live Captions, choose a
//! recording of real speech (LibriVox, `contrib/transcriber/samples/librivox`) once the
//! microphone is on, read its words on the emulated display, and find the session with the app
//! active on the operator page. Where `apertium-eng-spa` is installed it then picks "Español"
//! in the emulator's Captions language (the captions app's `targetLanguage` setting), plays the
//! recording again and reads Spanish words (Apertium's) on the display.
//!
//! Needs what `tests/captions.rs` needs (python3 with moonshine_voice and pocketsphinx, node,
//! npm) and `chromium` (or `UI_CHROMIUM=/path`); without them the test prints a message and
//! passes, except under `CI=true`. Screenshots go to `target/ui-screens/captions-*.png`.

#[path = "support/captions.rs"]
mod captions;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/tools.rs"]
mod tools;

use captions::{prerequisites, read_wav, tail, TempDir};
use ports::free_port;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};
use tools::{npm_ci, skip};

/// "He was not an ill disposed young man" (LibriVox, 3 s).
const WAV: &str =
    "contrib/transcriber/samples/librivox/sense_and_sensibility_01_austen_64kb-0880.wav";
/// Words of it the captions must show (Moonshine's "ill-disposed" splits in two words).
const EXPECT: &str = "he was not an young man";
/// Words of Apertium's Spanish for it ("no fue un hombre joven …").
const EXPECT_ES: &str = "hombre joven";

/// The recording with `ms` of silence after it, as a 16-bit mono WAV: the emulator sends
/// nothing after a file, where glasses would go on sending, and the final of the last line
/// comes after a pause.
fn with_silence(wav: &[u8], ms: usize) -> Vec<u8> {
    let (rate, mut samples) = read_wav(wav).expect("a 16-bit WAV");
    samples.extend(std::iter::repeat_n(0, rate * ms / 1000));
    let data = samples.len() * 2;
    let mut out = Vec::with_capacity(44 + data);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    for v in [
        16u32,
        1 | (1 << 16),
        rate as u32,
        2 * rate as u32,
        2 | (16 << 16),
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(data as u32).to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

/// The stack's script, stopped with TERM (its trap stops what it started) when dropped.
struct Stack(Child);

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.id().to_string()).status();
        let _ = self.0.wait();
    }
}

/// The line after the first line of `out` that contains `marker`.
fn after(out: &str, marker: &str) -> Option<String> {
    let mut lines = out.lines();
    lines.find(|l| l.contains(marker))?;
    lines.next().map(|l| l.trim().to_string())
}

#[test]
fn captions_in_the_browser_from_the_stack() {
    let Some(root) = prerequisites() else { return };
    let chromium = match std::env::var("UI_CHROMIUM") {
        Ok(p) => Some(PathBuf::from(p)),
        Err(_) => ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.exists()),
    }
    .filter(|p| p.exists());
    let Some(chromium) = chromium else {
        skip("captions browser test skipped: missing chromium (apt-get install chromium)");
        return;
    };
    if let Err(e) = npm_ci(&root.join("tests/ui"), "playwright-core/package.json") {
        panic!("{e}");
    }
    let dir = TempDir::new().expect("temp dir");
    let out_path = dir.0.join("stack.out");
    let port = free_port().unwrap();
    let _stack = Stack(
        Command::new("bash")
            .arg(root.join("contrib/captions-stack.sh"))
            .env("EDGE_BIN", env!("CARGO_BIN_EXE_augmentos-edge"))
            .env("PORT", port.to_string())
            .env("APP_PORT", free_port().unwrap().to_string())
            .env("STT_PORT", free_port().unwrap().to_string())
            .env("CAPTIONS_STACK_DIR", dir.0.join("stack"))
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(fs::File::create(&out_path).unwrap())
            .stderr(fs::File::create(dir.0.join("stack.err")).unwrap())
            .spawn()
            .expect("run contrib/captions-stack.sh"),
    );
    let logs = || -> String {
        [
            "stack.out",
            "stack.err",
            "stack/transcriber.log",
            "stack/server.log",
        ]
        .iter()
        .map(|f| format!("\n--- {f} (tail)\n{}", tail(&dir.0.join(f), 20)))
        .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let printed = loop {
        let text = fs::read_to_string(&out_path).unwrap_or_default();
        if text.contains("running; Ctrl-C") {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "the stack did not start{}",
            logs()
        );
        thread::sleep(Duration::from_millis(200));
    };
    let glasses_token = after(&printed, "with this token").expect("a glasses token");
    let emulator = after(&printed, "the glasses emulator").expect("the emulator URL");
    let operator = after(&printed, "the operator page").expect("the operator URL");
    let operator_token = after(&printed, &operator).expect("the operator token");
    assert_eq!(emulator, format!("http://127.0.0.1:{port}/ui/glasses"));
    assert_eq!(operator, format!("http://127.0.0.1:{port}/ui/operator"));
    assert!(
        operator_token.len() >= 16,
        "operator token {operator_token:?}"
    );

    let shots = root.join("target/ui-screens");
    let wav = dir.0.join("speech.wav");
    fs::write(&wav, with_silence(&fs::read(root.join(WAV)).unwrap(), 1500)).unwrap();
    let out = Command::new("node")
        .arg("captions.mjs")
        .current_dir(root.join("tests/ui"))
        .env("CHROMIUM", &chromium)
        .env("EMULATOR_URL", &emulator)
        .env("OPERATOR_URL", &operator)
        .env("GLASSES_TOKEN", &glasses_token)
        .env("OPERATOR_TOKEN", &operator_token)
        .env("USER_ID", "you@example.com")
        .env("WAV", &wav)
        .env("EXPECT", EXPECT)
        .env(
            "EXPECT_ES",
            if std::path::Path::new("/usr/share/apertium/modes/eng-spa.mode").exists() {
                EXPECT_ES
            } else {
                ""
            },
        )
        .env("SHOTS", &shots)
        .env("PROFILE", dir.0.join("chromium-profile"))
        .stdin(Stdio::null())
        .output()
        .expect("run node tests/ui/captions.mjs");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "the browser walk failed:\n{report}{}",
        logs()
    );
    eprintln!("{report}");
}
