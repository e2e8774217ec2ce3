//! Shell layer: the command line. Parses arguments, loads the config (reads the file, parses
//! it with [`Config::from_json`], applies the environment override), runs the reactor, or
//! prints a key hash or a token.

use augmentos_edge::auth;
use augmentos_edge::config::{Config, DEV_SECRET};
use augmentos_edge::reactor::{bind, Clock, Reactor};
use augmentos_edge::server::Server;
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
    let bound = bind(&config.listen)?;
    let clock = Clock::default();
    let server = Server::new(config.server.clone(), config.hub.clone(), clock.now());
    let mut reactor = Reactor::new(server, clock, bound.listeners)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    let path = path.map(str::to_string);
    let certs = bound.certs;
    reactor
        .handle_signals(Box::new(move |server, now| {
            reload(path.as_deref(), &certs, server, now)
        }))
        .map_err(|e| format!("cannot take signals: {e}"))?;
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

/// SIGHUP: re-read the app registry from the config file and the TLS certificates; sessions
/// stay. Anything that fails to load is logged and the running values stay in force.
fn reload(
    path: Option<&str>,
    certs: &[std::sync::Arc<augmentos_edge_transports::TlsCerts>],
    server: &mut Server,
    now: augmentos_edge::time::Now,
) {
    for c in certs {
        match c.reload() {
            Ok(()) => log::info!("reloaded {}", c.certificate_path().display()),
            Err(e) => log::warn!("reload: {e}; the certificate in use stays"),
        }
    }
    let Some(path) = path else {
        return log::info!("reload: no --config; the app registry stays as it is");
    };
    match load(Some(path)) {
        Ok(config) => {
            let done = server.handle_reload(config.hub.apps, now);
            log::info!(
                "reloaded {path}: apps added {:?}, removed {:?}, changed {:?} (other settings apply at the next start)",
                done.added,
                done.removed,
                done.changed
            );
        }
        Err(e) => log::warn!("reload: {e}; the app registry in use stays"),
    }
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
