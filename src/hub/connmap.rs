//! Core layer (values), part of the hub: a map from connection ids to the hub's view of each
//! connection, kept as a `Vec` indexed by the connection's slot.
//!
//! Every glasses and app connection has an entry. A hash map held them at up to twice their
//! number in buckets, each touched; slots are dense (the table reuses the lowest free one), so
//! a `Vec` holds them at their number, and a look-up on the relay's path is an index and a
//! generation check instead of a hash. Invariants: an entry is found only by the id it was
//! inserted under (a reused slot's new occupant never sees its predecessor's entry); trailing
//! empty slots are dropped and the room follows the entries down, so a burst of connections
//! that closed leaves no room behind.

use crate::net::ConnId;

#[derive(Debug)]
pub(super) struct ConnMap<V> {
    slots: Vec<Option<(ConnId, V)>>,
    len: usize,
}

impl<V> Default for ConnMap<V> {
    fn default() -> Self {
        ConnMap {
            slots: Vec::new(),
            len: 0,
        }
    }
}

impl<V> ConnMap<V> {
    pub fn get(&self, id: &ConnId) -> Option<&V> {
        match self.slots.get(id.index as usize) {
            Some(Some((k, v))) if k == id => Some(v),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: &ConnId) -> Option<&mut V> {
        match self.slots.get_mut(id.index as usize) {
            Some(Some((k, v))) if k == id => Some(v),
            _ => None,
        }
    }

    /// Insert `v` under `id`; returns what the slot held for the same id (an entry of an older
    /// generation in the slot is dropped).
    pub fn insert(&mut self, id: ConnId, v: V) -> Option<V> {
        let i = id.index as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        let old = self.slots[i].replace((id, v));
        match old {
            Some((k, v)) if k == id => Some(v),
            Some(_) => None,
            None => {
                self.len += 1;
                None
            }
        }
    }

    pub fn remove(&mut self, id: &ConnId) -> Option<V> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.as_ref().is_none_or(|(k, _)| k != id) {
            return None;
        }
        let (_, v) = slot.take()?;
        self.len -= 1;
        while matches!(self.slots.last(), Some(None)) {
            self.slots.pop();
        }
        if self.slots.len() < self.slots.capacity() / 4 {
            self.slots.shrink_to(self.slots.len() * 2);
        }
        Some(v)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Every entry, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (&ConnId, &V)> {
        self.slots.iter().flatten().map(|(k, v)| (k, v))
    }

    /// Take every entry out.
    pub fn drain(&mut self) -> impl Iterator<Item = (ConnId, V)> {
        self.len = 0;
        std::mem::take(&mut self.slots).into_iter().flatten()
    }

    /// Slots the map has room for.
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.slots.capacity()
    }
}

impl<'a, V> IntoIterator for &'a ConnMap<V> {
    type Item = (&'a ConnId, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a ConnId, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::ConnMap;
    use crate::net::ConnId;

    fn id(index: u32, gen: u32) -> ConnId {
        ConnId { index, gen }
    }

    #[test]
    fn an_entry_is_found_only_by_its_own_generation() {
        let mut m = ConnMap::default();
        assert_eq!(m.insert(id(3, 1), "a"), None);
        assert_eq!(m.get(&id(3, 1)), Some(&"a"));
        assert_eq!(m.get(&id(3, 2)), None);
        assert_eq!(m.remove(&id(3, 2)), None);
        // The slot's next occupant replaces the stale entry without seeing it.
        assert_eq!(m.insert(id(3, 2), "b"), None);
        assert_eq!((m.get(&id(3, 1)), m.len()), (None, 1));
        assert_eq!(m.insert(id(3, 2), "c"), Some("b"));
        assert_eq!(m.remove(&id(3, 2)), Some("c"));
        assert_eq!(m.len(), 0);
    }

    #[test]
    fn the_room_of_a_burst_goes_back_once_its_connections_closed() {
        let mut m = ConnMap::default();
        for i in 0..10_000 {
            m.insert(id(i, 1), i);
        }
        assert!(m.capacity() >= 10_000);
        for i in 1..10_000 {
            assert_eq!(m.remove(&id(i, 1)), Some(i));
        }
        assert_eq!(
            m.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(),
            [(id(0, 1), 0)]
        );
        assert!(m.capacity() <= 16, "room {} kept for 1 entry", m.capacity());
    }
}
