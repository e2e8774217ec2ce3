//! Protocol layer (sans-IO): every wire type of the product — what glasses and apps send
//! ([`inbound`], borrowed from the input buffer; [`scan`], the one-pass read of a plain
//! message's `type` in front of it; [`message`], each message as a typed value by one decode
//! of that `type`), what the box sends them and their app servers
//! ([`outbound`], serialised straight into output buffers); and [`capabilities`], what each
//! known glasses model can do.
//!
//! Invariants: decoding an inbound message never copies a string that has no escapes in it;
//! relayed message bodies are never decoded, only their `type`; every outbound message is a
//! typed value (no ad-hoc JSON text is assembled elsewhere, except the `data_stream` envelope
//! whose per-app prefix is built once here and spliced around the original bytes).

pub mod capabilities;
pub mod inbound;
pub mod message;
pub mod outbound;
pub mod requests;
pub mod scan;
