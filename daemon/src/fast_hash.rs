//! A fast hash for the engine's own maps: fire keys, run ids, tickets and job names.
//!
//! std's default hash (SipHash) resists keys chosen to collide, which costs a few dozen
//! nanoseconds per lookup; a burst of 10,000 co-due fires takes about a dozen lookups each on
//! its way to a start. These keys are ids the daemon hands out and names from its own config,
//! never chosen by a client (a request naming a job only looks it up), so a multiply-and-rotate
//! hash in the manner of rustc's `FxHasher`, finished with MurmurHash3's mixer, serves them.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FastHasher`].
pub type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// Multiplies by an odd constant with good bit dispersion (the one `FxHasher` uses).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// Eight bytes at a time: rotate, mix in, multiply.
#[derive(Debug, Default, Clone, Copy)]
pub struct FastHasher(u64);

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for chunk in &mut words {
            let mut word = [0_u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut word = [0_u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.add(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.add(u64::from(n));
    }

    fn write_u64(&mut self, n: u64) {
        self.add(n);
    }

    fn write_usize(&mut self, n: usize) {
        self.add(n as u64);
    }

    /// A product's low bits depend only on the multiplicands' low bits, and the table indexes
    /// by the low bits: MurmurHash3's finalizer mixes every bit into every other first.
    fn finish(&self) -> u64 {
        let mut x = self.0;
        x ^= x >> 33;
        x = x.wrapping_mul(0xff51_afd7_ed55_8ccd);
        x ^= x >> 33;
        x = x.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        x ^ (x >> 33)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_names_spread_over_the_buckets() {
        let mut map: FastMap<u64, u64> = FastMap::default();
        for id in 0..100_000 {
            map.insert(id, id * 2);
        }
        assert!((0..100_000).all(|id| map[&id] == id * 2));
        let names: FastMap<String, usize> = (0..10_000).map(|i| (format!("job-{i}"), i)).collect();
        assert_eq!(names.len(), 10_000);
        assert!(names["job-9999"] == 9_999 && !names.contains_key("job-10000"));
        // Names that differ in their last byte land in different buckets: the low bits,
        // which index the table, differ too.
        let buckets: std::collections::HashSet<u64> = (0..1_000)
            .map(|i| {
                let mut hasher = FastHasher::default();
                hasher.write(format!("job-{i:04}").as_bytes());
                hasher.finish() & 0x3ff
            })
            .collect();
        assert!(buckets.len() > 500, "{} buckets of 1024", buckets.len());
    }
}
