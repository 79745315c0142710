//! `pacer_plugin.h` and the Rust definitions the host uses describe the same memory layout.

use std::mem::{offset_of, size_of};
use std::process::Command;

use pacer_plugin_api::abi::{self, HostApi, PluginV1};
use pacer_tests::{CommandOutput, artifacts, require_tool};

const LAYOUT_PROGRAM: &str = r#"
#include <stddef.h>
#include <stdio.h>
#include "pacer_plugin.h"
int main(void) {
    printf("%zu %zu %zu %zu %zu %zu\n", sizeof(pacer_host_api), offsetof(pacer_host_api, log),
           offsetof(pacer_host_api, set_message), offsetof(pacer_host_api, is_cancelled),
           offsetof(pacer_host_api, deadline_ms), sizeof(pacer_plugin_v1));
    printf("%zu %zu %zu %zu\n", offsetof(pacer_plugin_v1, name), offsetof(pacer_plugin_v1, version),
           offsetof(pacer_plugin_v1, validate), offsetof(pacer_plugin_v1, run));
    printf("%d %d %d %d %d\n", PACER_ABI_VERSION, PACER_LOG_ERROR, PACER_LOG_WARN, PACER_LOG_INFO,
           PACER_LOG_DEBUG);
    return 0;
}
"#;

#[test]
fn the_header_and_the_rust_abi_agree() {
    if !require_tool("gcc") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("layout.c");
    std::fs::write(&source, LAYOUT_PROGRAM).unwrap();
    let binary = dir.path().join("layout");
    let mut compile = Command::new("gcc");
    compile
        .args(["-std=c99", "-Wall", "-Wextra", "-pedantic", "-Werror", "-o"])
        .arg(&binary)
        .arg(&source)
        .arg("-I")
        .arg(artifacts().workspace.join("plugin-api/include"));
    let compiled = CommandOutput::run(compile);
    assert_eq!(compiled.code, 0, "{compiled}");
    let run = CommandOutput::run(Command::new(&binary));
    let expected = format!(
        "{} {} {} {} {} {}\n{} {} {} {}\n{} {} {} {} {}\n",
        size_of::<HostApi>(),
        offset_of!(HostApi, log),
        offset_of!(HostApi, set_message),
        offset_of!(HostApi, is_cancelled),
        offset_of!(HostApi, deadline_ms),
        size_of::<PluginV1>(),
        offset_of!(PluginV1, name),
        offset_of!(PluginV1, version),
        offset_of!(PluginV1, validate),
        offset_of!(PluginV1, run),
        abi::ABI_VERSION,
        abi::LOG_ERROR,
        abi::LOG_WARN,
        abi::LOG_INFO,
        abi::LOG_DEBUG,
    );
    assert_eq!(run.stdout, expected);
}

#[test]
fn the_header_declares_the_entry_point_inside_guards() {
    let header = std::fs::read_to_string(
        artifacts()
            .workspace
            .join("plugin-api/include/pacer_plugin.h"),
    )
    .unwrap();
    for needle in [
        "#ifndef PACER_PLUGIN_H",
        "#define PACER_PLUGIN_H",
        "extern \"C\" {",
        "const pacer_plugin_v1 *pacer_plugin_entry_v1(void);",
        "#define PACER_ABI_VERSION 1",
    ] {
        assert!(header.contains(needle), "missing `{needle}`");
    }
}
