//! Cost of speech for `audio.speak` (`GET /api/tts`, issue 24's benchmark).
//!
//! Two measurements:
//! - `tts/synthesis/100_chars` — one espeak-ng run as the speech worker makes it
//!   (`reactor::tts::synthesize`: spawn, text on stdin, the WAV read from stdout) for 100
//!   characters of English text: the time a phone waits on a cache miss, per 100 characters
//!   (espeak-ng's cost grows about linearly with the text);
//! - `tts/cache_hit` — a repeated request through the whole core (`Server`: the request parsed,
//!   routed, the query decoded and cleaned, the cache looked up, the WAV of those 100 characters
//!   written into the connection's output) with no synthesis: the time and the bytes a repeat
//!   costs the event loop.
//!
//! Needs `espeak-ng` (skipped with a message without it).
//! `cargo bench --bench tts` (`-- --quick` for a short run).

use augmentos_edge::hub::HubConfig;
use augmentos_edge::net::Peer;
use augmentos_edge::reactor::tts::synthesize;
use augmentos_edge::server::tts::TtsConfig;
use augmentos_edge::server::{Server, ServerConfig};
use augmentos_edge::time::{Instant, Now, Wall};
use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

/// 100 characters.
const TEXT: &str =
    "The keynote starts at ten in the main hall. Lunch is served on the second floor at noon today. Enjoy";

fn now() -> Now {
    Now::new(Instant::from_micros(1_000_000), Wall::from_micros(0))
}

/// One GET on a fresh connection; the bytes of the answer.
fn get(server: &mut Server, request: &[u8]) -> usize {
    let id = server
        .handle_accept(Peer::InProcess, now())
        .expect("a slot");
    let mut bytes = request.to_vec();
    server.handle_input(id, &mut bytes, now());
    let n = server.output(id).len();
    server.consume_output(id, n);
    server.handle_closed(id, now());
    n
}

fn bench(c: &mut Criterion) {
    assert_eq!(TEXT.chars().count(), 100);
    let timeout = Duration::from_secs(30);
    if synthesize("espeak-ng", "en-us", "ok", timeout).is_err() {
        eprintln!("tts bench skipped: espeak-ng is not installed");
        return;
    }
    let mut g = c.benchmark_group("tts");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    g.bench_function("synthesis/100_chars", |b| {
        b.iter(|| synthesize("espeak-ng", "en-us", TEXT, timeout).expect("speech"))
    });

    let mut server = Server::new(ServerConfig::default(), HubConfig::default(), now())
        .with_tts(TtsConfig::default());
    let query: String = TEXT.replace(' ', "+");
    let request = format!("GET /api/tts?text={query}&voice_id=x HTTP/1.1\r\nHost: box\r\n\r\n");
    // The first request is a miss: synthesise it as the worker would, then it is cached.
    let id = server
        .handle_accept(Peer::InProcess, now())
        .expect("a slot");
    server.handle_input(id, &mut request.clone().into_bytes(), now());
    let job = server.poll_tts_job().expect("a job");
    let started = std::time::Instant::now();
    let result = synthesize(&server.tts.config().command, &job.voice, &job.text, timeout);
    let took = started.elapsed();
    server.handle_tts_done(
        augmentos_edge::server::tts::TtsDone {
            id: job.id,
            result,
            took,
        },
        now(),
    );
    let answer = server.output(id).len();
    assert!(
        answer > 100_000,
        "the first answer is the WAV ({answer} bytes)"
    );
    println!("tts: 100 characters → {answer} bytes of WAV (answer with headers)");
    assert_eq!(
        get(&mut server, request.as_bytes()),
        answer,
        "a hit answers the same"
    );
    g.bench_function("cache_hit", |b| {
        b.iter(|| get(&mut server, request.as_bytes()))
    });
    g.finish();
    let hits = server.tts.counters.cache_hits;
    assert!(hits > 1, "the repeats were cache hits ({hits})");
}

criterion_group!(benches, bench);
criterion_main!(benches);
