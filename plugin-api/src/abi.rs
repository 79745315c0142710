//! The C ABI, version 1, exactly as `include/pacer_plugin.h` declares it.
//!
//! Plugin authors never touch this module: [`export_plugin!`](crate::export_plugin) builds the
//! descriptor. It is public because the host (`pacerd worker`) reads descriptors through the
//! same definitions, so the two sides cannot drift apart.

use std::ffi::c_char;

/// The ABI version this crate implements (`PACER_ABI_VERSION`).
pub const ABI_VERSION: u32 = 1;

/// The symbol a version-1 plugin exports, NUL-terminated for `dlsym`.
pub const ENTRY_SYMBOL: &[u8] = b"pacer_plugin_entry_v1\0";

/// `PACER_LOG_ERROR`.
pub const LOG_ERROR: i32 = 1;
/// `PACER_LOG_WARN`.
pub const LOG_WARN: i32 = 2;
/// `PACER_LOG_INFO`.
pub const LOG_INFO: i32 = 3;
/// `PACER_LOG_DEBUG`.
pub const LOG_DEBUG: i32 = 4;

/// `pacer_host`: one run, owned by the host. Plugins only pass the pointer back.
#[repr(C)]
#[derive(Debug)]
pub struct Host {
    _opaque: [u8; 0],
}

/// `pacer_host_api`: the callbacks the host offers to a running plugin.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostApi {
    /// The host's ABI version.
    pub abi_version: u32,
    /// Appends one line to the run's output.
    pub log: unsafe extern "C" fn(h: *mut Host, level: i32, msg: *const c_char, len: usize),
    /// Sets the run's result message; the last call wins.
    pub set_message: unsafe extern "C" fn(h: *mut Host, msg: *const c_char, len: usize),
    /// 1 once the run is asked to stop.
    pub is_cancelled: unsafe extern "C" fn(h: *mut Host) -> i32,
    /// Unix milliseconds when the run will be killed, or -1 when it has no deadline.
    pub deadline_ms: unsafe extern "C" fn(h: *mut Host) -> i64,
}

/// The signature of `validate` and `run`: 0 for success, anything else for failure.
pub type CallFn = unsafe extern "C" fn(
    api: *const HostApi,
    h: *mut Host,
    params: *const c_char,
    params_len: usize,
) -> i32;

/// `pacer_plugin_v1`: what a plugin declares about itself.
#[repr(C)]
#[derive(Debug)]
pub struct PluginV1 {
    /// Must equal [`ABI_VERSION`].
    pub abi_version: u32,
    /// Static, NUL-terminated, `[a-z0-9_-]+`.
    pub name: *const c_char,
    /// Static, NUL-terminated.
    pub version: *const c_char,
    /// Optional params check; `None` is the C header's `NULL`.
    pub validate: Option<CallFn>,
    /// Runs the job once.
    pub run: Option<CallFn>,
}

/// The signature of `pacer_plugin_entry_v1`.
pub type EntryFn = unsafe extern "C" fn() -> *const PluginV1;
