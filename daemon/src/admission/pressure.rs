//! Linux pressure stall information: new starts wait while the machine is already struggling.

use std::path::Path;

use crate::config::PressureLimits;

/// How long a reading is reused, and how soon a blocked queue looks again.
pub const RECHECK_MS: i64 = 1_000;

/// Reads `some avg10` from the PSI files and compares them with the configured limits.
#[derive(Debug, Clone)]
pub struct PressureGate {
    limits: PressureLimits,
    cached: Option<(i64, Option<String>)>,
    /// Which files were found unreadable, so each is logged once, not every second.
    unreadable: [bool; 3],
}

impl PressureGate {
    /// A gate for `limits`; with no thresholds set it never blocks and reads nothing.
    pub fn new(limits: PressureLimits) -> PressureGate {
        PressureGate {
            limits,
            cached: None,
            unreadable: [false; 3],
        }
    }

    /// Why new starts must wait now, if they must.
    pub fn blocked(&mut self, now_ms: i64) -> Option<String> {
        if self.limits.cpu.is_none() && self.limits.memory.is_none() && self.limits.io.is_none() {
            return None;
        }
        if let Some((read_at, verdict)) = &self.cached
            && now_ms - read_at < RECHECK_MS
        {
            return verdict.clone();
        }
        let verdict = self.read();
        self.cached = Some((now_ms, verdict.clone()));
        verdict
    }

    fn read(&mut self) -> Option<String> {
        for (index, (resource, limit, key)) in [
            ("cpu", self.limits.cpu, "max_cpu_pressure"),
            ("memory", self.limits.memory, "max_memory_pressure"),
            ("io", self.limits.io, "max_io_pressure"),
        ]
        .into_iter()
        .enumerate()
        {
            let Some(limit) = limit else { continue };
            let path = self.limits.dir.join(resource);
            match some_avg10(&path) {
                Ok(value) => {
                    self.unreadable[index] = false;
                    if value > limit {
                        return Some(format!(
                            "{resource} pressure is {value:.2}% (some avg10), above {key} = {limit}"
                        ));
                    }
                }
                // Unreadable pressure never holds runs back, but it must not go unnoticed.
                Err(e) if !self.unreadable[index] => {
                    self.unreadable[index] = true;
                    tracing::warn!(
                        path = %path.display(),
                        "cannot read {resource} pressure ({e}): {key} is not enforced until it \
                         can be; check pressure_dir (PSI needs Linux 4.20 built with CONFIG_PSI)"
                    );
                }
                Err(_) => {}
            }
        }
        None
    }
}

/// The `avg10` value of the `some` line of a PSI file.
fn some_avg10(path: &Path) -> Result<f64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.lines()
        .find(|line| line.starts_with("some "))
        .and_then(|line| {
            line.split_whitespace()
                .find_map(|field| field.strip_prefix("avg10="))
        })
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| "no `some avg10=` value".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(dir: &Path, cpu: Option<f64>, io: Option<f64>) -> PressureGate {
        PressureGate::new(PressureLimits {
            cpu,
            memory: None,
            io,
            dir: dir.to_owned(),
        })
    }

    #[test]
    fn blocks_above_a_threshold_and_rereads_after_a_second() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, avg10: f64| {
            std::fs::write(
                dir.path().join(name),
                format!(
                    "some avg10={avg10:.2} avg60=0.00 avg300=0.00 total=1\n\
                     full avg10=99.00 avg60=0.00 avg300=0.00 total=1\n"
                ),
            )
            .unwrap();
        };
        write("cpu", 85.5);
        write("io", 1.0);
        let mut gate = gate(dir.path(), Some(80.0), Some(50.0));
        assert_eq!(
            gate.blocked(0).as_deref(),
            Some("cpu pressure is 85.50% (some avg10), above max_cpu_pressure = 80")
        );
        write("cpu", 10.0);
        assert!(
            gate.blocked(999).is_some(),
            "a reading is reused for a second"
        );
        assert_eq!(gate.blocked(1_000), None);
    }

    #[test]
    fn no_thresholds_never_block_and_missing_files_do_not_block() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(gate(dir.path(), None, None).blocked(0), None);
        assert_eq!(gate(dir.path(), Some(1.0), None).blocked(0), None);
    }
}
