//! A small blocking WebSocket client for the load generator, written apart from the server's
//! own codec: the upgrade request, masked frames out, unmasked frames in (read in large chunks
//! and walked in place, so a reader pays one `read` for many messages).

use base64::Engine;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Duration;

pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CONTINUATION: u8 = 0x0;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;

/// The transport under a connection: loopback TCP, the server's Unix socket, or TLS over TCP.
pub enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<crate::tls::TlsSock>),
}

impl Sock {
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nonblocking(on),
            Sock::Unix(s) => s.set_nonblocking(on),
            Sock::Tls(s) => s.tcp.set_nonblocking(on),
        }
    }

    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(d),
            Sock::Unix(s) => s.set_read_timeout(d),
            Sock::Tls(s) => s.tcp.set_read_timeout(d),
        }
    }

    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_write_timeout(d),
            Sock::Unix(s) => s.set_write_timeout(d),
            Sock::Tls(s) => s.tcp.set_write_timeout(d),
        }
    }

    pub fn shutdown(&self, how: std::net::Shutdown) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(how),
            Sock::Unix(s) => s.shutdown(how),
            Sock::Tls(s) => s.tcp.shutdown(how),
        }
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
            Sock::Tls(s) => s.tcp.as_raw_fd(),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
            Sock::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
            Sock::Tls(s) => s.write(buf),
        }
    }

    /// TLS: push the records still held (`WouldBlock` while the socket is full).
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sock::Tls(s) => s.flush(),
            _ => Ok(()),
        }
    }
}

/// One client connection: the socket and the bytes read but not yet consumed.
pub struct Ws {
    pub sock: Sock,
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

/// A frame found in the read buffer; its payload is `Ws::payload(range)`.
pub struct Frame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Range<usize>,
}

impl Ws {
    /// Connect to `127.0.0.1:port`, upgrade `path` with `headers` (each ending in `\r\n`),
    /// and check for `101`. Bytes after the response head stay buffered as frames.
    pub fn connect(port: u16, path: &str, headers: &str, buf_size: usize) -> Result<Ws, String> {
        let sock = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        sock.set_nodelay(true).ok();
        let host = format!("127.0.0.1:{port}");
        Ws::upgrade(Sock::Tcp(sock), &host, path, headers, buf_size)
    }

    /// The same over the server's Unix socket at `socket`.
    pub fn connect_unix(
        socket: &str,
        path: &str,
        headers: &str,
        buf_size: usize,
    ) -> Result<Ws, String> {
        let sock =
            UnixStream::connect(socket).map_err(|e| format!("connect unix:{socket}: {e}"))?;
        Ws::upgrade(Sock::Unix(sock), "localhost", path, headers, buf_size)
    }

    /// The same over TLS to `127.0.0.1:port` (as `localhost`), handshake done before the upgrade.
    pub fn connect_tls(
        port: u16,
        path: &str,
        headers: &str,
        buf_size: usize,
        config: &std::sync::Arc<crate::tls::rustls::ClientConfig>,
    ) -> Result<Ws, String> {
        let sock = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        sock.set_nodelay(true).ok();
        sock.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let tls = crate::tls::TlsSock::connect(sock, config)?;
        let host = format!("localhost:{port}");
        Ws::upgrade(Sock::Tls(Box::new(tls)), &host, path, headers, buf_size)
    }

    fn upgrade(
        sock: Sock,
        host: &str,
        path: &str,
        headers: &str,
        buf_size: usize,
    ) -> Result<Ws, String> {
        // Generous: thousands of connections may be set up at once on a busy box.
        sock.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let mut ws = Ws {
            sock,
            buf: vec![0; buf_size.max(4096)],
            start: 0,
            end: 0,
        };
        let key: [u8; 16] = std::array::from_fn(|_| crate::stats::random_u64() as u8);
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n{headers}\r\n",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        ws.sock
            .write_all(req.as_bytes())
            .map_err(|e| format!("upgrade {path}: {e}"))?;
        loop {
            let head = &ws.buf[..ws.end];
            if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                if !head.starts_with(b"HTTP/1.1 101") {
                    let text = String::from_utf8_lossy(head);
                    let first = text.lines().next().unwrap_or("").to_string();
                    let body = text
                        .split("\r\n\r\n")
                        .nth(1)
                        .unwrap_or("")
                        .trim()
                        .to_string();
                    return Err(format!("upgrade {path} refused: {first} {body}"));
                }
                ws.start = at + 4;
                return Ok(ws);
            }
            match ws.fill() {
                Ok(0) => return Err(format!("upgrade {path}: connection closed")),
                Ok(_) => {}
                Err(e) => return Err(format!("upgrade {path}: {e}")),
            }
        }
    }

    /// A plain TCP connection to `127.0.0.1:port` that sends `hello` first (the raw forwarder's
    /// protocol); what it reads is walked as frames like a WebSocket's.
    pub fn raw(port: u16, hello: &str) -> Result<Ws, String> {
        let mut sock = TcpStream::connect(("127.0.0.1", port))
            .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))?;
        sock.set_nodelay(true).ok();
        sock.write_all(hello.as_bytes())
            .map_err(|e| format!("raw hello: {e}"))?;
        Ok(Ws {
            sock: Sock::Tcp(sock),
            buf: vec![0; 64 << 10],
            start: 0,
            end: 0,
        })
    }

    /// Read once more into the buffer (after moving unread bytes to the front).
    pub fn fill(&mut self) -> io::Result<usize> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let n = self.buf.len() * 2;
            self.buf.resize(n, 0);
        }
        let n = self.sock.read(&mut self.buf[self.end..])?;
        self.end += n;
        Ok(n)
    }

    /// The next complete frame in the buffer, if any (server frames are unmasked; a masked one
    /// is unmasked in place).
    pub fn next_frame(&mut self) -> Option<Frame> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        let opcode = b[0] & 0x0F;
        let masked = b[1] & 0x80 != 0;
        let (len, mut at) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (u64::from_be_bytes(l) as usize, 10)
            }
            126 | 127 => return None,
            l => (l as usize, 2),
        };
        let mask = if masked {
            if b.len() < at + 4 {
                return None;
            }
            at += 4;
            Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
        } else {
            None
        };
        if b.len() < at + len {
            return None;
        }
        let payload = self.start + at..self.start + at + len;
        if let Some(m) = mask {
            for (i, x) in self.buf[payload.clone()].iter_mut().enumerate() {
                *x ^= m[i & 3];
            }
        }
        self.start += at + len;
        Some(Frame {
            fin,
            opcode,
            payload,
        })
    }

    pub fn payload(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    /// Send one masked frame.
    pub fn send(&mut self, opcode: u8, payload: &[u8]) -> io::Result<()> {
        let mut out = Vec::with_capacity(payload.len() + 14);
        push_masked(&mut out, opcode, payload, crate::stats::mask_key());
        self.sock.write_all(&out)
    }

    /// Read frames until a text message containing `needle`; a text message containing
    /// `error_needle` first is returned as the error. Pings are answered.
    pub fn wait_for_text(&mut self, needle: &str, error_needle: &str) -> Result<String, String> {
        loop {
            while let Some(f) = self.next_frame() {
                match f.opcode {
                    TEXT => {
                        let text = String::from_utf8_lossy(self.payload(f.payload)).into_owned();
                        if text.contains(needle) {
                            return Ok(text);
                        }
                        if text.contains(error_needle) {
                            return Err(text);
                        }
                    }
                    PING => {
                        let p = self.payload(f.payload).to_vec();
                        self.send(PONG, &p).map_err(|e| e.to_string())?;
                    }
                    CLOSE => {
                        let p = self.payload(f.payload);
                        return Err(format!("closed: {}", describe_close(p)));
                    }
                    _ => {}
                }
            }
            match self.fill() {
                Ok(0) => return Err("connection closed".into()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    }
}

/// A close frame's payload as `code reason`.
pub fn describe_close(p: &[u8]) -> String {
    if p.len() >= 2 {
        format!(
            "{} {}",
            u16::from_be_bytes([p[0], p[1]]),
            String::from_utf8_lossy(&p[2..])
        )
    } else {
        "(no code)".into()
    }
}

/// Append one masked frame (FIN set) to `out`.
pub fn push_masked(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    let start = out.len();
    out.extend_from_slice(payload);
    for (i, x) in out[start..].iter_mut().enumerate() {
        *x ^= mask[i & 3];
    }
}

/// The decimal digits of `n` in `buf`, returned as the used tail.
pub fn digits(n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

/// The glasses event every frame of the load carries, up to its `seq` value.
const BUTTON_PREFIX: &[u8] = br#"{"type":"button_press","buttonId":"s","pressType":"short","seq":"#;

/// Append one masked `button_press` text frame carrying `seq` and the send time `t` (µs).
pub fn push_button(out: &mut Vec<u8>, seq: u64, t: u64, mask: [u8; 4]) {
    let mut p = [0u8; 125];
    let mut n = BUTTON_PREFIX.len();
    p[..n].copy_from_slice(BUTTON_PREFIX);
    let mut d = [0u8; 20];
    for part in [digits(seq, &mut d), br#","t":"#] {
        p[n..n + part.len()].copy_from_slice(part);
        n += part.len();
    }
    let t = digits(t, &mut d);
    p[n..n + t.len()].copy_from_slice(t);
    n += t.len();
    p[n] = b'}';
    n += 1;
    push_masked(out, TEXT, &p[..n], mask);
}

/// Interim transcripts a publisher sends before each final one (as speech comes in: partial
/// hypotheses, then the settled text).
pub const INTERIMS_PER_FINAL: u64 = 3;

/// Append the masked `data_stream` frames of transcript unit `unit` from a publishing app:
/// [`INTERIMS_PER_FINAL`] interims numbered `"iseq"` (`unit * INTERIMS_PER_FINAL + k`), then the
/// final numbered `"seq": unit`, each with the send time `"t"` (µs). Finals share the numbered
/// events' accounting; interims have their own, since the server may drop them for an app
/// that is behind.
pub fn push_transcripts(out: &mut Vec<u8>, unit: u64, t: u64, mask: [u8; 4]) {
    for k in 0..=INTERIMS_PER_FINAL {
        push_transcript(out, unit, k, t, mask);
    }
}

/// Append message `k` of transcript unit `unit` (see [`push_transcripts`]): interim `k`, or
/// the final when `k` is [`INTERIMS_PER_FINAL`].
pub fn push_transcript(out: &mut Vec<u8>, unit: u64, k: u64, t: u64, mask: [u8; 4]) {
    let mut p = [0u8; 256];
    let (fin, key, n) = match k == INTERIMS_PER_FINAL {
        true => ("true", "seq", unit),
        false => ("false", "iseq", unit * INTERIMS_PER_FINAL + k),
    };
    let mut c = io::Cursor::new(&mut p[..]);
    let _ = write!(
        c,
        r#"{{"type":"data_stream","streamType":"transcription","data":{{"type":"transcription","text":"edge load","isFinal":{fin},"transcribeLanguage":"en-US","startTime":0,"endTime":0,"{key}":{n},"t":{t}}}}}"#
    );
    let len = c.position() as usize;
    push_masked(out, TEXT, &p[..len], mask);
}

/// Append one masked binary frame of `size` bytes (at least 16) that stands for a chunk of
/// audio: `seq` and the send time `t` (µs) little-endian in its first 16 bytes, then silence.
pub fn push_audio(out: &mut Vec<u8>, seq: u64, t: u64, size: usize, mask: [u8; 4]) {
    let mut p = vec![0u8; size.max(16)];
    p[..8].copy_from_slice(&seq.to_le_bytes());
    p[8..16].copy_from_slice(&t.to_le_bytes());
    push_masked(out, BINARY, &p, mask);
}

/// The `seq` and `t` of an audio frame made by [`push_audio`].
pub fn audio_fields(p: &[u8]) -> Option<(u64, u64)> {
    let seq = u64::from_le_bytes(p.get(..8)?.try_into().ok()?);
    let t = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
    Some((seq, t))
}

/// Whether `needle` occurs in `text`.
pub fn find(text: &[u8], needle: &[u8]) -> bool {
    text.windows(needle.len()).any(|w| w == needle)
}

/// The unsigned integer that follows `key` (e.g. `"seq":`) in `text`, searched from `hint`
/// first (where it was in the last message), then from the start.
pub fn field(text: &[u8], key: &[u8], hint: &mut usize) -> Option<u64> {
    if let Some(v) = field_at(text, key, *hint) {
        return Some(v);
    }
    let at = text.windows(key.len()).position(|w| w == key)?;
    *hint = at;
    field_at(text, key, at)
}

/// The unsigned integer that follows `key` if `key` is at `at` in `text` (no search).
pub fn field_at(text: &[u8], key: &[u8], at: usize) -> Option<u64> {
    if text.get(at..at + key.len()) != Some(key) {
        return None;
    }
    let mut v: u64 = 0;
    let mut any = false;
    for &c in &text[at + key.len()..] {
        if !c.is_ascii_digit() {
            break;
        }
        v = v.wrapping_mul(10).wrapping_add((c - b'0') as u64);
        any = true;
    }
    any.then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The unmasked payloads of the client frames in `out`.
    fn frames(mut out: &[u8]) -> Vec<Vec<u8>> {
        let mut all = Vec::new();
        while out.len() >= 2 {
            let (len, at) = match out[1] & 0x7F {
                126 => (u16::from_be_bytes([out[2], out[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(out[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            let mask = &out[at..at + 4];
            let p: Vec<u8> = out[at + 4..at + 4 + len]
                .iter()
                .enumerate()
                .map(|(i, x)| x ^ mask[i & 3])
                .collect();
            all.push(p);
            out = &out[at + 4 + len..];
        }
        all
    }

    #[test]
    fn button_frames_are_masked_and_carry_their_fields() {
        let mut out = Vec::new();
        push_button(&mut out, 1234, 98765, [1, 2, 3, 4]);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1] & 0x80, 0x80);
        let len = (out[1] & 0x7F) as usize;
        let mut p = out[6..].to_vec();
        assert_eq!(p.len(), len);
        for (i, x) in p.iter_mut().enumerate() {
            *x ^= [1, 2, 3, 4][i & 3];
        }
        let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
        assert_eq!(v["seq"], 1234);
        assert_eq!(v["t"], 98765);
        let mut hint = 0;
        assert_eq!(field(&p, br#""seq":"#, &mut hint), Some(1234));
        assert_eq!(field(&p, br#""t":"#, &mut 0), Some(98765));
        assert_eq!(field(&p, br#""seq":"#, &mut hint), Some(1234));
    }

    #[test]
    fn a_transcript_unit_is_numbered_interims_then_one_numbered_final() {
        let mut out = Vec::new();
        push_transcripts(&mut out, 7, 123_456, [0; 4]);
        let texts: Vec<serde_json::Value> = frames(&out)
            .iter()
            .map(|p| serde_json::from_slice(p).unwrap())
            .collect();
        assert_eq!(texts.len() as u64, INTERIMS_PER_FINAL + 1);
        for (k, v) in texts.iter().enumerate() {
            assert_eq!(v["type"], "data_stream");
            assert_eq!(v["streamType"], "transcription");
            assert_eq!(v["data"]["t"], 123_456);
            assert_eq!(v["data"]["transcribeLanguage"], "en-US");
            let last = k as u64 == INTERIMS_PER_FINAL;
            assert_eq!(v["data"]["isFinal"], last);
            match last {
                true => assert_eq!(v["data"]["seq"], 7),
                false => assert_eq!(v["data"]["iseq"], 7 * INTERIMS_PER_FINAL + k as u64),
            }
        }
        // The final's number is found where an app looks; an interim's is not taken for it.
        let mut hint = 0;
        let fin = serde_json::to_vec(&texts[3]["data"]).unwrap();
        assert_eq!(field(&fin, br#""seq":"#, &mut hint), Some(7));
        let interim = serde_json::to_vec(&texts[0]["data"]).unwrap();
        assert_eq!(field(&interim, br#""seq":"#, &mut hint), None);
        assert_eq!(field(&interim, br#""iseq":"#, &mut hint), Some(21));
    }

    #[test]
    fn audio_frames_carry_seq_and_time_in_their_first_bytes() {
        let mut out = Vec::new();
        push_audio(&mut out, 7, 99, 3200, [9, 8, 7, 6]);
        assert_eq!(out[0], 0x82);
        assert_eq!(out[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 3200);
        let mut p = out[8..].to_vec();
        assert_eq!(p.len(), 3200);
        for (i, x) in p.iter_mut().enumerate() {
            *x ^= [9, 8, 7, 6][i & 3];
        }
        assert_eq!(audio_fields(&p), Some((7, 99)));
        assert!(p[16..].iter().all(|&b| b == 0));
        assert_eq!(audio_fields(&p[..15]), None);
    }
}
