//! Maps keyed by counters: fire keys and write tickets, each handed out one after the
//! other.
//!
//! A burst of thousands of co-due fires inserts, looks up and removes thousands of
//! consecutive keys in each of these maps in turn. Hashed at random, each of those touches a
//! bucket of its own far from the last one's; placed by the key itself, consecutive keys sit
//! in consecutive buckets, so a burst walks each table in order, a cache line serving several
//! keys. Only the daemon's own counters, which step by one and are never chosen from
//! outside, are keys here: keys far apart by a power of two would share a bucket.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A map keyed by a counter.
pub type CounterMap<K, V> = HashMap<K, V, BuildHasherDefault<CounterHasher>>;

/// Keeps a counter's low bits as its hash's low bits (which choose its bucket) and spreads
/// its bits into the top seven (which the table compares first, so neighbours do not look
/// alike).
#[derive(Debug, Default)]
pub struct CounterHasher(u64);

/// The 64-bit golden ratio: multiplying by it spreads every bit of a key into the top ones.
const SPREAD: u64 = 0x9E37_79B9_7F4A_7C15;

/// The hash bits the table compares first.
const TOP_SEVEN: u64 = 0xFE00_0000_0000_0000;

impl Hasher for CounterHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, key: u64) {
        let key = self.0.rotate_left(29) ^ key;
        self.0 = key ^ (key.wrapping_mul(SPREAD) & TOP_SEVEN);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    fn hash(key: u64) -> u64 {
        BuildHasherDefault::<CounterHasher>::default().hash_one(key)
    }

    #[test]
    fn consecutive_keys_have_consecutive_low_bits_and_varied_top_bits() {
        for key in 1..10_000_u64 {
            assert_eq!(hash(key) & 0xFFFF_FFFF, key, "key {key}");
        }
        let tops: std::collections::HashSet<u64> =
            (1..1_000_u64).map(|key| hash(key) >> 57).collect();
        assert!(tops.len() > 100, "only {} distinct top bits", tops.len());
    }

    #[test]
    fn signed_keys_hash_too() {
        let mut map: CounterMap<i64, &str> = CounterMap::default();
        map.insert(-1, "minus one");
        map.insert(i64::MAX, "max");
        map.insert(7, "seven");
        assert_eq!(map.get(&-1), Some(&"minus one"));
        assert_eq!(map.get(&i64::MAX), Some(&"max"));
        assert_eq!(map.get(&7), Some(&"seven"));
        assert_eq!(map.get(&8), None);
    }
}
