//! The C side of a plugin: its descriptor, the trampolines the host calls, and the host's
//! callbacks. Every `unsafe` block of this crate is in this module.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::abi::{self, HostApi, PluginV1};
use crate::call::{self, Stage};
use crate::context::Host;
use crate::{Context, Level, Plugin, log};

/// A plugin's descriptor, as `export_plugin!` places it in a `static`.
#[derive(Debug)]
#[repr(transparent)]
pub struct Descriptor(PluginV1);

// SAFETY: a `Descriptor` is never mutated, and its pointers lead to `'static` C strings and to
// functions, all of which any thread may read or call.
unsafe impl Sync for Descriptor {}

impl Descriptor {
    /// The descriptor of plugin `P`.
    ///
    /// # Panics
    ///
    /// Unless `name` and `version` end in their only NUL byte; `export_plugin!` evaluates this
    /// at compile time, where the panic is a compile error.
    pub const fn new<P: Plugin>(name: &'static [u8], version: &'static [u8]) -> Self {
        Self(PluginV1 {
            abi_version: abi::ABI_VERSION,
            name: c_str(name).as_ptr(),
            version: c_str(version).as_ptr(),
            validate: Some(validate::<P>),
            run: Some(run::<P>),
        })
    }

    /// What `pacer_plugin_entry_v1` returns.
    pub const fn as_ptr(&'static self) -> *const PluginV1 {
        &self.0
    }
}

const fn c_str(bytes: &[u8]) -> &CStr {
    match CStr::from_bytes_with_nul(bytes) {
        Ok(c) => c,
        Err(_) => panic!("a descriptor string must end in its only NUL byte"),
    }
}

/// `name` as a C string, checked against the ABI's `[a-z0-9_-]+`; `N` is its length plus one.
///
/// # Panics
///
/// If `name` is not a valid plugin name; at compile time within `export_plugin!`.
pub const fn plugin_name<const N: usize>(name: &str) -> [u8; N] {
    let bytes = name.as_bytes();
    assert!(!bytes.is_empty(), "Plugin::NAME must not be empty");
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        assert!(
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-',
            "Plugin::NAME may only contain a-z, 0-9, '_' and '-'"
        );
        i += 1;
    }
    nul_terminated(name)
}

/// `text` followed by a NUL byte; `N` is its length plus one.
///
/// # Panics
///
/// If `text` contains a NUL byte; at compile time within `export_plugin!`.
pub const fn nul_terminated<const N: usize>(text: &str) -> [u8; N] {
    let bytes = text.as_bytes();
    assert!(bytes.len() + 1 == N, "N must be the text's length plus one");
    let mut out = [0; N];
    let mut i = 0;
    while i < bytes.len() {
        assert!(
            bytes[i] != 0,
            "plugin name and version must not contain NUL"
        );
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// `validate` of the C ABI for plugin `P`.
///
/// # Safety
///
/// The host keeps the ABI's promises: `api` and `host` are valid for the whole call, and
/// `params` points to `params_len` readable bytes (or is null with a length of 0).
unsafe extern "C" fn validate<P: Plugin>(
    api: *const HostApi,
    host: *mut abi::Host,
    params: *const c_char,
    params_len: usize,
) -> i32 {
    // SAFETY: passed on from our caller, which makes the same promises.
    unsafe { trampoline::<P>(api, host, params, params_len, Stage::Validate) }
}

/// `run` of the C ABI for plugin `P`.
///
/// # Safety
///
/// As for [`validate`].
unsafe extern "C" fn run<P: Plugin>(
    api: *const HostApi,
    host: *mut abi::Host,
    params: *const c_char,
    params_len: usize,
) -> i32 {
    // SAFETY: passed on from our caller, which makes the same promises.
    unsafe { trampoline::<P>(api, host, params, params_len, Stage::Run) }
}

/// # Safety
///
/// As for [`validate`].
unsafe fn trampoline<P: Plugin>(
    api: *const HostApi,
    host: *mut abi::Host,
    params: *const c_char,
    params_len: usize,
    stage: Stage,
) -> i32 {
    // SAFETY: the host passes a valid `api` for the call, or null, which we refuse.
    let Some(api) = (unsafe { api.as_ref() }) else {
        return 1;
    };
    let params: &[u8] = if params.is_null() {
        &[]
    } else {
        // SAFETY: the host promises `params_len` readable bytes at `params`, unchanged during
        // the call, which is as long as this slice is used.
        unsafe { std::slice::from_raw_parts(params.cast(), params_len) }
    };
    let host: Arc<dyn Host> = Arc::new(FfiHost {
        api: *api,
        host,
        lock: Mutex::new(()),
    });
    let _attached = log::attach(Arc::clone(&host));
    let ctx = Context::new(host);
    if call::call::<P>(&ctx, params, stage) {
        0
    } else {
        1
    }
}

/// The host of one call through the C ABI.
///
/// Lives no longer than the call: the trampoline owns the [`Context`] (which plugins only
/// borrow) and the log route's reference, which [`log::Attached`] removes before returning.
struct FfiHost {
    api: HostApi,
    host: *mut abi::Host,
    /// The ABI does not say the callbacks are thread-safe, and a plugin may log from several
    /// threads, so calls into the host are made one at a time.
    lock: Mutex<()>,
}

// SAFETY: `host` is only passed back to the host's callbacks, and only under `lock`, so the
// host sees calls from one thread at a time, as if the plugin were single-threaded.
unsafe impl Send for FfiHost {}
// SAFETY: as for `Send`.
unsafe impl Sync for FfiHost {}

impl FfiHost {
    fn serialize(&self) -> MutexGuard<'_, ()> {
        self.lock.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Host for FfiHost {
    fn log(&self, level: Level, line: &str) {
        let _one_at_a_time = self.serialize();
        // SAFETY: `host` is valid during the call (see `FfiHost`); `line` is valid for
        // `line.len()` bytes while the host reads it.
        unsafe { (self.api.log)(self.host, level.to_abi(), line.as_ptr().cast(), line.len()) }
    }

    fn set_message(&self, message: &str) {
        let _one_at_a_time = self.serialize();
        // SAFETY: as in `log`.
        unsafe { (self.api.set_message)(self.host, message.as_ptr().cast(), message.len()) }
    }

    fn is_cancelled(&self) -> bool {
        let _one_at_a_time = self.serialize();
        // SAFETY: `host` is valid during the call (see `FfiHost`).
        unsafe { (self.api.is_cancelled)(self.host) != 0 }
    }

    fn deadline(&self) -> Option<SystemTime> {
        let ms = {
            let _one_at_a_time = self.serialize();
            // SAFETY: `host` is valid during the call (see `FfiHost`).
            unsafe { (self.api.deadline_ms)(self.host) }
        };
        let ms = u64::try_from(ms).ok()?;
        UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::MutexGuard;

    use serde::Deserialize;

    use super::*;
    use crate::Error;

    /// What the fake host's callbacks saw.
    #[derive(Debug, Default)]
    struct Seen {
        logs: Vec<(i32, String)>,
        message: Option<String>,
    }

    static SEEN: Mutex<Seen> = Mutex::new(Seen {
        logs: Vec::new(),
        message: None,
    });

    /// The fake host and the process-wide log route are shared, so these tests take turns.
    static TURN: Mutex<()> = Mutex::new(());

    /// # Safety
    ///
    /// `msg` points to `len` readable bytes.
    unsafe fn text(msg: *const c_char, len: usize) -> String {
        // SAFETY: promised by the caller.
        let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len) };
        String::from_utf8_lossy(bytes).into_owned()
    }

    unsafe extern "C" fn fake_log(_h: *mut abi::Host, level: i32, msg: *const c_char, len: usize) {
        // SAFETY: the SDK passes a message of `len` bytes.
        let line = unsafe { text(msg, len) };
        SEEN.lock().unwrap().logs.push((level, line));
    }

    unsafe extern "C" fn fake_set_message(_h: *mut abi::Host, msg: *const c_char, len: usize) {
        // SAFETY: the SDK passes a message of `len` bytes.
        let message = unsafe { text(msg, len) };
        SEEN.lock().unwrap().message = Some(message);
    }

    unsafe extern "C" fn fake_is_cancelled(_h: *mut abi::Host) -> i32 {
        0
    }

    unsafe extern "C" fn fake_deadline_ms(_h: *mut abi::Host) -> i64 {
        -1
    }

    const FAKE_API: HostApi = HostApi {
        abi_version: abi::ABI_VERSION,
        log: fake_log,
        set_message: fake_set_message,
        is_cancelled: fake_is_cancelled,
        deadline_ms: fake_deadline_ms,
    };

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Params {
        action: String,
    }

    #[derive(Default)]
    struct Probe;

    impl Plugin for Probe {
        const NAME: &'static str = "probe_1-x";
        const VERSION: &'static str = "2.3.4";
        type Params = Params;

        fn validate(&self, params: &Params) -> Result<(), Error> {
            if params.action == "invalid" {
                return Err(Error::msg("action `invalid` is invalid"));
            }
            Ok(())
        }

        fn run(&self, _ctx: &Context, params: Params) -> Result<(), Error> {
            match params.action.as_str() {
                "log" => {
                    tracing::warn!(count = 2, "first");
                    std::thread::scope(|s| {
                        s.spawn(|| tracing::trace!("from a thread\nsecond line"));
                    });
                    Ok(())
                }
                "panic" => panic!("boom {}", 42),
                "fail" => Err(Error::msg("it failed")),
                _ => Ok(()),
            }
        }
    }

    crate::export_plugin!(Probe);

    fn descriptor() -> &'static PluginV1 {
        // SAFETY: the entry point returns a pointer to a `static`.
        unsafe { &*pacer_plugin_entry_v1() }
    }

    /// Calls `entry` the way `pacerd worker` does and returns its result and what the host saw.
    fn call_through_abi(entry: abi::CallFn, params: &str) -> (i32, Seen, MutexGuard<'static, ()>) {
        let turn = TURN.lock().unwrap_or_else(PoisonError::into_inner);
        *SEEN.lock().unwrap() = Seen::default();
        let mut host_state = 0_u8;
        let host = (&raw mut host_state).cast::<abi::Host>();
        // SAFETY: `FAKE_API` and `host` outlive the call; `params` is valid for its length.
        let status = unsafe { entry(&FAKE_API, host, params.as_ptr().cast(), params.len()) };
        let seen = std::mem::take(&mut *SEEN.lock().unwrap());
        (status, seen, turn)
    }

    #[test]
    fn descriptor_declares_abi_name_and_version() {
        let d = descriptor();
        assert_eq!(d.abi_version, 1);
        // SAFETY: the descriptor's strings are static and NUL-terminated.
        let (name, version) = unsafe { (CStr::from_ptr(d.name), CStr::from_ptr(d.version)) };
        assert_eq!(name.to_str().unwrap(), "probe_1-x");
        assert_eq!(version.to_str().unwrap(), "2.3.4");
        assert!(d.validate.is_some() && d.run.is_some());
        assert_eq!(pacer_plugin_entry_v1(), pacer_plugin_entry_v1());
    }

    #[test]
    fn success_returns_zero_without_a_message() {
        let (status, seen, _turn) =
            call_through_abi(descriptor().run.unwrap(), r#"{"action":"ok"}"#);
        assert_eq!(status, 0);
        assert_eq!(seen.message, None);
    }

    #[test]
    fn error_becomes_failure_with_its_message() {
        let (status, seen, _turn) =
            call_through_abi(descriptor().run.unwrap(), r#"{"action":"fail"}"#);
        assert_eq!(status, 1);
        assert_eq!(seen.message.as_deref(), Some("it failed"));
    }

    #[test]
    fn panic_becomes_failure_with_the_panic_message() {
        let (status, seen, _turn) =
            call_through_abi(descriptor().run.unwrap(), r#"{"action":"panic"}"#);
        assert_eq!(status, 1);
        assert_eq!(seen.message.as_deref(), Some("panicked: boom 42"));
    }

    #[test]
    fn bad_params_fail_naming_the_serde_error() {
        let (status, seen, _turn) =
            call_through_abi(descriptor().validate.unwrap(), r#"{"acton":"ok"}"#);
        assert_eq!(status, 1);
        let message = seen.message.unwrap();
        assert!(
            message.starts_with("invalid params: unknown field `acton`, expected `action`"),
            "{message}"
        );
    }

    #[test]
    fn run_validates_first() {
        let (status, seen, _turn) =
            call_through_abi(descriptor().run.unwrap(), r#"{"action":"invalid"}"#);
        assert_eq!(status, 1);
        assert_eq!(seen.message.as_deref(), Some("action `invalid` is invalid"));
    }

    #[test]
    fn tracing_events_from_any_thread_reach_the_host_log() {
        let (status, seen, _turn) =
            call_through_abi(descriptor().run.unwrap(), r#"{"action":"log"}"#);
        assert_eq!(status, 0);
        assert_eq!(
            seen.logs,
            [
                (abi::LOG_WARN, "first count=2".to_owned()),
                (abi::LOG_DEBUG, "from a thread".to_owned()),
                (abi::LOG_DEBUG, "second line".to_owned()),
            ]
        );
    }

    #[test]
    fn events_after_the_call_are_dropped() {
        let (_, _, _turn) = call_through_abi(descriptor().run.unwrap(), r#"{"action":"log"}"#);
        tracing::error!("between calls");
        assert!(SEEN.lock().unwrap().logs.is_empty());
    }
}
