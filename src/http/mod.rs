//! HTTP/1.1 layer (sans-IO): the request push parser and the response writer used for the
//! upgrade handshake and the REST endpoints, and the response parser of the webhook client.
//! No sockets, no clock.

pub mod client;
pub mod request;
pub mod response;

pub use client::{Response, ResponseBody, ResponseError, ResponseLimits, ResponseParser};
pub use request::{parse_request, HttpError, Request, RequestLimits};
pub use response::{write_json_error, write_response, Status};
