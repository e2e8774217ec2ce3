//! Core layer (values), part of the hub: a small map from app indices to values, kept as a
//! sorted `Vec` of pairs.
//!
//! A session runs a few apps: a `BTreeMap` gave each session a B-tree leaf of eleven slots
//! (about 1.4 KiB with one app), a `Vec` of the pairs costs what they are. Invariants: keys are
//! unique and ascending (iteration is in key order, as the `BTreeMap`'s was); the capacity is
//! the length, so a session holds no room for apps it does not run (one more app reallocates,
//! which happens at an app start, never on the relay's path).

#[derive(Debug)]
pub(super) struct VecMap<V>(Vec<(usize, V)>);

impl<V> Default for VecMap<V> {
    fn default() -> Self {
        VecMap(Vec::new())
    }
}

impl<V> VecMap<V> {
    fn find(&self, key: usize) -> Result<usize, usize> {
        self.0.binary_search_by_key(&key, |(k, _)| *k)
    }

    pub fn get(&self, key: &usize) -> Option<&V> {
        self.find(*key).ok().map(|i| &self.0[i].1)
    }

    pub fn get_mut(&mut self, key: &usize) -> Option<&mut V> {
        self.find(*key).ok().map(|i| &mut self.0[i].1)
    }

    pub fn contains_key(&self, key: &usize) -> bool {
        self.find(*key).is_ok()
    }

    /// The value at `key`, inserted as `value` if there was none.
    pub fn get_or_insert(&mut self, key: usize, value: V) -> &mut V {
        let i = match self.find(key) {
            Ok(i) => i,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (key, value));
                i
            }
        };
        &mut self.0[i].1
    }

    pub fn remove(&mut self, key: &usize) -> Option<V> {
        let i = self.find(*key).ok()?;
        let (_, v) = self.0.remove(i);
        self.0.shrink_to_fit();
        Some(v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&usize, &V)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &usize> {
        self.0.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.0.iter().map(|(_, v)| v)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Room held for entries (equal to `len`: see the module comment).
    #[cfg(test)]
    pub fn capacity(&self) -> usize {
        self.0.capacity()
    }
}

impl<'a, V> IntoIterator for &'a VecMap<V> {
    type Item = (&'a usize, &'a V);
    type IntoIter =
        std::iter::Map<std::slice::Iter<'a, (usize, V)>, fn(&'a (usize, V)) -> (&'a usize, &'a V)>;

    fn into_iter(self) -> Self::IntoIter {
        fn pair<V>((k, v): &(usize, V)) -> (&usize, &V) {
            (k, v)
        }
        self.0
            .iter()
            .map(pair as fn(&'a (usize, V)) -> (&'a usize, &'a V))
    }
}

#[cfg(test)]
mod tests {
    use super::VecMap;

    #[test]
    fn keys_stay_sorted_and_the_capacity_is_the_length() {
        let mut m = VecMap::default();
        for k in [5, 1, 3] {
            *m.get_or_insert(k, k * 10) += 1;
            assert_eq!(m.capacity(), m.len());
        }
        assert_eq!(*m.get_or_insert(3, 0), 31, "an existing entry is kept");
        assert_eq!(m.keys().copied().collect::<Vec<_>>(), [1, 3, 5]);
        assert_eq!(m.get(&5), Some(&51));
        assert!(m.contains_key(&1) && !m.contains_key(&2));
        assert_eq!(m.remove(&3), Some(31));
        assert_eq!(m.remove(&3), None);
        assert_eq!((m.len(), m.capacity()), (2, 2));
        let pairs: Vec<(usize, usize)> = (&m).into_iter().map(|(k, v)| (*k, *v)).collect();
        assert_eq!(pairs, [(1, 11), (5, 51)]);
    }
}
