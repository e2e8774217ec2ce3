//! Shell layer, sans-IO part of the PostgreSQL store: the frontend/backend protocol (version
//! 3.0) as bytes. Encoders append one frontend message to a buffer; [`decode`] takes one
//! backend message off the front of a buffer. No socket, no clock.
//!
//! Invariants: a backend message longer than [`MAX_MESSAGE`] or shorter than its own length
//! field is an error, never an allocation of that size; every field read is bounds-checked
//! (a short or malformed body is an error, not a panic).

/// The largest backend message accepted (a row of durable state is a few KiB at most).
pub const MAX_MESSAGE: usize = 64 << 20;

const PROTOCOL_3_0: i32 = 196_608;

fn put_i32(out: &mut Vec<u8>, v: i32) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_i16(out: &mut Vec<u8>, v: i16) {
    out.extend_from_slice(&v.to_be_bytes());
}

fn put_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Append a message of type `tag` whose body `body` writes.
fn message(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let at = out.len();
    put_i32(out, 0);
    body(out);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// The startup message: protocol 3.0 and the connection's parameters.
pub fn startup(out: &mut Vec<u8>, params: &[(&str, &str)]) {
    let at = out.len();
    put_i32(out, 0);
    put_i32(out, PROTOCOL_3_0);
    for (k, v) in params {
        put_cstr(out, k);
        put_cstr(out, v);
    }
    out.push(0);
    let len = (out.len() - at) as i32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// A cleartext password.
pub fn password(out: &mut Vec<u8>, password: &str) {
    message(out, b'p', |o| put_cstr(o, password));
}

/// The first SASL message: the mechanism chosen and the client's first message.
pub fn sasl_initial(out: &mut Vec<u8>, mechanism: &str, data: &[u8]) {
    message(out, b'p', |o| {
        put_cstr(o, mechanism);
        put_i32(o, data.len() as i32);
        o.extend_from_slice(data);
    });
}

/// A later SASL message.
pub fn sasl_response(out: &mut Vec<u8>, data: &[u8]) {
    message(out, b'p', |o| o.extend_from_slice(data));
}

/// A simple query (one or more statements, no parameters).
pub fn query(out: &mut Vec<u8>, sql: &str) {
    message(out, b'Q', |o| put_cstr(o, sql));
}

/// Parse + Bind + Execute of `sql` with text parameters (`None` is NULL) on the unnamed
/// statement and portal; the results come after the next [`sync`].
pub fn execute(out: &mut Vec<u8>, sql: &str, params: &[Option<&str>]) {
    message(out, b'P', |o| {
        put_cstr(o, "");
        put_cstr(o, sql);
        put_i16(o, 0);
    });
    message(out, b'B', |o| {
        put_cstr(o, "");
        put_cstr(o, "");
        put_i16(o, 0);
        put_i16(o, params.len() as i16);
        for p in params {
            match p {
                Some(v) => {
                    put_i32(o, v.len() as i32);
                    o.extend_from_slice(v.as_bytes());
                }
                None => put_i32(o, -1),
            }
        }
        put_i16(o, 0);
    });
    message(out, b'E', |o| {
        put_cstr(o, "");
        put_i32(o, 0);
    });
}

/// Sync: ends an extended-query pipeline; everything since the last one is one implicit
/// transaction, committed here or rolled back if any part failed.
pub fn sync(out: &mut Vec<u8>) {
    message(out, b'S', |_| {});
}

pub fn terminate(out: &mut Vec<u8>) {
    message(out, b'X', |_| {});
}

/// A backend message, decoded as far as the client needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Backend {
    AuthOk,
    AuthCleartext,
    AuthMd5,
    /// The SASL mechanisms offered.
    AuthSasl(Vec<String>),
    AuthSaslContinue(Vec<u8>),
    AuthSaslFinal(Vec<u8>),
    /// Another authentication request (its code).
    AuthOther(i32),
    /// Transaction status: `I` idle, `T` in a transaction, `E` in a failed one.
    ReadyForQuery(u8),
    /// A row's columns as text (`None` is NULL).
    DataRow(Vec<Option<String>>),
    CommandComplete,
    /// The server's `S`everity, `C`ode and `M`essage fields, as one line.
    Error(String),
    /// Anything else the client does not act on (parameter status, notices, row
    /// descriptions, parse/bind complete, ...).
    Other(u8),
}

/// Take one backend message off the front of `buf`: `Ok(None)` when it is not complete yet,
/// else the message and the bytes it used.
pub fn decode(buf: &[u8]) -> Result<Option<(Backend, usize)>, String> {
    if buf.len() < 5 {
        return Ok(None);
    }
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
    if len < 4 || len as usize > MAX_MESSAGE {
        return Err(format!(
            "bad message length {len} for message type {:?}",
            tag as char
        ));
    }
    let total = 1 + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let mut r = Reader(&buf[5..total]);
    let msg = match tag {
        b'R' => match r.i32()? {
            0 => Backend::AuthOk,
            3 => Backend::AuthCleartext,
            5 => Backend::AuthMd5,
            10 => {
                let mut mechs = Vec::new();
                loop {
                    let m = r.cstr()?;
                    if m.is_empty() {
                        break;
                    }
                    mechs.push(m);
                }
                Backend::AuthSasl(mechs)
            }
            11 => Backend::AuthSaslContinue(r.rest().to_vec()),
            12 => Backend::AuthSaslFinal(r.rest().to_vec()),
            other => Backend::AuthOther(other),
        },
        b'Z' => Backend::ReadyForQuery(r.u8()?),
        b'D' => {
            let n = r.i16()?;
            let mut cols = Vec::with_capacity(n.clamp(0, 64) as usize);
            for _ in 0..n {
                let l = r.i32()?;
                cols.push(if l < 0 {
                    None
                } else {
                    let bytes = r.take(l as usize)?;
                    Some(
                        String::from_utf8(bytes.to_vec())
                            .map_err(|_| "a column is not UTF-8".to_string())?,
                    )
                });
            }
            Backend::DataRow(cols)
        }
        b'C' => Backend::CommandComplete,
        b'E' => {
            let mut parts = Vec::new();
            loop {
                let field = r.u8()?;
                if field == 0 {
                    break;
                }
                let v = r.cstr()?;
                if matches!(field, b'S' | b'C' | b'M') {
                    parts.push(v);
                }
            }
            Backend::Error(parts.join(" "))
        }
        other => Backend::Other(other),
    };
    Ok(Some((msg, total)))
}

/// Bounds-checked reads over a message body.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.0.len() < n {
            return Err("a message is shorter than its fields".into());
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn i16(&mut self) -> Result<i16, String> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }
    fn i32(&mut self) -> Result<i32, String> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn cstr(&mut self) -> Result<String, String> {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .ok_or("a string field is not terminated")?;
        let s = String::from_utf8_lossy(&self.0[..end]).into_owned();
        self.0 = &self.0[end + 1..];
        Ok(s)
    }
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_framed_and_partial_input_waits() {
        let mut out = Vec::new();
        execute(&mut out, "SELECT $1", &[Some("a"), None]);
        sync(&mut out);
        // Parse, Bind, Execute, Sync: each a tag and a length covering itself and the body.
        let mut at = 0;
        let mut tags = Vec::new();
        while at < out.len() {
            tags.push(out[at]);
            let len = i32::from_be_bytes(out[at + 1..at + 5].try_into().unwrap());
            at += 1 + len as usize;
        }
        assert_eq!(at, out.len());
        assert_eq!(tags, b"PBES");

        let row = [
            b'D', 0, 0, 0, 15, 0, 2, 0, 0, 0, 1, b'x', 255, 255, 255, 255,
        ];
        assert_eq!(decode(&row[..8]).unwrap(), None);
        assert_eq!(
            decode(&row).unwrap(),
            Some((Backend::DataRow(vec![Some("x".into()), None]), 16))
        );
    }

    #[test]
    fn malformed_backend_messages_are_errors_not_panics() {
        // A length below its own size, one past the bound, and bodies shorter than their fields.
        assert!(decode(&[b'Z', 0, 0, 0, 3]).is_err());
        assert!(decode(&[b'Z', 0x7f, 0xff, 0xff, 0xff]).is_err());
        assert!(decode(&[b'Z', 0, 0, 0, 4]).is_err());
        assert!(decode(&[b'D', 0, 0, 0, 8, 0, 1, 0, 0]).is_err());
        assert!(decode(&[b'D', 0, 0, 0, 10, 0, 1, 0, 0, 0, 9]).is_err());
        assert!(decode(&[b'E', 0, 0, 0, 6, b'M', b'x']).is_err());
        assert!(decode(&[b'R', 0, 0, 0, 6, 0, 0]).is_err());
    }
}
