//! Seeded simulation suite: thousands of random scenarios (glasses and apps coming and going,
//! webhooks answered, late or failed, transcripts, displays, device requests, state writes,
//! transport faults, restarts from the store) through the deterministic world, with the
//! product's invariants checked after every step (`augmentos_edge::sim::scenario`).
//!
//! `SIM_SCENARIOS=N` runs N scenarios (default 3000), `SIM_STEPS=N` makes each N operations
//! long (default 120), `SIM_FIRST=S` starts at seed S (default 1), `SIM_SEED=S` replays the one scenario of seed S (a failure prints it).
//! Odd seeds run with short reads and writes on every connection.
//!
//! The venue suite runs the same operations in a world with two named venue feeds, plus the
//! feeds' publishers connecting, dropping and publishing (transcripts, translations, interims,
//! finals) and the operator switching users between feeds: every final a feed published while
//! an app of a following session was bound and subscribed reaches it in order under its own
//! subscription string, and no venue line reaches a session that did not follow its feed.
//! `SIM_VENUE_SCENARIOS=N` (default 400) and `SIM_VENUE_FIRST=S`; `SIM_VENUE_SEED=S` replays one.

use augmentos_edge::sim::scenario::{Scenario, Seeded};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// One scenario of `seed`; `Err(message)` if an invariant broke (or anything panicked).
fn run(
    seed: u64,
    steps: usize,
    venue: bool,
) -> Result<augmentos_edge::sim::scenario::Tally, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let faults = if seed % 2 == 1 { seed } else { 0 };
        let mut s = if venue {
            Scenario::with_venue(faults)
        } else {
            Scenario::new(faults)
        };
        s.run(&mut Seeded::new(seed), steps);
        s.tally
    }))
    .map_err(|e| {
        e.downcast_ref::<String>()
            .cloned()
            .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default()
    })
}

#[test]
fn random_scenarios_keep_every_invariant() {
    let seeds: Vec<u64> = match env("SIM_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_FIRST").unwrap_or(1);
            (first..first + env("SIM_SCENARIOS").unwrap_or(3000)).collect()
        }
    };
    let total = run_all(&seeds, false);
    // The display model only checks what it is fed: a trace that never reaches it would let
    // every screen pass unchecked.
    assert!(
        seeds.len() < 100 || total.screens_modelled > 0,
        "no screen was checked against the display rules: the hub's display trace is not reaching the model"
    );
}

#[test]
fn random_venue_scenarios_keep_every_invariant() {
    let seeds: Vec<u64> = match env("SIM_VENUE_SEED") {
        Some(seed) => vec![seed],
        None => {
            let first = env("SIM_VENUE_FIRST").unwrap_or(1);
            (first..first + env("SIM_VENUE_SCENARIOS").unwrap_or(400)).collect()
        }
    };
    let total = run_all(&seeds, true);
    // The venue invariants only check what the scenarios make happen.
    assert!(
        seeds.len() < 100 || total.venue_finals_checked > 0,
        "no venue final was checked: the feeds never reached a subscribed app"
    );
}

/// Every scenario of `seeds` (in a venue world or not); the summed tally, or a failure naming
/// the failing seeds.
fn run_all(seeds: &[u64], venue: bool) -> augmentos_edge::sim::scenario::Tally {
    let steps = env("SIM_STEPS").unwrap_or(120) as usize;
    let replay = if venue { "SIM_VENUE_SEED" } else { "SIM_SEED" };
    let mut total = augmentos_edge::sim::scenario::Tally::default();
    let mut failed = Vec::new();
    for &seed in seeds {
        match run(seed, steps, venue) {
            Ok(t) => {
                total.steps += t.steps;
                total.finals_checked += t.finals_checked;
                total.restarts += t.restarts;
                total.displays += t.displays;
                total.replies += t.replies;
                total.screens_modelled += t.screens_modelled;
                total.venue_finals_checked += t.venue_finals_checked;
                total.offline_lines += t.offline_lines;
            }
            Err(msg) => {
                eprintln!("scenario seed {seed} failed (replay: {replay}={seed}):\n{msg}");
                failed.push(seed);
            }
        }
    }
    eprintln!(
        "simulation{}: {} scenarios, {} steps, {} finals checked, {} restarts, {} displays, {} replies, {} screens checked against the display rules, {} venue finals checked, {} feed-offline lines shown",
        if venue { " (venue)" } else { "" },
        seeds.len(),
        total.steps,
        total.finals_checked,
        total.restarts,
        total.displays,
        total.replies,
        total.screens_modelled,
        total.venue_finals_checked,
        total.offline_lines
    );
    assert!(failed.is_empty(), "failing seeds: {failed:?}");
    total
}

// ---- regressions: each bug the suite found, as a plain scenario ---------------------------

mod regress {
    use augmentos_edge::auth::jwt;
    use augmentos_edge::net::Peer;
    use augmentos_edge::sim::scenario::{hub_config, server_config, PACKAGES, SECRET, USERS};
    use augmentos_edge::sim::World;
    use serde_json::json;
    use std::time::Duration;

    pub const CAPTIONS: usize = 0;

    pub fn world() -> World {
        World::with_hub(server_config(), hub_config())
    }

    /// Glasses of user 0, connected and initialised.
    pub fn glasses(w: &mut World) -> usize {
        let g = w.connect();
        let bearer = format!(
            "Authorization: Bearer {}",
            jwt::glasses_token(USERS[0], SECRET)
        );
        assert_eq!(w.upgrade_with(g, "/glasses-ws", &[&bearer]).0, 101);
        w.send_text(g, r#"{"type":"connection_init"}"#);
        assert_eq!(w.json_messages(g)[0]["type"], "connection_ack");
        g
    }

    /// Start `app` in user 0's session from the glasses; it connects and is acked.
    pub fn app(w: &mut World, g: usize, app: usize) -> usize {
        w.send_text(
            g,
            &json!({"type": "start_app", "packageName": PACKAGES[app]}).to_string(),
        );
        let c = w.connect_from(Peer::Ip(([10, 0, 0, 9], 4000).into()));
        assert_eq!(w.upgrade(c, "/app-ws"), 101);
        w.send_text(
            c,
            &json!({"type": "tpa_connection_init", "packageName": PACKAGES[app],
                "sessionId": format!("{}-{}", USERS[0], PACKAGES[app]),
                "apiKey": format!("{}-key", PACKAGES[app])})
            .to_string(),
        );
        assert_eq!(w.json_messages(c)[0]["type"], "tpa_connection_ack");
        for i in w.open_outbound() {
            w.respond_http(i, 200);
        }
        c
    }

    /// An app that half-closes its connection while not reading what is queued for it was
    /// kept "active" forever: the finished connection had no deadline, so the hub was never
    /// told, never reconnected or restarted it, and everything routed to it was lost.
    #[test]
    fn a_half_closed_app_that_never_reads_is_dropped_at_the_close_deadline() {
        let mut w = world();
        let g = glasses(&mut w);
        let a = app(&mut w, g, CAPTIONS);
        w.send_text(
            a,
            r#"{"type":"subscription_update","subscriptions":["button_press"]}"#,
        );
        w.set_reading(a, false);
        w.send_text(g, r#"{"type":"button_press","buttonId":"select"}"#);
        w.client_eof(a);
        w.advance(Duration::from_millis(1999));
        assert_eq!(
            w.server.hub.app_state(USERS[0], PACKAGES[CAPTIONS]),
            Some("active")
        );
        w.advance(Duration::from_millis(1));
        assert!(
            w.clients[a].closed,
            "the connection outlived its close deadline"
        );
        assert_eq!(
            w.server.hub.app_state(USERS[0], PACKAGES[CAPTIONS]),
            Some("reconnecting")
        );
    }
}

/// Every scenario-mode seed of the whole-core fuzz target (byte 0 with bit 7 set), replayed
/// here too: the inputs the fuzzer found failing are kept there as seeds.
#[test]
fn fuzz_scenario_seeds_keep_every_invariant() {
    use augmentos_edge::sim::scenario::run_bytes;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/server_core");
    let mut ran = 0;
    for e in std::fs::read_dir(dir).expect("the fuzz corpus") {
        let path = e.expect("an entry").path();
        let data = std::fs::read(&path).expect("a seed");
        if data.first().is_none_or(|b| b & 0x80 == 0) {
            continue;
        }
        let result = catch_unwind(AssertUnwindSafe(|| run_bytes(&data, 400)));
        assert!(result.is_ok(), "{} broke an invariant", path.display());
        ran += 1;
    }
    assert!(ran >= 6, "only {ran} scenario seeds");
}
