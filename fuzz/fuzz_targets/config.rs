//! The config loader on any text: every error names its line and column.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A directory of this process's own for the config file the loader reads.
fn dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("pacer-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("the scratch directory is created");
        dir
    })
}

fuzz_target!(|text: &str| {
    pacer::fuzz::config(dir(), text);
});
