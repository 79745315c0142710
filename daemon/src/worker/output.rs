//! A run's captured output: the last `output_limit` bytes, so a flood costs constant memory and
//! the end of a long log, where the error usually is, survives.

use std::collections::VecDeque;

/// The tail of a byte stream.
#[derive(Debug)]
pub struct Tail {
    bytes: VecDeque<u8>,
    limit: usize,
    dropped: u64,
}

impl Tail {
    /// Keeps at most `limit` bytes.
    pub fn new(limit: u64) -> Tail {
        Tail {
            bytes: VecDeque::new(),
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            dropped: 0,
        }
    }

    /// Appends `chunk`, dropping the oldest bytes beyond the limit.
    pub fn push(&mut self, chunk: &[u8]) {
        let keep = chunk.len().min(self.limit);
        self.dropped += (chunk.len() - keep) as u64;
        let chunk = &chunk[chunk.len() - keep..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.dropped += overflow as u64;
        self.bytes.extend(chunk);
    }

    /// The kept bytes and how many were dropped from the front.
    pub fn into_parts(self) -> (Vec<u8>, u64) {
        (self.bytes.into(), self.dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_tail() {
        let mut tail = Tail::new(5);
        tail.push(b"abc");
        tail.push(b"defg");
        assert_eq!(tail.into_parts(), (b"cdefg".to_vec(), 2));
    }

    #[test]
    fn a_chunk_larger_than_the_limit_keeps_its_end() {
        let mut tail = Tail::new(3);
        tail.push(b"ab");
        tail.push(b"0123456789");
        assert_eq!(tail.into_parts(), (b"789".to_vec(), 9));
    }

    #[test]
    fn zero_keeps_nothing() {
        let mut tail = Tail::new(0);
        tail.push(b"abc");
        assert_eq!(tail.into_parts(), (Vec::new(), 3));
    }
}
