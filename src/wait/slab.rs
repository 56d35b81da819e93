//! A generational slab: values under keys that go stale when their value is removed, so
//! a key the kernel reports late (an epoll token) can never reach the slot's next value.

/// A slot's place and the generation of the value it held when the key was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Key {
    pub index: u32,
    pub generation: u32,
}

impl Key {
    /// The key as one `u64` (an epoll token).
    pub(crate) fn token(self) -> u64 {
        (u64::from(self.generation) << 32) | u64::from(self.index)
    }

    /// The key a [`token`](Self::token) was made from.
    pub(crate) fn from_token(token: u64) -> Key {
        Key {
            index: token as u32,
            generation: (token >> 32) as u32,
        }
    }
}

struct Slot<T> {
    generation: u32,
    value: Option<T>,
}

pub(crate) struct Slab<T> {
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    len: usize,
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab {
            slots: Vec::new(),
            free: Vec::new(),
            len: 0,
        }
    }
}

impl<T> Slab<T> {
    /// The key the next [`insert`](Self::insert) will use; `None` when 2^32 slots are
    /// in use.
    pub(crate) fn next_key(&mut self) -> Option<Key> {
        let index = match self.free.last() {
            Some(&i) => i,
            None => {
                let i = u32::try_from(self.slots.len()).ok()?;
                self.slots.push(Slot {
                    generation: 0,
                    value: None,
                });
                self.free.push(i);
                i
            }
        };
        Some(Key {
            index,
            generation: self.slots[index as usize].generation,
        })
    }

    /// Stores `value` under the key [`next_key`](Self::next_key) returned.
    pub(crate) fn insert(&mut self, value: T) -> Option<Key> {
        let key = self.next_key()?;
        self.free.pop();
        self.slots[key.index as usize].value = Some(value);
        self.len += 1;
        Some(key)
    }

    /// Takes the value of `key` out; the key (and every copy of it) goes stale.
    pub(crate) fn remove(&mut self, key: Key) -> Option<T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        if slot.generation != key.generation {
            return None;
        }
        let value = slot.value.take()?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(key.index);
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn get(&self, key: Key) -> Option<&T> {
        let slot = self.slots.get(key.index as usize)?;
        (slot.generation == key.generation)
            .then_some(slot.value.as_ref())
            .flatten()
    }

    pub(crate) fn get_mut(&mut self, key: Key) -> Option<&mut T> {
        let slot = self.slots.get_mut(key.index as usize)?;
        (slot.generation == key.generation)
            .then_some(slot.value.as_mut())
            .flatten()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The keys of all values, in slot order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = Key> + '_ {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.value.as_ref().map(|_| Key {
                index: i as u32,
                generation: s.generation,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_key_never_reaches_the_next_value_of_its_slot() {
        let mut slab = Slab::default();
        let a = slab.insert("a").unwrap();
        assert_eq!(slab.remove(a), Some("a"));
        let b = slab.insert("b").unwrap();
        assert_eq!(a.index, b.index);
        assert_eq!(slab.get(a), None);
        assert_eq!(slab.get(b), Some(&"b"));
        assert_eq!(Key::from_token(b.token()), b);
    }
}
