//! Core layer (sans-IO, bottom): when each connection may be read — backpressure as events the
//! connection table records once, pushed to whoever acts on them rather than asked per read.
//!
//! A connection is *held* (not read) for any of the reasons kept in the bits of `Conn::flow`:
//! its own output is at its high-water mark (`read_pause`), it is done (nothing more will be
//! read), or the core holds it as a feeder (a subscriber of its session is backed up, or the
//! output of all connections together is over its budget). Owns three lists:
//! - every change of "held" goes once onto the reading list, which the shell drains with
//!   [`Net::poll_reading`] (stop reading it / read it again);
//! - every time a connection becomes backed up (output past `read_pause`) or drains (back to
//!   it or under) goes once onto the congestion list, which the core drains with
//!   [`Net::poll_congestion`] and turns into "hold feeder X" / "release feeder X" (the hub
//!   knows which feeders feed which apps);
//! - the feeders held, so releasing them never walks the table.
//!
//! Invariants: a connection is on each list at most once (a bit says it is); the shell is told
//! only real changes (`TOLD` is what it was told last); `backed` counts the connections whose
//! `BACKED` bit is set.

use super::conn::{Conn, ConnId};
use super::table::Net;
use slab::Slab;

/// Its own output is at `read_pause` or past it.
pub const OWN: u8 = 1;
/// Done: nothing more will be read.
pub const DONE: u8 = 2;
/// Held as a feeder of a session one of whose subscribers is backed up.
pub const FEEDER: u8 = 4;
/// Held as a feeder while the total output is over its budget.
pub const BUDGET: u8 = 8;
/// Every reason to hold a connection.
pub const HOLD: u8 = OWN | DONE | FEEDER | BUDGET;
/// The shell was last told the connection is held.
const TOLD: u8 = 16;
/// On the reading list.
const QUEUED: u8 = 32;
/// Backed up: output past `read_pause` (as of the last append or write).
pub const BACKED: u8 = 64;
/// On the congestion list.
const CONGESTION_QUEUED: u8 = 128;

/// The lists of [the module](self).
#[derive(Default)]
pub struct Flow {
    reading: Vec<ConnId>,
    congestion: Vec<ConnId>,
    held: Vec<ConnId>,
    /// Connections backed up now.
    backed: usize,
}

impl Flow {
    /// Record what changed in `c`'s flow bits (`before` is what they were): a change of "held"
    /// for the shell, a change of "backed up" for the core. Out of line: the output paths only
    /// call it when a bit changed, which is rare.
    #[cold]
    #[inline(never)]
    pub fn note(&mut self, id: ConnId, c: &mut Conn, before: u8) {
        let changed = before ^ c.flow;
        if changed & BACKED != 0 {
            if c.flow & BACKED != 0 {
                self.backed += 1;
            } else {
                self.backed -= 1;
            }
            if c.flow & CONGESTION_QUEUED == 0 {
                c.flow |= CONGESTION_QUEUED;
                self.congestion.push(id);
            }
        }
        let held = c.flow & HOLD != 0;
        if held != (c.flow & TOLD != 0) && c.flow & QUEUED == 0 {
            c.flow |= QUEUED;
            self.reading.push(id);
        }
    }

    /// A connection leaves the table.
    pub fn forget(&mut self, c: &Conn) {
        if c.flow & BACKED != 0 {
            self.backed -= 1;
        }
    }
}

/// `c`'s flow bits with its own output level brought in line: `OWN` at `high` bytes or more,
/// `BACKED` past it.
#[inline(always)]
pub fn level(c: &Conn, pending: usize, high: usize) -> u8 {
    let own = u8::from(pending >= high) * OWN;
    let backed = u8::from(pending > high) * BACKED;
    (c.flow & !(OWN | BACKED)) | own | backed
}

impl Net {
    /// A connection whose readability changed since it was last handed out, and whether it
    /// may be read now (`false`: stop reading it; `true`: read it again, bytes may be waiting).
    pub fn poll_reading(&mut self) -> Option<(ConnId, bool)> {
        while let Some(id) = self.flow.reading.pop() {
            let Some(c) = self.get_mut(id) else { continue };
            c.flow &= !QUEUED;
            let held = c.flow & HOLD != 0;
            if held != (c.flow & TOLD != 0) {
                c.flow ^= TOLD;
                return Some((id, !held));
            }
        }
        None
    }

    /// A connection that became backed up (`true`) or drained (`false`) since it was last
    /// handed out.
    pub fn poll_congestion(&mut self) -> Option<(ConnId, bool)> {
        while let Some(id) = self.flow.congestion.pop() {
            let Some(c) = self.get_mut(id) else { continue };
            c.flow &= !CONGESTION_QUEUED;
            return Some((id, c.flow & BACKED != 0));
        }
        None
    }

    /// Whether `id` may be read now (a look at its slot; the shell learns of changes from
    /// [`Net::poll_reading`]).
    pub fn may_read(&self, id: ConnId) -> bool {
        self.get(id).is_some_and(|c| c.flow & HOLD == 0)
    }

    /// Whether a connection backed up or drained since [`Net::poll_congestion`] last said.
    pub fn congestion_news(&self) -> bool {
        !self.flow.congestion.is_empty()
    }

    /// Nothing to settle: no connection backed up, none held as a feeder, no news, the total
    /// under its budget (checked on every input, so it must cost next to nothing).
    #[inline]
    pub fn flow_quiet(&self) -> bool {
        self.flow.backed == 0
            && self.flow.held.is_empty()
            && self.flow.congestion.is_empty()
            && !self.over_budget()
    }

    /// Whether any connection is backed up.
    pub fn any_backed_up(&self) -> bool {
        self.flow.backed > 0
    }

    /// Hold feeder `id` for `why` ([`FEEDER`] or [`BUDGET`]); false if it was held as a feeder
    /// already (or is gone).
    pub fn hold_feeder(&mut self, id: ConnId, why: u8) -> bool {
        let Net { flow, conns, .. } = self;
        let Some(c) = slot(conns, id) else {
            return false;
        };
        if c.flow & (FEEDER | BUDGET) != 0 {
            return false;
        }
        let before = c.flow;
        c.flow |= why & (FEEDER | BUDGET);
        flow.held.push(id);
        flow.note(id, c, before);
        true
    }

    /// Whether any feeder is held.
    pub fn feeders_held(&self) -> bool {
        !self.flow.held.is_empty()
    }

    /// Release every held feeder `still_held` does not keep (those gone are dropped).
    pub fn release_feeders(&mut self, mut still_held: impl FnMut(&Net, ConnId) -> bool) {
        let mut held = std::mem::take(&mut self.flow.held);
        held.retain(|&id| {
            if self.get(id).is_none() {
                return false;
            }
            if still_held(self, id) {
                return true;
            }
            let Net { flow, conns, .. } = self;
            if let Some(c) = slot(conns, id) {
                let before = c.flow;
                c.flow &= !(FEEDER | BUDGET);
                flow.note(id, c, before);
            }
            false
        });
        self.flow.held = held;
    }
}

fn slot(conns: &mut Slab<Conn>, id: ConnId) -> Option<&mut Conn> {
    conns.get_mut(id.index as usize).filter(|c| c.gen == id.gen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Endpoint, Outbox, Peer, Phase, ServerConfig};
    use crate::ws::Opcode;

    fn table() -> (Net, ConnId) {
        let mut net = Net::new(ServerConfig {
            read_pause: 1000,
            ..ServerConfig::default()
        });
        let id = net
            .insert(Peer::InProcess, Phase::Ws(Endpoint::App))
            .unwrap();
        (net, id)
    }

    #[test]
    fn backing_up_and_draining_are_each_recorded_once() {
        let (mut net, id) = table();
        assert!(net.send_frame(id, Opcode::Text, &[&[b'x'; 600]]));
        assert_eq!(net.poll_congestion(), None);
        assert_eq!(net.poll_reading(), None);
        // Past the high-water mark, then further past it: one event of each kind.
        assert!(net.send_frame(id, Opcode::Text, &[&[b'x'; 600]]));
        assert!(net.send_frame(id, Opcode::Text, &[&[b'x'; 600]]));
        assert!(net.any_backed_up());
        assert_eq!(net.poll_congestion(), Some((id, true)));
        assert_eq!(net.poll_congestion(), None);
        assert_eq!(net.poll_reading(), Some((id, false)));
        assert_eq!(net.poll_reading(), None);
        assert!(!net.may_read(id));
        // Written down below the mark: drained, readable again, once.
        let pending = net.output(id).len();
        net.consume_output(id, pending - 10);
        net.consume_output(id, 5);
        assert!(!net.any_backed_up());
        assert_eq!(net.poll_congestion(), Some((id, false)));
        assert_eq!(net.poll_congestion(), None);
        assert_eq!(net.poll_reading(), Some((id, true)));
        assert_eq!(net.poll_reading(), None);
        assert!(net.may_read(id));
    }

    #[test]
    fn a_change_undone_before_the_shell_looks_is_not_reported() {
        let (mut net, id) = table();
        assert!(net.send_frame(id, Opcode::Text, &[&[b'x'; 1200]]));
        let pending = net.output(id).len();
        net.consume_output(id, pending);
        // Held and freed again in between: the shell, told nothing yet, needs to hear nothing.
        assert_eq!(net.poll_reading(), None);
        // The core hears both edges through the connection's current state: drained.
        assert_eq!(net.poll_congestion(), Some((id, false)));
    }

    #[test]
    fn feeders_are_held_once_and_released_when_free() {
        let (mut net, id) = table();
        let other = net.insert(Peer::InProcess, Phase::Http).unwrap();
        assert!(net.hold_feeder(id, FEEDER));
        assert!(!net.hold_feeder(id, BUDGET), "held already");
        assert!(net.hold_feeder(other, BUDGET));
        assert_eq!(net.poll_reading(), Some((other, false)));
        assert_eq!(net.poll_reading(), Some((id, false)));
        net.release_feeders(|_, f| f == other);
        assert_eq!(net.poll_reading(), Some((id, true)));
        assert!(net.feeders_held());
        // A feeder that is gone is dropped from the list, not released.
        net.remove(other);
        net.release_feeders(|_, _| true);
        assert!(!net.feeders_held());
        assert_eq!(net.poll_reading(), None);
    }

    #[test]
    fn a_finished_connection_is_held_for_good_and_its_input_dropped() {
        let (mut net, id) = table();
        net.get_mut(id).unwrap().input = b"partial".to_vec();
        net.finish(id);
        assert_eq!(net.poll_reading(), Some((id, false)));
        assert_eq!(net.get(id).unwrap().input.capacity(), 0);
        net.release_feeders(|_, _| false);
        assert!(!net.may_read(id));
    }
}
