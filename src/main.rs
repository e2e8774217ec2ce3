//! Shell layer: the command line. Parses arguments, loads the config (reads the file, parses
//! it with [`Config::from_json`], applies the environment override), runs the reactor, or
//! prints a key hash or a token.

use augmentos_edge::auth;
use augmentos_edge::config::{Config, DEV_OPERATOR_TOKEN, DEV_SECRET};
use augmentos_edge::reactor::{bind, Clock, Reactor};
use augmentos_edge::server::Server;
use augmentos_edge::state::sqlite::open_configured;
use std::process::ExitCode;

mod cli;
mod device_cli;

fn main() -> ExitCode {
    augmentos_edge::logger::init();
    let command = match cli::parse(std::env::args_os().skip(1).collect()) {
        Ok(c) => c,
        Err(u) => {
            eprintln!("augmentos-edge: {}\n{}", u.message, u.usage);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        cli::Command::Print(text) => {
            println!("{text}");
            Ok(())
        }
        cli::Command::Serve { config } => serve(config.as_deref()),
        cli::Command::CheckConfig { file } => check_config(&file),
        cli::Command::HashKey { key } => {
            println!("{}", auth::hash_api_key(&key));
            Ok(())
        }
        cli::Command::Token {
            user,
            config,
            expires,
        } => token(&user, config.as_deref(), expires),
        cli::Command::Device { action, config } => {
            load(config.as_deref()).and_then(|c| device_cli::run(action, &c))
        }
        cli::Command::AppToken { package, config } => app_token(&package, config.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("augmentos-edge: {e}");
            ExitCode::from(2)
        }
    }
}

/// Check a config file as `serve` would (TLS files included) and print the effective config.
fn check_config(path: &str) -> Result<(), String> {
    let config = load(Some(path))?;
    for l in &config.listen {
        if let augmentos_edge::config::ListenSpec::Tls(t) = l {
            augmentos_edge_transports::TlsCerts::load(&t.certificate, &t.key)?;
        }
    }
    let text = serde_json::to_string_pretty(&cli::effective(&config))
        .map_err(|e| format!("cannot print the config: {e}"))?;
    println!("{text}");
    if config.dev_secret {
        eprintln!("augmentos-edge: warning: jwtSecret is the public development secret");
    }
    Ok(())
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
    if let Some(login) = &mut c.hub.account_login {
        if let augmentos_edge::hub::accounts::UpstreamKeys::Jwks { path, keys } = &mut login.keys {
            let text = std::fs::read_to_string(&*path).map_err(|e| {
                format!("accountLogin.jwksFile: cannot read {}: {e}", path.display())
            })?;
            *keys = augmentos_edge::auth::jwks::Jwks::parse(&text)
                .map_err(|e| format!("accountLogin.jwksFile {}: {e}", path.display()))?;
        }
    }
    if c.dev_operator_token && !c.dev_secret {
        // The public operator token comes only with the public secret.
        log::warn!("{SECRET_ENV} is set and ui.operatorToken is not: the /ui/ pages are off");
        c.server.operator_token = None;
        c.dev_operator_token = false;
    }
    Ok(c)
}

fn serve(path: Option<&str>) -> Result<(), String> {
    if path.is_none() {
        log::info!("no --config given: using the embedded default (loopback only, no apps)");
    }
    let config = load(path)?;
    if config.dev_secret {
        log::warn!(
            "glasses and app tokens are signed with the PUBLIC development secret '{DEV_SECRET}'; set jwtSecret in the config or {SECRET_ENV} before real use"
        );
    }
    if config.dev_operator_token {
        log::warn!(
            "the /ui/ pages take the PUBLIC development operator token '{DEV_OPERATOR_TOKEN}'; set ui.operatorToken in the config before real use"
        );
    }
    let bound = bind(&config.listen)?;
    let clock = Clock::default();
    let now = clock.now();
    let state = match &config.postgres {
        Some(pg) => augmentos_edge::state::postgres::open_configured(&pg.url, pg.queue_limit),
        None => open_configured(config.state_dir.as_deref(), now.wall.unix_secs()),
    };
    let server = Server::with_state(
        config.server.clone(),
        config.hub.clone(),
        state.snapshot,
        state.status.clone(),
        now,
    )
    .with_tts(config.tts.clone());
    let mut reactor = Reactor::new(server, clock, bound.listeners)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    if let Some(store) = state.store {
        reactor = reactor
            .with_store(store, state.status, state.queue_limit)
            .map_err(|e| format!("cannot start the state writer: {e}"))?;
    }
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
    if config.server.operator_token.is_some() {
        log::info!("operator page at /ui/operator, glasses emulator at /ui/glasses");
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

/// A glasses token for `user`, issued now, expiring after `expires` seconds (the config's
/// `tokens.lifetimeSeconds` without it).
fn token(user: &str, config: Option<&str>, expires: Option<u64>) -> Result<(), String> {
    let config = load(config)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_err(|_| "the clock is before 1970")?
        .as_secs();
    let life = expires.unwrap_or(config.hub.token_lifetime.as_secs());
    let exp = now.saturating_add(life);
    let secret = &config.hub.jwt_secret;
    println!(
        "{}",
        auth::jwt::glasses_token_expiring(user, None, now, exp, secret)
    );
    Ok(())
}

fn app_token(package: &str, config: Option<&str>) -> Result<(), String> {
    let config = load(config)?;
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
