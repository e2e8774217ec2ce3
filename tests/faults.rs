//! The seeded fault-injecting transport (`FaultyListener`) over real sockets: the reactor
//! serving the echo route through a listener whose streams read and write short and hold
//! written bytes back must still deliver every byte, in order; streams that are reset or
//! half-closed under it end their own connection and disturb no one else.
//!
//! Found with it: a read paused for backpressure whose output then drained within the same
//! turn was never resumed (the edge-triggered readiness had been used up), so the rest of a
//! burst waited in the socket until the peer sent more.

mod support;

use augmentos_edge::reactor::{Clock, Reactor};
use augmentos_edge::server::Server;
use augmentos_edge_transports::{FaultRates, FaultyListener, Listener, TcpListener};
use std::net::{SocketAddr, TcpStream};
use support::{echo_config, ws_over, Sock, READ_TIMEOUT};
use tungstenite::Message;

/// A reactor on a background thread serving the echo route through a faulty TCP listener and
/// a clean one; returns both addresses (the thread ends with the test process).
fn serve(rates: FaultRates, seed: u64) -> (SocketAddr, SocketAddr) {
    let faulty = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let clean = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).expect("bind");
    let (a, b) = (faulty.local_addr().unwrap(), clean.local_addr().unwrap());
    let listeners: Vec<Box<dyn Listener>> = vec![
        Box::new(FaultyListener::new(Box::new(faulty), seed, rates)),
        Box::new(clean),
    ];
    let clock = Clock::default();
    let server = Server::new(echo_config(), Default::default(), clock.now());
    let mut reactor = Reactor::new(server, clock, listeners).expect("reactor");
    std::thread::spawn(move || reactor.run());
    (a, b)
}

fn client(addr: SocketAddr) -> tungstenite::WebSocket<Sock> {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
    ws_over(Sock::Tcp(s))
}

/// Messages of every size class (inline, 16-bit and 64-bit lengths), distinct contents.
fn message(i: usize) -> Vec<u8> {
    let len = [1, 100, 125, 126, 1000, 65_535, 20_000][i % 7];
    (0..len).map(|k| (k * 31 + i * 7) as u8).collect()
}

#[test]
fn short_reads_short_writes_and_delays_lose_nothing() {
    // Each alone stalled the echo before the reactor re-read a socket whose read it had paused
    // for backpressure and drained within the same turn; so each alone, then both.
    let cases = [(65_535, 0), (0, 30_000), (40_000, 20_000)];
    for (seed, (short, delay)) in (1..).zip(cases) {
        let rates = FaultRates {
            short,
            delay,
            ..FaultRates::default()
        };
        let (faulty, _) = serve(rates, seed);
        let mut ws = client(faulty);
        for i in 0..60 {
            ws.send(Message::Binary(message(i).into())).expect("send");
        }
        for i in 0..60 {
            match ws
                .read()
                .unwrap_or_else(|e| panic!("seed {seed}: echo {i}: {e}"))
            {
                Message::Binary(b) => {
                    assert_eq!(b.as_ref(), message(i).as_slice(), "seed {seed} message {i}")
                }
                other => panic!("seed {seed}: unexpected {other:?}"),
            }
        }
    }
}

#[test]
fn resets_and_half_closes_end_only_their_own_connection() {
    let rates = FaultRates {
        reset: 3_000,
        half_close: 3_000,
        short: 20_000,
        ..FaultRates::default()
    };
    let (faulty, clean) = serve(rates, 7);
    let mut ended = 0;
    for _ in 0..20 {
        // The handshake itself may be cut off: that is one of the faults.
        let Ok(s) = TcpStream::connect(faulty) else {
            continue;
        };
        s.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        let Ok((mut ws, _)) = tungstenite::client::client("ws://localhost/echo", Sock::Tcp(s))
        else {
            ended += 1;
            continue;
        };
        for i in 0..200 {
            let sent = ws.send(Message::Binary(message(i % 4).into()));
            if sent.is_err() || ws.read().is_err() {
                ended += 1;
                break;
            }
        }
    }
    assert!(ended > 0, "no fault ended any connection");
    let mut ok = client(clean);
    ok.send(Message::Text("still here".into())).unwrap();
    assert_eq!(ok.read().unwrap(), Message::Text("still here".into()));
}
