//! Shell layer: the command line. Parses arguments, loads the config (reads the file, parses
//! it with [`Config::from_json`], applies the environment override), runs the reactor, or
//! prints a key hash or a token.

use augmentos_edge::auth;
use augmentos_edge::config::{Config, DEV_SECRET};
use augmentos_edge::reactor::{bind_all, Clock, Reactor};
use augmentos_edge::server::Server;
use augmentos_edge::state::sqlite::open_configured;
use std::process::ExitCode;

const USAGE: &str = "usage:
  augmentos-edge serve [--config FILE]                 run the server (embedded loopback default without --config)
  augmentos-edge hash-key KEY                          print the stored form (hashedApiKey) of an app API key
  augmentos-edge token --user EMAIL [--config FILE]    print a glasses token for that user
  augmentos-edge app-token --package NAME [--config FILE]
                                                       print an app token (one secret instead of package + key)
  augmentos-edge help                                  this text";

fn main() -> ExitCode {
    augmentos_edge::logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or(&[]);
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve(rest),
        Some("hash-key") => match rest {
            [key] => {
                println!("{}", auth::hash_api_key(key));
                Ok(())
            }
            _ => Err(format!("hash-key takes exactly one KEY\n{USAGE}")),
        },
        Some("token") => token(rest),
        Some("app-token") => app_token(rest),
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(format!("unknown command '{other}'\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augmentos-edge: {e}");
            ExitCode::from(2)
        }
    }
}

/// Parse `--name value` pairs; every flag must be one of `known`.
fn flags<'a>(args: &'a [String], known: &[&str]) -> Result<Vec<(&'a str, &'a str)>, String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        if !known.contains(&flag.as_str()) {
            return Err(format!("unknown argument '{flag}'\n{USAGE}"));
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        out.push((flag.as_str(), value.as_str()));
    }
    Ok(out)
}

/// The environment variable that, when set and not empty, overrides the configured secret.
const SECRET_ENV: &str = "AUGMENTOS_AUTH_JWT_SECRET";

/// The config file at `path` (the embedded default without one), then the environment.
fn load(path: Option<&str>) -> Result<Config, String> {
    let mut c = match path {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read config {path}: {e}"))?;
            Config::from_json(&text).map_err(|e| format!("config {path}: {e}"))?
        }
        None => Config::embedded(),
    };
    if let Ok(s) = std::env::var(SECRET_ENV) {
        if !s.is_empty() {
            c.dev_secret = s == DEV_SECRET;
            c.hub.jwt_secret = s.into_bytes();
        }
    }
    Ok(c)
}

fn serve(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--config"])?;
    let path = f.iter().find(|(k, _)| *k == "--config").map(|(_, v)| *v);
    if path.is_none() {
        log::info!("no --config given: using the embedded default (loopback only, no apps)");
    }
    let config = load(path)?;
    if config.dev_secret {
        log::warn!(
            "glasses and app tokens are signed with the PUBLIC development secret '{DEV_SECRET}'; set jwtSecret in the config or {SECRET_ENV} before real use"
        );
    }
    let listeners = bind_all(&config.listen)?;
    let clock = Clock::default();
    let now = clock.now();
    let state = open_configured(config.state_dir.as_deref(), now.wall.unix_secs());
    let server = Server::with_state(
        config.server.clone(),
        config.hub.clone(),
        state.snapshot,
        state.status.clone(),
        now,
    );
    let mut reactor = Reactor::new(server, clock, listeners)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    if let Some(store) = state.store {
        reactor = reactor
            .with_store(store, state.status)
            .map_err(|e| format!("cannot start the state writer: {e}"))?;
    }
    for l in reactor.describe_listeners() {
        log::info!("listening on {l}");
    }
    log::info!(
        "{} app(s) registered; apps are told to connect to {}/app-ws",
        config.hub.apps.len(),
        config.hub.public_ws_url
    );
    reactor.run().map_err(|e| format!("event loop failed: {e}"))
}

fn token(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--user", "--config"])?;
    let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let user = get("--user").ok_or("token needs --user EMAIL")?;
    let config = load(get("--config"))?;
    println!("{}", auth::jwt::glasses_token(user, &config.hub.jwt_secret));
    Ok(())
}

fn app_token(args: &[String]) -> Result<(), String> {
    let f = flags(args, &["--package", "--config"])?;
    let get = |k: &str| f.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let package = get("--package").ok_or("app-token needs --package NAME")?;
    let config = load(get("--config"))?;
    let app = config
        .hub
        .apps
        .iter()
        .find(|a| a.package_name == package)
        .ok_or_else(|| format!("no app '{package}' in the config"))?;
    println!(
        "{}",
        auth::jwt::app_token(package, &app.hashed_api_key, &config.hub.jwt_secret)
    );
    Ok(())
}
