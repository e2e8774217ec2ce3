//! WebSocket layer (sans-IO): the upgrade handshake, the zero-copy frame parser and encoder, and
//! the per-connection message assembler. Nothing here touches a socket or a clock.

pub mod frame;
pub mod handshake;
pub mod mask;
pub mod receiver;

pub use frame::{Opcode, Role};
pub use receiver::{Limits, Message, Receiver, Step, WsError};
