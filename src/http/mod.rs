//! HTTP/1.1 layer (sans-IO): the request push parser and the response writer used for the
//! upgrade handshake and the REST endpoints, the values routing reads from a request (`path`:
//! percent-decoding, bearer tokens, `405` answers), and the response parser of the webhook
//! client. No sockets, no clock.

pub mod client;
pub mod path;
pub mod request;
pub mod response;

pub use client::{Response, ResponseBody, ResponseError, ResponseLimits, ResponseParser};
pub use path::{bearer, percent_decode, MethodNotAllowed};
pub use request::{parse_request, HttpError, Request, RequestLimits};
pub use response::{write_json_error, write_response, Status};
