//! The fuzz targets' properties over their corpus (the seeds and every input that once broke
//! a parser, kept in `fuzz/`) and over seeded mutations of it: a few seconds in every test run,
//! where `cargo fuzz` explores for hours.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

/// Mutations tried per corpus input.
const MUTATIONS: usize = 150;

/// Longest one input may take before the test calls it a hang.
const HANG: Duration = Duration::from_secs(30);

/// Fragments that parsers treat specially, spliced into inputs.
const TOKENS: [&str; 24] = [
    "[[jobs]]",
    "[daemon]",
    "[pools.x]",
    "=",
    "\"",
    "'''",
    "\n",
    "{",
    "}",
    "[",
    "]",
    ",",
    "*/",
    "-",
    "L",
    "W",
    "#",
    "?",
    "@",
    "99999999999999999999",
    "0",
    "-1",
    "\u{e9}",
    "\\u0000",
];

/// The corpus of `target`: `fuzz/seeds/<target>` and `fuzz/regressions/<target>`.
fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut inputs = Vec::new();
    for kind in ["seeds", "regressions"] {
        let Ok(entries) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let bytes = std::fs::read(entry.path()).expect("a corpus file is readable");
            inputs.push((entry.path(), bytes));
        }
    }
    inputs.sort();
    assert!(
        !inputs.is_empty(),
        "no corpus for {target} under {}",
        fuzz.display()
    );
    inputs
}

/// A fixed pseudo-random sequence (xorshift), so a failing input reproduces.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % u64::try_from(n.max(1)).unwrap_or(1)).unwrap_or(0)
    }
}

/// `input` changed in one to four places: a byte flipped, inserted or dropped, a range cut or
/// repeated, a token spliced in.
fn mutate(input: &[u8], noise: &mut Noise) -> Vec<u8> {
    let mut out = input.to_vec();
    for _ in 0..=noise.below(4) {
        let at = noise.below(out.len() + 1);
        match noise.below(6) {
            0 if at < out.len() => out[at] ^= 1 << noise.below(8),
            1 => out.insert(at, u8::try_from(noise.below(256)).unwrap_or(0)),
            2 if at < out.len() => {
                out.remove(at);
            }
            3 => {
                let end = (at + noise.below(16)).min(out.len());
                out.drain(at..end);
            }
            4 => {
                let end = (at + noise.below(64)).min(out.len());
                let copy = out[at..end].to_vec();
                out.splice(at..at, copy);
            }
            _ => {
                let token = TOKENS[noise.below(TOKENS.len())].as_bytes();
                out.splice(at..at, token.iter().copied());
            }
        }
    }
    out
}

/// Runs `check` on every corpus input of `target` and on [`MUTATIONS`] mutations of each, in
/// a thread watched for hangs; a failure names the input.
fn run(target: &'static str, check: impl Fn(&[u8]) + Send + 'static) {
    let (progress, seen) = mpsc::channel::<Vec<u8>>();
    let worker = std::thread::spawn(move || {
        let mut noise = Noise(0x9e37_79b9_7f4a_7c15);
        for (_, input) in corpus(target) {
            let _ = progress.send(input.clone());
            check(&input);
            for _ in 0..MUTATIONS {
                let mutated = mutate(&input, &mut noise);
                let _ = progress.send(mutated.clone());
                check(&mutated);
            }
        }
    });
    let mut last = Vec::new();
    loop {
        match seen.recv_timeout(HANG) {
            Ok(input) => last = input,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                "{target}: no answer within {HANG:?} on {:?}",
                String::from_utf8_lossy(&last)
            ),
        }
    }
    if let Err(panic) = worker.join() {
        eprintln!(
            "{target}: the last input was {:?}",
            String::from_utf8_lossy(&last)
        );
        std::panic::resume_unwind(panic);
    }
}

#[test]
fn the_config_loader_gives_every_error_a_position() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    run("config", move |bytes| {
        super::config(&path, &String::from_utf8_lossy(bytes));
    });
}

#[test]
fn the_schedule_parser_takes_any_line() {
    run("schedule", |bytes| {
        super::schedule(&String::from_utf8_lossy(bytes));
    });
}

#[test]
fn the_control_protocol_takes_any_bytes() {
    run("request", |bytes| {
        for split in [1, 7, 4096] {
            super::request(bytes, split);
        }
    });
}
