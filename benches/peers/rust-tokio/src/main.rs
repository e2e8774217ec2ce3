//! Peer fixture (not part of the server): the minimal AugmentOS routing protocol of
//! benches/peers/README.md on tokio + tokio-tungstenite, written the way a careful Rust developer
//! would: one task reading each connection, one task writing it that drains everything queued
//! into the sink and flushes once (batched writes), bounded queues with backpressure (the
//! glasses reader waits for a full app queue, so nothing is dropped and memory stays bounded).
//!
//! Usage: tokio-relay PORT (listens on 127.0.0.1:PORT; worker threads = the CPUs it may run on).

use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

type Tx = mpsc::Sender<Message>;

struct App {
    id: u64,
    /// `"<session>-<package>"` as a JSON string, ready to paste into the envelope.
    sid_json: String,
    subs: Vec<String>,
    tx: Tx,
}

#[derive(Default)]
struct Session {
    glasses: Option<Tx>,
    apps: Vec<App>,
}

type SessionRef = Arc<Mutex<Session>>;

#[derive(Default)]
struct Hub {
    sessions: Mutex<HashMap<String, SessionRef>>,
    next_id: std::sync::atomic::AtomicU64,
}

impl Hub {
    fn session(&self, id: &str) -> SessionRef {
        self.sessions
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_default()
            .clone()
    }
}

#[derive(Deserialize)]
struct Head<'a> {
    #[serde(rename = "type", borrow)]
    ty: std::borrow::Cow<'a, str>,
    #[serde(rename = "sessionId", default)]
    session_id: Option<String>,
    #[serde(rename = "packageName", default)]
    package_name: Option<String>,
    #[serde(default)]
    subscriptions: Option<Vec<String>>,
}

/// Queue depth per connection, in messages.
const QUEUE: usize = 4096;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(18_120);
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    let hub = Arc::new(Hub::default());
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

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

// The handshake callback returns tungstenite's own (large) error response type.
#[allow(clippy::result_large_err)]
async fn connection(sock: TcpStream, hub: Arc<Hub>) -> Result<(), Box<dyn std::error::Error>> {
    sock.set_nodelay(true)?;
    let mut path = String::new();
    let cb = |req: &Request, resp: Response| {
        path = req.uri().path().to_string();
        Ok(resp)
    };
    let ws =
        tokio_tungstenite::accept_hdr_async_with_config(sock, cb, Some(WebSocketConfig::default()))
            .await?;
    let glasses = match path.as_str() {
        "/glasses-ws" => true,
        "/app-ws" | "/tpa-ws" => false,
        _ => return Ok(()),
    };
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(QUEUE);
    // The writer: everything queued goes into the sink's buffer, then one flush.
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.feed(m).await.is_err() {
                return;
            }
            while let Ok(m) = rx.try_recv() {
                if sink.feed(m).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });

    let mut session: Option<SessionRef> = None;
    let app_id = hub
        .next_id
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut pending: Vec<(Tx, Message)> = Vec::new();
    while let Some(msg) = stream.next().await {
        let msg = match msg {
            Ok(m) => m,
            Err(_) => break,
        };
        match msg {
            Message::Text(text) => {
                let Ok(head) = serde_json::from_str::<Head>(text.as_str()) else {
                    continue;
                };
                match (glasses, &session) {
                    (true, None) if head.ty == "connection_init" => {
                        let sid = head.session_id.unwrap_or_default();
                        let s = hub.session(&sid);
                        s.lock().unwrap().glasses = Some(tx.clone());
                        session = Some(s);
                        let ack = format!(
                            r#"{{"type":"connection_ack","sessionId":{}}}"#,
                            serde_json::to_string(&sid)?
                        );
                        tx.send(Message::text(ack)).await?;
                    }
                    (false, None) if head.ty == "tpa_connection_init" => {
                        let sid = head.session_id.unwrap_or_default();
                        let pkg = head.package_name.unwrap_or_default();
                        let sid_json = serde_json::to_string(&format!("{sid}-{pkg}"))?;
                        let s = hub.session(&sid);
                        s.lock().unwrap().apps.push(App {
                            id: app_id,
                            sid_json: sid_json.clone(),
                            subs: Vec::new(),
                            tx: tx.clone(),
                        });
                        session = Some(s);
                        let ack =
                            format!(r#"{{"type":"tpa_connection_ack","sessionId":{sid_json}}}"#);
                        tx.send(Message::text(ack)).await?;
                    }
                    (true, Some(s)) => {
                        // Fan out to the subscribed apps, each with its own envelope.
                        let ty = serde_json::to_string(&head.ty)?;
                        let ts = now_ms();
                        {
                            let s = s.lock().unwrap();
                            for app in s
                                .apps
                                .iter()
                                .filter(|a| a.subs.iter().any(|x| *x == head.ty))
                            {
                                let env = format!(
                                    r#"{{"type":"data_stream","sessionId":{},"streamType":{ty},"data":{},"timestamp":{ts}}}"#,
                                    app.sid_json,
                                    text.as_str()
                                );
                                match app.tx.try_send(Message::text(env)) {
                                    Ok(()) | Err(TrySendError::Closed(_)) => {}
                                    Err(TrySendError::Full(m)) => pending.push((app.tx.clone(), m)),
                                }
                            }
                        }
                        for (tx, m) in pending.drain(..) {
                            let _ = tx.send(m).await;
                        }
                    }
                    (false, Some(s)) => match head.ty.as_ref() {
                        "subscription_update" => {
                            let subs = head.subscriptions.unwrap_or_default();
                            let mut s = s.lock().unwrap();
                            if let Some(a) = s.apps.iter_mut().find(|a| a.id == app_id) {
                                a.subs = subs;
                            }
                        }
                        "display_event" => {
                            let g = s.lock().unwrap().glasses.clone();
                            if let Some(g) = g {
                                let _ = g.send(Message::Text(text)).await;
                            }
                        }
                        _ => {}
                    },
                    _ => {}
                }
            }
            Message::Binary(audio) if glasses => {
                if let Some(s) = &session {
                    {
                        let s = s.lock().unwrap();
                        for app in s
                            .apps
                            .iter()
                            .filter(|a| a.subs.iter().any(|x| x == "audio_chunk"))
                        {
                            match app.tx.try_send(Message::Binary(audio.clone())) {
                                Ok(()) | Err(TrySendError::Closed(_)) => {}
                                Err(TrySendError::Full(m)) => pending.push((app.tx.clone(), m)),
                            }
                        }
                    }
                    for (tx, m) in pending.drain(..) {
                        let _ = tx.send(m).await;
                    }
                }
            }
            Message::Close(_) => break,
            _ => {}
        }
    }
    if let Some(s) = session {
        let mut s = s.lock().unwrap();
        if glasses {
            s.glasses = None;
        } else {
            s.apps.retain(|a| a.id != app_id);
        }
    }
    Ok(())
}
