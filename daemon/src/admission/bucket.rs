//! A token bucket: `rate` starts per second, bursts of at most `max(1, rate)`.

/// Tokens are counted in thousandths so the arithmetic stays in integers of milliseconds.
const SCALE: f64 = 1000.0;

/// A pool's start-rate limiter.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    updated_ms: i64,
}

impl TokenBucket {
    /// A full bucket refilling at `rate` tokens per second.
    pub fn new(rate: f64, now_ms: i64) -> TokenBucket {
        let capacity = rate.max(1.0);
        TokenBucket {
            rate,
            capacity,
            tokens: capacity,
            updated_ms: now_ms,
        }
    }

    fn refill(&mut self, now_ms: i64) {
        let elapsed = (now_ms - self.updated_ms).max(0) as f64;
        self.tokens = (self.tokens + elapsed * self.rate / SCALE).min(self.capacity);
        self.updated_ms = self.updated_ms.max(now_ms);
    }

    /// Starts per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Whether a start is allowed now.
    pub fn ready(&mut self, now_ms: i64) -> bool {
        self.refill(now_ms);
        self.tokens >= 1.0
    }

    /// Spends one token; call only after [`TokenBucket::ready`] said yes.
    pub fn take(&mut self, now_ms: i64) {
        self.refill(now_ms);
        self.tokens -= 1.0;
    }

    /// When the next token will be there, Unix ms.
    pub fn next_token_at(&mut self, now_ms: i64) -> i64 {
        self.refill(now_ms);
        if self.tokens >= 1.0 {
            return now_ms;
        }
        let missing = 1.0 - self.tokens;
        now_ms + (missing * SCALE / self.rate).ceil() as i64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_rate_allows_one_start_then_waits() {
        let mut bucket = TokenBucket::new(0.5, 0);
        assert!(bucket.ready(0));
        bucket.take(0);
        assert_eq!(bucket.next_token_at(1_000), 2_000);
        assert!(!bucket.ready(1_999));
        assert!(bucket.ready(2_000));
    }

    #[test]
    fn a_fast_rate_bursts_up_to_its_rate() {
        let mut bucket = TokenBucket::new(5.0, 0);
        for _ in 0..5 {
            assert!(bucket.ready(0));
            bucket.take(0);
        }
        assert!(!bucket.ready(0));
        assert_eq!(bucket.next_token_at(0), 200);
        assert!(bucket.ready(1_000));
        for _ in 0..5 {
            bucket.take(1_000);
        }
        assert!(
            !bucket.ready(1_000),
            "the bucket never holds more than its capacity"
        );
    }
}
