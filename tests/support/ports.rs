//! Test support: free loopback ports for servers the tests start.
//!
//! Binding port 0 and dropping the listener hands back a port the kernel may give out again at
//! once — two calls in a row have returned the same port, and a server and its app then fought
//! over it. Every port handed out here is remembered for the life of the test process and never
//! handed out twice.

use std::collections::HashSet;
use std::net::TcpListener;
use std::sync::Mutex;

static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A loopback port that was free a moment ago and that no other caller in this process got.
pub fn free_port() -> Result<u16, String> {
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    for _ in 0..64 {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind 127.0.0.1:0: {e}"))?;
        let port = l.local_addr().map_err(|e| e.to_string())?.port();
        if given.insert(port) {
            return Ok(port);
        }
    }
    Err("no fresh loopback port after 64 tries".into())
}
