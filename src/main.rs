//! Shell layer: the command line. Parses arguments, loads the config, runs the reactor.

use augmentos_edge::config::Config;
use augmentos_edge::reactor::{bind_all, Clock, Reactor};
use augmentos_edge::server::Server;
use std::process::ExitCode;

const USAGE: &str = "usage:
  augmentos-edge serve [--config FILE]   run the server (embedded loopback default without --config)
  augmentos-edge help                    this text";

fn main() -> ExitCode {
    augmentos_edge::logger::init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve(args.get(1..).unwrap_or(&[])),
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

fn serve(args: &[String]) -> Result<(), String> {
    let config = match args {
        [] => {
            log::info!("no --config given: using the embedded default (loopback only)");
            Config::embedded()
        }
        [flag, path] if flag == "--config" => Config::load(std::path::Path::new(path))?,
        _ => return Err(format!("bad arguments to serve: {args:?}\n{USAGE}")),
    };
    let listeners = bind_all(&config.listen)?;
    let clock = Clock::default();
    let server = Server::new(config.server.clone(), clock.now());
    let mut reactor = Reactor::new(server, clock, listeners)
        .map_err(|e| format!("cannot start the event loop: {e}"))?;
    for l in reactor.describe_listeners() {
        log::info!("listening on {l}");
    }
    reactor.run().map_err(|e| format!("event loop failed: {e}"))
}
