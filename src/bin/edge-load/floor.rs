//! `edge-load floor`: the kernel's cost of the venue fan-out's writes, with no server at all —
//! the physical floor under `edge-load venue`'s "server CPU per delivery".
//!
//! N loopback TCP connections; R times a second the writing thread (this process's main thread)
//! writes the same buffer — F unmasked WebSocket text frames of B bytes each, as the box sends
//! one feed's messages of one turn to one app — to every connection, one `write` each, as the
//! box does; a second thread reads the other ends with epoll and throws the bytes away (the
//! apps). The writing thread's user and system CPU time (`/proc/self/task/<tid>/stat`) over the
//! run, divided by the writes and by the messages, is the floor: on loopback a write also runs
//! the receiver's TCP processing and its wake-up in the writer's context, as it does for the
//! box. Also reported: how long one turn's burst of N writes takes (p50/p99/max), the floor
//! under publish → app latency for the last connection of a turn. Nothing is asserted.

use crate::stats::{self, Histogram};
use mio::net::TcpStream as MioStream;
use mio::{Events, Interest, Poll, Token};
use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const USAGE: &str =
    "  edge-load floor [--sockets N] [--rate R] [--frames F] [--bytes B] [--seconds D]
      the kernel's floor under the venue fan-out: R times a second, one write of F WebSocket
      frames of B bytes (default 4 × 307: one feed turn's 3 interims and a final) to each of N
      loopback TCP connections (default 1000), for D seconds (default 10), read by a second
      thread; reports the writing thread's CPU (user/sys) per write and per message, and how
      long a turn's N writes take";

struct Opts {
    sockets: usize,
    rate: f64,
    frames: usize,
    bytes: usize,
    seconds: f64,
}

pub fn run(args: &[String]) {
    let mut o = Opts {
        sockets: 1000,
        rate: 4.0,
        frames: 4,
        bytes: 307,
        seconds: 10.0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().map(String::as_str).unwrap_or("");
        let n = || -> f64 {
            v.parse().unwrap_or_else(|_| {
                eprintln!("edge-load floor: {a} needs a number, got {v:?}\n{USAGE}");
                std::process::exit(2)
            })
        };
        match a.as_str() {
            "--sockets" => o.sockets = n() as usize,
            "--rate" => o.rate = n(),
            "--frames" => o.frames = n() as usize,
            "--bytes" => o.bytes = n() as usize,
            "--seconds" => o.seconds = n(),
            _ => {
                eprintln!("edge-load floor: unknown option {a}\n{USAGE}");
                std::process::exit(2)
            }
        }
    }
    if let Err(e) = floor(&o) {
        eprintln!("edge-load floor: {e}");
        std::process::exit(1);
    }
}

/// One unmasked text frame of `size` bytes in all (header included), payload of JSON-ish text.
fn frame(size: usize) -> Vec<u8> {
    let len = size.saturating_sub(4).max(126);
    let mut f = vec![0x81, 126, (len >> 8) as u8, len as u8];
    f.extend((0..len).map(|i| b"{\"type\":\"data_stream\"}"[i % 22]));
    f
}

fn floor(o: &Opts) -> Result<(), String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = l.local_addr().map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(o.sockets);
    let mut ins = Vec::with_capacity(o.sockets);
    for _ in 0..o.sockets {
        let w = TcpStream::connect(addr).map_err(|e| format!("connect: {e} (ulimit -n?)"))?;
        let me = w.local_addr().map_err(|e| e.to_string())?;
        // Only our own connection: a stray one (a process of an earlier run reconnecting to a
        // port that is now this listener's) is dropped.
        let r = loop {
            let (r, from) = l.accept().map_err(|e| format!("accept: {e}"))?;
            if from == me {
                break r;
            }
        };
        w.set_nodelay(true).map_err(|e| e.to_string())?;
        w.set_nonblocking(true).map_err(|e| e.to_string())?;
        r.set_nonblocking(true).map_err(|e| e.to_string())?;
        out.push(w);
        ins.push(MioStream::from_std(r));
    }
    let buf: Vec<u8> = (0..o.frames).flat_map(|_| frame(o.bytes)).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let received = Arc::new(AtomicU64::new(0));
    let reader = {
        let (stop, received) = (stop.clone(), received.clone());
        std::thread::spawn(move || read_all(ins, &stop, &received))
    };
    let me = format!("self/task/{}", std::process::id());
    let tck = stats::clock_ticks() as f64;
    let busy0 = stats::machine_busy_ticks();
    let (u0, s0) = stats::cpu_split(&me).unwrap_or((0, 0));
    let start = Instant::now();
    let mut bursts = Histogram::default();
    let (mut writes, mut short) = (0u64, 0u64);
    let turns = (o.seconds * o.rate).max(1.0) as u64;
    for turn in 0..turns {
        let due = start + Duration::from_secs_f64(turn as f64 / o.rate);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let t = Instant::now();
        for s in &mut out {
            match s.write(&buf) {
                Ok(n) if n == buf.len() => writes += 1,
                Ok(_) | Err(_) => short += 1,
            }
        }
        bursts.record(t.elapsed().as_micros() as u64);
    }
    let wall = start.elapsed().as_secs_f64();
    let (u1, s1) = stats::cpu_split(&me).unwrap_or((0, 0));
    let busy = stats::machine_busy_ticks().saturating_sub(busy0) as f64 / tck;
    let expect = (writes * buf.len() as u64) as usize;
    let drained = Instant::now();
    while (received.load(Relaxed) as usize) < expect && drained.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(10));
    }
    stop.store(true, Relaxed);
    let reader_cpu = reader.join().unwrap_or((0, 0));
    let (user, sys) = ((u1 - u0) as f64 / tck, (s1 - s0) as f64 / tck);
    let per = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
    let msgs = writes * o.frames as u64;
    println!(
        "edge-load floor: {} loopback TCP connections, {} turns/s, one write of {} × {} B frames ({} B) per connection per turn, {:.1} s",
        o.sockets,
        o.rate,
        o.frames,
        o.bytes,
        buf.len(),
        wall
    );
    println!(
        "  writes            {writes} ({short} short or refused); {msgs} messages; received {} of {expect} B",
        received.load(Relaxed)
    );
    println!(
        "  writer CPU        {:.2} s (user {:.2} + sys {:.2}); per write {:.3} µs (user {:.3} + sys {:.3}); per message {:.3} µs",
        user + sys,
        user,
        sys,
        per(user + sys, writes),
        per(user, writes),
        per(sys, writes),
        per(user + sys, msgs)
    );
    println!(
        "  reader CPU        {:.2} s (user {:.2} + sys {:.2}); per write {:.3} µs",
        (reader_cpu.0 + reader_cpu.1) as f64 / tck,
        reader_cpu.0 as f64 / tck,
        reader_cpu.1 as f64 / tck,
        per((reader_cpu.0 + reader_cpu.1) as f64 / tck, writes)
    );
    println!(
        "  turn burst µs     p50 {}  p99 {}  max {}  (the {} writes of one turn, first to last)",
        bursts.quantile(0.5),
        bursts.quantile(0.99),
        bursts.max,
        o.sockets
    );
    let others = (busy - user - sys - (reader_cpu.0 + reader_cpu.1) as f64 / tck).max(0.0);
    println!(
        "  machine           {} CPUs busy {:.1} % over the run; other processes {:.2} s = {:.1} % of one core",
        stats::machine_cpus(),
        busy / wall / stats::machine_cpus() as f64 * 100.0,
        others,
        others / wall * 100.0
    );
    Ok(())
}

/// The apps' side: read every connection until `stop`, counting bytes; returns this thread's
/// (user, system) CPU ticks.
fn read_all(mut ins: Vec<MioStream>, stop: &AtomicBool, received: &AtomicU64) -> (u64, u64) {
    let me = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name()?.to_str()?.parse::<u64>().ok())
        .unwrap_or(0);
    let path = format!("self/task/{me}");
    let start = stats::cpu_split(&path).unwrap_or((0, 0));
    let Ok(mut poll) = Poll::new() else {
        return (0, 0);
    };
    for (i, s) in ins.iter_mut().enumerate() {
        let _ = poll.registry().register(s, Token(i), Interest::READABLE);
    }
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    while !stop.load(Relaxed) {
        if poll
            .poll(&mut events, Some(Duration::from_millis(50)))
            .is_err()
        {
            break;
        }
        for ev in events.iter() {
            let Some(s) = ins.get_mut(ev.token().0) else {
                continue;
            };
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        received.fetch_add(n as u64, Relaxed);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
    }
    let end = stats::cpu_split(&path).unwrap_or(start);
    (end.0 - start.0, end.1 - start.1)
}
