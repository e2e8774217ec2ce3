//! Test support: a stand-in app server for tests over real sockets that only need a webhook
//! answered. Owns a listener on 127.0.0.1 and a thread that lives as long as the test process;
//! it answers every complete request 200 `{}` (the app connects on its own, as the SDK does)
//! and closes each connection after it.

use std::io::{Read, Write};
use std::time::Duration;

/// An app server that answers every webhook 200; its port.
pub fn webhook_server() -> u16 {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind webhooks");
    let port = l.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            s.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            let complete = loop {
                match s.read(&mut chunk) {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse::<usize>().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    break true;
                }
            };
            if complete {
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                );
            }
        }
    });
    port
}
