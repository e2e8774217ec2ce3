//! HTTP/1.1 layer (sans-IO): the request push parser and the response writer used for the
//! upgrade handshake and the REST endpoints. No sockets, no clock.

pub mod request;
pub mod response;

pub use request::{parse_request, HttpError, Request, RequestLimits};
pub use response::{write_json_error, write_response, Status};
