//! Peer fixture (not part of the server): the floor. A raw TCP byte forwarder on tokio, no
//! WebSocket and no JSON: a connection names itself with one line, `glasses <session>\n` or
//! `app <session>\n`; every byte a glasses connection sends afterwards is copied to each app
//! connection of its session (bounded queues, the reader waits when one is full).
//!
//! Usage: raw-forward PORT (listens on 127.0.0.1:PORT).

use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

type Apps = Arc<Mutex<Vec<mpsc::Sender<Bytes>>>>;
type Hub = Arc<Mutex<HashMap<String, Apps>>>;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18_121);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let hub: Hub = Arc::default();
    loop {
        let Ok((sock, _)) = listener.accept().await else {
            continue;
        };
        let hub = hub.clone();
        tokio::spawn(async move {
            let _ = connection(sock, hub).await;
        });
    }
}

async fn connection(mut sock: TcpStream, hub: Hub) -> std::io::Result<()> {
    sock.set_nodelay(true)?;
    let mut buf = vec![0u8; 64 << 10];
    let mut have = 0;
    let line_end = loop {
        let n = sock.read(&mut buf[have..]).await?;
        if n == 0 {
            return Ok(());
        }
        have += n;
        if let Some(at) = buf[..have].iter().position(|&b| b == b'\n') {
            break at;
        }
        if have == buf.len() {
            return Ok(());
        }
    };
    let line = String::from_utf8_lossy(&buf[..line_end]).into_owned();
    let Some((role, session)) = line.split_once(' ') else {
        return Ok(());
    };
    let apps = hub
        .lock()
        .unwrap()
        .entry(session.to_string())
        .or_default()
        .clone();
    if role == "app" {
        let (tx, mut rx) = mpsc::channel::<Bytes>(256);
        apps.lock().unwrap().push(tx);
        while let Some(chunk) = rx.recv().await {
            sock.write_all(&chunk).await?;
        }
        return Ok(());
    }
    let mut rest = Bytes::copy_from_slice(&buf[line_end + 1..have]);
    let mut targets: Vec<mpsc::Sender<Bytes>> = Vec::new();
    loop {
        if !rest.is_empty() {
            targets.clear();
            targets.extend(apps.lock().unwrap().iter().cloned());
            for t in &targets {
                let _ = t.send(rest.clone()).await;
            }
        }
        let n = sock.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        rest = Bytes::copy_from_slice(&buf[..n]);
    }
}
