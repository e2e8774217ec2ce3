//! Venue captions end to end: one recording played as the room's feed through the real
//! transcriber (`contrib/transcriber`, venue mode: `--venue-audio FILE`) reaches the stock-SDK
//! captions app (`examples/live-captions`) in several sessions, all of which see the same
//! words, while no session's microphone is ever switched on.
//!
//! The recording opens with silence, so the glasses connect and start the captions app while
//! the feed is already live: the box must never ask their microphones for anything. Then three
//! spoken sentences; every session must get final captions, the same finals in the same order,
//! with a word recall of at least [`MIN_RECALL`].
//!
//! Needs what `tests/captions.rs` needs (`python3` with `pocketsphinx`, `espeak-ng`, `node`);
//! without them it prints a message and passes, except under `CI=true`.

#[path = "support/captions.rs"]
mod captions;
#[path = "support/ports.rs"]
mod ports;
#[path = "support/tools.rs"]
mod tools;

use captions::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

/// Lines of the event's script (the phrase list the transcriber is given).
const SENTENCES: [&str; 3] = [
    "Welcome to the conference",
    "The keynote starts at ten in the main hall",
    "Please silence your phones during the talks",
];
const USERS: [&str; 3] = [
    "venue-a@example.com",
    "venue-b@example.com",
    "venue-c@example.com",
];
/// Silence before the speech: time for every pair of glasses to connect and start the app.
const LEAD_IN_MS: usize = 10_000;
/// Words recognised of those spoken, over every session (each sees the same words).
const MIN_RECALL: f64 = 0.5;

#[test]
fn a_recording_played_as_the_venue_feed_reaches_every_session_with_microphones_off() {
    let Some(root) = prerequisites() else { return };
    let opts = Options {
        venue: true,
        ..Options::default()
    };
    let mut stack = Stack::start(&root, opts).expect("the captions stack did not start");
    if let Err(e) = run(&mut stack) {
        panic!("{e}{}", stack.logs());
    }
}

fn run(stack: &mut Stack) -> R {
    let (speech, spoken) = speech(&stack.dir.0, &SENTENCES)?;
    let mut pcm = silence(LEAD_IN_MS);
    pcm.extend_from_slice(&speech);
    let file = stack.dir.0.join("room.wav");
    fs::write(&file, wav_file(&pcm)).map_err(|e| e.to_string())?;
    stack.venue_transcriber(&file)?;

    let config = stack.config.to_string_lossy().into_owned();
    let mut all = Vec::new();
    for user in USERS {
        let token = cli(&["token", "--user", user, "--config", &config])?;
        let log = stack.dir.0.join(format!("glasses-{user}.log"));
        let mut g = Glasses::connect(stack.port, &token, &log)?;
        g.send(json!({"type": "connection_init"}))?;
        g.send(json!({"type": "start_app", "packageName": APP}))?;
        stack.app.wait_event("session", STEP)?;
        all.push(g);
    }
    // The recording plays on its own clock: read every pair of glasses until it has ended and
    // the last words had time to come out.
    let step = Duration::from_millis(60);
    let deadline =
        std::time::Instant::now() + Duration::from_millis((pcm.len() / 32) as u64) + STEP;
    let mut ended = None;
    while ended.is_none_or(|at: std::time::Instant| at.elapsed() < Duration::from_secs(3)) {
        for g in &mut all {
            g.idle(step)?;
        }
        if ended.is_none()
            && stack
                .stt
                .drain()
                .iter()
                .any(|v| v["event"] == "venue_audio_ended")
        {
            ended = Some(std::time::Instant::now());
        }
        if std::time::Instant::now() > deadline {
            return Err("the venue transcriber never finished playing the recording".into());
        }
    }

    for (user, g) in USERS.iter().zip(&all) {
        if let Some((_, on)) = g.mic.iter().find(|m| m.1) {
            return Err(format!(
                "{user}: the microphone was switched on ({on}) while the venue feed was live"
            ));
        }
    }
    let mut finals: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in stack.app.drain().iter().filter(|v| v["event"] == "caption") {
        if c["isFinal"] == true {
            let heard = c["heard"].as_str().unwrap_or("").to_string();
            let session = c["sessionId"].as_str().unwrap_or("").to_string();
            finals.entry(session).or_default().push(heard);
        }
    }
    if finals.len() != USERS.len() {
        return Err(format!(
            "final captions in {} of {} sessions: {finals:?}",
            finals.len(),
            USERS.len()
        ));
    }
    let first = finals.values().next().cloned().unwrap_or_default();
    for (session, lines) in &finals {
        if *lines != first {
            return Err(format!("{session} saw {lines:?}, another {first:?}"));
        }
    }
    let said: Vec<String> = spoken.iter().flat_map(|s| words(&s.text)).collect();
    let heard: Vec<String> = first.iter().flat_map(|l| words(l)).collect();
    let hit = said.iter().filter(|w| heard.contains(w)).count();
    let recall = hit as f64 / said.len() as f64;
    eprintln!(
        "venue captions: {} sessions saw the same {} finals, recall {recall:.2}: {first:?}",
        USERS.len(),
        first.len()
    );
    if recall < MIN_RECALL {
        return Err(format!(
            "word recall {recall:.2} below {MIN_RECALL}: {first:?}"
        ));
    }
    Ok(())
}
