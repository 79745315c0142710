//! The figures of a benchmark run: a readable table, and JSON under fixed keys.

use std::path::Path;

use serde_json::{Map, Value};

/// Scenario name → figure name → value, in the order they were measured.
#[derive(Debug, Default)]
pub struct Report {
    scenarios: Vec<(String, Vec<(String, f64)>)>,
}

impl Report {
    /// Records `figures` for `scenario`.
    pub fn add(&mut self, scenario: &str, figures: Vec<(&str, f64)>) {
        self.scenarios.push((
            scenario.to_owned(),
            figures
                .into_iter()
                .map(|(name, value)| (name.to_owned(), value))
                .collect(),
        ));
    }

    /// Prints one line per scenario.
    pub fn print(&self) {
        for (scenario, figures) in &self.scenarios {
            let cells: Vec<String> = figures
                .iter()
                .map(|(name, value)| format!("{name} = {}", show(*value)))
                .collect();
            println!("{scenario:<16} {}", cells.join("  "));
        }
    }

    /// Writes `{scenario: {figure: value}}`.
    pub fn write_json(&self, path: &Path) -> anyhow::Result<()> {
        let mut root = Map::new();
        for (scenario, figures) in &self.scenarios {
            let object: Map<String, Value> = figures
                .iter()
                .map(|(name, value)| (name.clone(), Value::from(*value)))
                .collect();
            root.insert(scenario.clone(), Value::Object(object));
        }
        std::fs::write(
            path,
            serde_json::to_string_pretty(&Value::Object(root))? + "\n",
        )?;
        Ok(())
    }
}

fn show(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e12 {
        format!("{value:.0}")
    } else if value.abs() >= 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.3}")
    }
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len().is_multiple_of(2) {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}
