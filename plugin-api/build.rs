//! Links the unwinder statically (GCC's `libgcc_eh.a`) into every program and plugin built
//! with this crate, so that none of them loads `libgcc_s.so.1`.
//!
//! Every run starts a worker process that loads its plugin, and `libgcc_s`'s constructor asks
//! the CPU for its features with a series of `cpuid` instructions: on a virtual machine each
//! one traps to the hypervisor. On a 2-core KVM guest that was about 130 us of CPU per process
//! start (a C program made to load it, against the same program without). Panics unwind as
//! before, with the same unwinder, linked in rather than loaded.
//!
//! Where no static `libgcc_eh.a` is found (another C toolchain, another libc, a cross build),
//! nothing changes and `libgcc_s.so.1` is loaded as usual.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-env-changed=CC");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    let gnu_linux = var("CARGO_CFG_TARGET_OS") == "linux" && var("CARGO_CFG_TARGET_ENV") == "gnu";
    if !gnu_linux || var("TARGET") != var("HOST") {
        return;
    }
    match static_unwinder() {
        Some(dir) => {
            println!("cargo::rustc-link-search=native={}", dir.display());
            // Whole, and before the `-lgcc_s` that the standard library asks for: the linker
            // (with `--as-needed`, as rustc links) then finds nothing left for `libgcc_s`.
            println!("cargo::rustc-link-lib=static:+whole-archive,-bundle=gcc_eh");
        }
        None => println!(
            "cargo::warning=no static libgcc_eh.a from `cc -print-file-name`: plugins and pacerd \
             load libgcc_s.so.1 (each process start costs a little more CPU)"
        ),
    }
}

/// The directory of the C compiler's `libgcc_eh.a`, if it has one.
fn static_unwinder() -> Option<PathBuf> {
    let compiler = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let output = Command::new(compiler)
        .arg("-print-file-name=libgcc_eh.a")
        .output()
        .ok()?;
    let path = PathBuf::from(String::from_utf8(output.stdout).ok()?.trim());
    // Without the file, the compiler prints the bare name back.
    if !output.status.success() || !path.is_absolute() || !path.is_file() {
        return None;
    }
    path.parent().map(PathBuf::from)
}
