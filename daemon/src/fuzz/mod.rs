//! What the parsers must hold to on any input, checked by the fuzz targets in `fuzz/` and by a
//! bounded run over their corpus in the unit tests: no panic, no hang, and every error says
//! where the problem is. Each function panics when a property does not hold.

#[cfg(test)]
mod tests;

use std::path::Path;

use crate::config::{Environment, load};
use crate::control::server::{RequestLine, decode};
use crate::schedule::Schedule;

/// Loads `text` as the config file `pacer.toml` in `dir`; every error must carry its line and
/// column.
pub fn config(dir: &Path, text: &str) {
    let path = dir.join("pacer.toml");
    std::fs::write(&path, text).expect("the config is written");
    for env in [
        Environment {
            can_switch_users: true,
            can_run_as_root: false,
        },
        Environment {
            can_switch_users: false,
            can_run_as_root: false,
        },
    ] {
        let Err(errors) = load(&path, env) else {
            continue;
        };
        for error in &errors.0 {
            assert!(
                error.position.is_some(),
                "a config error without a line and column: {error}\n--- config ---\n{text}"
            );
        }
    }
}

/// Parses `text` as a schedule line; an error must quote the line, and a schedule must give
/// its next fires.
pub fn schedule(text: &str) {
    match Schedule::parse(text, &jiff::tz::TimeZone::UTC) {
        Ok(schedule) => {
            let mut after = jiff::Timestamp::UNIX_EPOCH;
            for _ in 0..3 {
                match schedule.next_after(after) {
                    Some(next) => {
                        assert!(next > after, "{text:?}: {next} does not follow {after}");
                        after = next;
                    }
                    None => break,
                }
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(
                message.starts_with("invalid schedule `"),
                "an error that does not name the schedule: {message}"
            );
        }
    }
}

/// Feeds `bytes` to a request line in pieces of `split` bytes and decodes what it collects;
/// an error must carry serde's line and column, or say the line is too long.
pub fn request(bytes: &[u8], split: usize) {
    let mut line = RequestLine::default();
    let mut collected = None;
    for piece in bytes.chunks(split.max(1)) {
        match line.push(piece) {
            Ok(Some(done)) => {
                collected = Some(done);
                break;
            }
            Ok(None) => {}
            Err(message) => {
                assert!(message.contains("longer than"), "{message}");
                return;
            }
        }
    }
    let Some(collected) = collected.or_else(|| line.finish()) else {
        return;
    };
    if let Err(message) = decode(&collected) {
        assert!(
            message.contains(" at line ") && message.contains(" column "),
            "a request error without a position: {message}"
        );
    }
}
