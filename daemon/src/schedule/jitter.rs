//! A fixed per-job offset that spreads jobs sharing a schedule.

use std::time::Duration;

/// The offset in `[0, jitter)` for the job `name`.
///
/// It is a pure function of the name (64-bit FNV-1a, which unlike std's hasher is specified and
/// will never change), so every host and every restart computes the same offset and a job's
/// fires stay evenly spaced.
pub fn jitter_offset(name: &str, jitter: Duration) -> Duration {
    let span = u64::try_from(jitter.as_millis()).unwrap_or(u64::MAX);
    if span == 0 {
        return Duration::ZERO;
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Duration::from_millis(hash % span)
}
