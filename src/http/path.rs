//! HTTP layer (sans-IO): the values a router reads from a request line and its headers — a
//! path segment's `%XX` escapes decoded, the token of an `Authorization: Bearer` header, and
//! the `405` answer naming the methods a path allows. Pure functions over text, no state.

/// Decode `%XX` escapes in a path segment; `None` if one is malformed or not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The token of an `Authorization` value `Bearer <token>` (or `bearer <token>`), trimmed;
/// `None` for any other scheme.
pub fn bearer(authorization: &str) -> Option<&str> {
    authorization
        .strip_prefix("Bearer ")
        .or_else(|| authorization.strip_prefix("bearer "))
        .map(str::trim)
}

/// A `405 Method Not Allowed` answer: the JSON error's message and the `Allow` header line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodNotAllowed {
    pub message: &'static str,
    pub allow: &'static str,
}

impl MethodNotAllowed {
    pub const GET: MethodNotAllowed = MethodNotAllowed {
        message: "use GET",
        allow: "Allow: GET",
    };
    pub const POST: MethodNotAllowed = MethodNotAllowed {
        message: "use POST",
        allow: "Allow: POST",
    };
    pub const PUT: MethodNotAllowed = MethodNotAllowed {
        message: "use PUT",
        allow: "Allow: PUT",
    };
    pub const GET_PUT_DELETE: MethodNotAllowed = MethodNotAllowed {
        message: "use GET, PUT or DELETE",
        allow: "Allow: GET, PUT, DELETE",
    };
    /// The error code of the JSON body.
    pub const CODE: &'static str = "METHOD_NOT_ALLOWED";
}

#[cfg(test)]
mod tests {
    use super::{bearer, percent_decode};

    #[test]
    fn percent_decoding() {
        assert_eq!(
            percent_decode("alice%40example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        // A multi-byte escape is not split in the middle of `%`.
        assert_eq!(percent_decode("%C3%A9").as_deref(), Some("é"));
        assert_eq!(percent_decode("%é"), None);
    }

    #[test]
    fn bearer_tokens() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("abc"), None);
        assert_eq!(bearer("Bearer "), Some(""));
    }
}
