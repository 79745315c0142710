//! A look at a library's ELF header before the loader maps it: the loader's own messages for a
//! file built for another machine ("cannot open shared object file: No such file or
//! directory") or an object file send an operator the wrong way; the header says what is wrong.

use std::io::Read;
use std::path::Path;

/// `e_ident` class and data values, and `e_type` values, from the ELF specification.
const CLASS_32: u8 = 1;
const CLASS_64: u8 = 2;
const LITTLE_ENDIAN: u8 = 1;
const BIG_ENDIAN: u8 = 2;
const TYPE_RELOCATABLE: u16 = 1;
const TYPE_EXECUTABLE: u16 = 2;
const TYPE_SHARED: u16 = 3;

/// The `e_machine` of the architectures Pacer is built for, and their names.
const MACHINES: [(u16, &str); 7] = [
    (3, "x86 (32-bit)"),
    (40, "arm (32-bit)"),
    (62, "x86_64"),
    (183, "aarch64"),
    (243, "riscv"),
    (21, "powerpc64"),
    (22, "s390x"),
];

/// This build's `e_machine`, word size and byte order.
#[cfg(target_arch = "x86_64")]
const HOST_MACHINE: u16 = 62;
#[cfg(target_arch = "aarch64")]
const HOST_MACHINE: u16 = 183;
#[cfg(target_arch = "riscv64")]
const HOST_MACHINE: u16 = 243;
#[cfg(target_arch = "powerpc64")]
const HOST_MACHINE: u16 = 21;
#[cfg(target_arch = "s390x")]
const HOST_MACHINE: u16 = 22;
/// Elsewhere the loader alone judges the machine.
#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "aarch64",
    target_arch = "riscv64",
    target_arch = "powerpc64",
    target_arch = "s390x"
)))]
const HOST_MACHINE: u16 = 0;
const HOST_CLASS: u8 = if cfg!(target_pointer_width = "64") {
    CLASS_64
} else {
    CLASS_32
};
const HOST_DATA: u8 = if cfg!(target_endian = "little") {
    LITTLE_ENDIAN
} else {
    BIG_ENDIAN
};

/// Whether the file at `path` is a shared library this process could load; if not, why, in
/// words that name the fix.
pub fn check_header(path: &Path) -> Result<(), String> {
    let mut header = [0_u8; 20];
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut filled = 0;
    while filled < header.len() {
        match file.read(&mut header[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
        }
    }
    if filled < header.len() || header[..4] != *b"\x7fELF" {
        return Err(
            "not a shared library: the file has no ELF header (a text file, or an empty or \
             truncated copy?)"
                .to_owned(),
        );
    }
    let (class, data) = (header[4], header[5]);
    if ![CLASS_32, CLASS_64].contains(&class) || ![LITTLE_ENDIAN, BIG_ENDIAN].contains(&data) {
        return Err(format!(
            "not a shared library: its ELF header is invalid (class {class}, byte order {data}); \
             the file is damaged or was never a library"
        ));
    }
    if class != HOST_CLASS {
        let bits = |class| if class == CLASS_64 { "64" } else { "32" };
        return Err(format!(
            "built for {}-bit; this machine runs {}-bit: rebuild it for this machine",
            bits(class),
            bits(HOST_CLASS)
        ));
    }
    if data != HOST_DATA {
        return Err(
            "built for the other byte order than this machine's: rebuild it for this machine"
                .to_owned(),
        );
    }
    let half = |at: usize| {
        let bytes = [header[at], header[at + 1]];
        if data == LITTLE_ENDIAN {
            u16::from_le_bytes(bytes)
        } else {
            u16::from_be_bytes(bytes)
        }
    };
    match half(16) {
        TYPE_SHARED => {}
        TYPE_RELOCATABLE => {
            return Err(
                "an object file, not a shared library: link it with `-shared` (a Rust plugin: \
                 crate-type = [\"cdylib\"])"
                    .to_owned(),
            );
        }
        TYPE_EXECUTABLE => {
            return Err("an executable, not a shared library: build it with `-shared`".to_owned());
        }
        other => return Err(format!("not a shared library (ELF type {other})")),
    }
    let machine = half(18);
    if HOST_MACHINE != 0 && machine != HOST_MACHINE {
        return Err(format!(
            "built for {}; this machine is {}: rebuild it for this machine",
            machine_name(machine),
            machine_name(HOST_MACHINE)
        ));
    }
    Ok(())
}

fn machine_name(machine: u16) -> String {
    MACHINES
        .iter()
        .find(|(number, _)| *number == machine)
        .map_or_else(
            || format!("machine {machine}"),
            |(_, name)| (*name).to_owned(),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(class: u8, data: u8, kind: u16, machine: u16) -> Vec<u8> {
        let mut bytes = b"\x7fELF".to_vec();
        bytes.extend([class, data, 1]);
        bytes.resize(16, 0);
        bytes.extend(kind.to_ne_bytes());
        bytes.extend(machine.to_ne_bytes());
        bytes.resize(64, 0);
        bytes
    }

    fn check(bytes: &[u8]) -> Result<(), String> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("libx.so");
        std::fs::write(&path, bytes).unwrap();
        check_header(&path)
    }

    #[test]
    fn each_wrong_header_says_what_it_is() {
        assert_eq!(
            check(&header(HOST_CLASS, HOST_DATA, TYPE_SHARED, HOST_MACHINE)),
            Ok(())
        );
        assert!(check(b"hello\n").unwrap_err().contains("no ELF header"));
        assert!(check(b"").unwrap_err().contains("no ELF header"));
        assert!(
            check(&header(0, HOST_DATA, TYPE_SHARED, HOST_MACHINE))
                .unwrap_err()
                .contains("its ELF header is invalid (class 0")
        );
        let other = if HOST_MACHINE == 183 { 62 } else { 183 };
        let other_name = machine_name(other);
        assert!(
            check(&header(HOST_CLASS, HOST_DATA, TYPE_SHARED, other))
                .unwrap_err()
                .starts_with(&format!("built for {other_name}; this machine is ")),
        );
        let other_class = if HOST_CLASS == CLASS_64 {
            CLASS_32
        } else {
            CLASS_64
        };
        assert!(
            check(&header(other_class, HOST_DATA, TYPE_SHARED, HOST_MACHINE))
                .unwrap_err()
                .contains("-bit; this machine runs")
        );
        assert!(
            check(&header(
                HOST_CLASS,
                HOST_DATA,
                TYPE_RELOCATABLE,
                HOST_MACHINE
            ))
            .unwrap_err()
            .starts_with("an object file")
        );
        assert!(
            check(&header(
                HOST_CLASS,
                HOST_DATA,
                TYPE_EXECUTABLE,
                HOST_MACHINE
            ))
            .unwrap_err()
            .starts_with("an executable")
        );
    }
}
