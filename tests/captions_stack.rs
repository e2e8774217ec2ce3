//! The one command that runs the whole captioning stack (`contrib/captions-stack.sh`) works:
//! run with `--demo`, it starts the box (this build's binary, through `EDGE_BIN`), the
//! transcriber and the captions app from a generated config, speaks a sentence into the box
//! through `contrib/captions-glasses.py`, prints the captions the glasses are shown and exits.
//! Run as a new user would, with no phrase list (the default engine, Moonshine, alone): asserts
//! that it exits 0 and that a caption carried at least five of the sentence's six words
//! (PocketSphinx's general model gets two or three of them from espeak-ng's voice).
//!
//! Same prerequisites as `tests/captions.rs` (python3 with moonshine_voice and pocketsphinx,
//! espeak-ng, node, npm);
//! without them the test prints a message and passes, except under `CI=true`.

#[path = "support/captions.rs"]
mod captions;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/tools.rs"]
mod tools;

use captions::*;
use std::fs;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const SAID: &str = "What time is the meeting tomorrow";

#[test]
fn captions_stack_demo() {
    let Some(root) = prerequisites() else { return };
    let dir = TempDir::new().expect("temp dir");
    let out = dir.0.join("stack.out");
    let mut child = Command::new("bash")
        .arg(root.join("contrib/captions-stack.sh"))
        .args(["--demo", SAID])
        .env("EDGE_BIN", env!("CARGO_BIN_EXE_augmentos-edge"))
        .env("PORT", free_port().unwrap().to_string())
        .env("APP_PORT", free_port().unwrap().to_string())
        .env("STT_PORT", free_port().unwrap().to_string())
        .env("CAPTIONS_STACK_DIR", dir.0.join("stack"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out).unwrap())
        .stderr(Stdio::from(
            fs::File::create(dir.0.join("stack.err")).unwrap(),
        ))
        .spawn()
        .expect("run contrib/captions-stack.sh");
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break Some(st);
        }
        if Instant::now() > deadline {
            // TERM, so that the script's trap stops what it started.
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(100));
    };
    let text = fs::read_to_string(&out).unwrap_or_default();
    let logs: String = ["stack.err", "stack/transcriber.log", "stack/server.log"]
        .iter()
        .map(|f| format!("\n--- {f} (tail)\n{}", tail(&dir.0.join(f), 20)))
        .collect();
    assert!(
        status.is_some_and(|s| s.success()),
        "captions-stack.sh --demo failed ({status:?}):\n{text}{logs}"
    );
    let said = words(SAID);
    // The caption that carries the most of the sentence's words.
    let best = text
        .lines()
        .filter_map(|l| l.strip_prefix("caption: "))
        .map(|c| {
            let got = words(&c.replace("\\n", " "));
            (said.iter().filter(|w| got.contains(w)).count(), c)
        })
        .max_by_key(|(n, _)| *n);
    let Some((hit, caption)) = best else {
        panic!("no caption:\n{text}{logs}");
    };
    assert!(
        hit >= said.len() - 1,
        "the best caption has {hit} of the {} words of {SAID:?}: {caption}\n{text}{logs}",
        said.len()
    );
    eprintln!(
        "captions-stack.sh --demo: {hit} of {} words in the best caption, {caption}",
        said.len()
    );
}
