//! HTTP layer: the response writer. Appends a complete HTTP/1.1 response to a caller's output
//! buffer; every response carries `Content-Length` and `Connection: close`.

/// The statuses this server answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u16);

impl Status {
    pub fn reason(self) -> &'static str {
        match self.0 {
            200 => "OK",
            400 => "Bad Request",
            401 => "Unauthorized",
            403 => "Forbidden",
            404 => "Not Found",
            405 => "Method Not Allowed",
            408 => "Request Timeout",
            411 => "Length Required",
            413 => "Payload Too Large",
            426 => "Upgrade Required",
            431 => "Request Header Fields Too Large",
            500 => "Internal Server Error",
            503 => "Service Unavailable",
            _ => "Error",
        }
    }
}

/// Append a response with the given extra header lines (each without CRLF) and body.
pub fn write_response(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &str,
    extra: &[&str],
    body: &[u8],
) {
    let s = Status(status);
    out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", s.0, s.reason()).as_bytes());
    out.extend_from_slice(
        format!(
            "Content-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
            body.len()
        )
        .as_bytes(),
    );
    for h in extra {
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
}

/// Append a JSON error response: `{"success":false,"code":…,"message":…}`.
pub fn write_json_error(out: &mut Vec<u8>, status: u16, code: &str, message: &str, extra: &[&str]) {
    let body = serde_json::json!({ "success": false, "code": code, "message": message });
    write_response(
        out,
        status,
        "application/json",
        extra,
        body.to_string().as_bytes(),
    );
}
