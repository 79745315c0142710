//! Every `unsafe` operation of this crate: calling into a plugin library through the C ABI,
//! and the few system calls that std and nix do not wrap. Only worker processes load plugins;
//! the daemon itself calls nothing here but [`pidfd_open`], [`register_readable`],
//! [`return_free_memory`], [`allocator_starting`], [`allocator_running`] and
//! [`exit_on_bus_error`].
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use pacer_plugin_api::abi::{self, CallFn, EntryFn, Host, HostApi, PluginV1};

use crate::worker::protocol::MAX_LINE;

/// What the worker's host callbacks need; a `*mut Host` handed to the plugin points at one.
pub struct HostState {
    /// Sends a log line to the daemon.
    pub log: Box<dyn Fn(i32, String) + Send + Sync>,
    /// Sends the plugin's message to the daemon.
    pub message: Box<dyn Fn(String) + Send + Sync>,
    /// Set by the SIGTERM handler.
    pub cancelled: Arc<AtomicBool>,
    /// Unix ms when the run will be killed, or -1.
    pub deadline_ms: i64,
}

/// A loaded plugin library and its descriptor. The library stays mapped for the life of the
/// worker process: a worker does one task and exits, and unmapping the library first (a
/// `dlclose`) would only add work to every run; its destructors still run at the exit.
pub struct LoadedPlugin {
    descriptor: *const PluginV1,
    _library: std::mem::ManuallyDrop<libloading::os::unix::Library>,
}

/// What a library declares about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// `abi_version` as found.
    pub abi_version: u32,
    /// The name, when this ABI version is understood and the pointer is a UTF-8 C string.
    pub name: Option<String>,
    /// The version, likewise.
    pub version: Option<String>,
    /// Whether `run` is set.
    pub has_run: bool,
}

impl LoadedPlugin {
    /// Maps the library with every symbol resolved now (so a half-written or incompatible file
    /// fails here, not in the middle of a run) and calls its entry point.
    pub fn load(path: &Path) -> Result<LoadedPlugin, String> {
        crate::plugins::elf::check_header(path)
            .map_err(|reason| format!("cannot load the library: {reason}"))?;
        let flags = libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL;
        // SAFETY: loading runs the library's initializers. That is arbitrary code, which is
        // exactly why this happens only in a worker process whose crash costs one run.
        let library = unsafe { libloading::os::unix::Library::open(Some(path), flags) }
            .map_err(|e| format!("cannot load the library: {}", dl_error(&e)))?;
        // SAFETY: the symbol's type is the one ABI version 1 defines.
        let entry: EntryFn =
            *unsafe { library.get::<EntryFn>(abi::ENTRY_SYMBOL) }.map_err(|_| {
                "no entry symbol `pacer_plugin_entry_v1`: this is not a Pacer plugin, or one built \
             for another ABI version"
                    .to_owned()
            })?;
        // SAFETY: the entry point takes nothing and returns a pointer to a static descriptor.
        let descriptor = unsafe { entry() };
        if descriptor.is_null() {
            return Err("the entry point returned no descriptor (NULL)".to_owned());
        }
        Ok(LoadedPlugin {
            descriptor,
            _library: std::mem::ManuallyDrop::new(library),
        })
    }

    /// Reads the descriptor; fields past `abi_version` are read only for version 1.
    pub fn declared(&self) -> Declared {
        // SAFETY: `descriptor` is non-null and, per the ABI, points at a static struct whose
        // first field is `abi_version` in every version.
        let abi_version = unsafe { (*self.descriptor).abi_version };
        if abi_version != abi::ABI_VERSION {
            return Declared {
                abi_version,
                name: None,
                version: None,
                has_run: false,
            };
        }
        // SAFETY: version 1's layout is `PluginV1`.
        let descriptor = unsafe { &*self.descriptor };
        Declared {
            abi_version,
            // SAFETY: the ABI makes both static NUL-terminated strings (or NULL, handled).
            name: unsafe { c_string(descriptor.name) },
            // SAFETY: as above.
            version: unsafe { c_string(descriptor.version) },
            has_run: descriptor.run.is_some(),
        }
    }

    /// Calls `validate` (success when the plugin has none).
    pub fn validate(&self, host: &HostState, params: &str) -> i32 {
        // SAFETY: `declared()` checked the ABI version before any task calls this.
        match unsafe { (*self.descriptor).validate } {
            Some(validate) => call(validate, host, params),
            None => 0,
        }
    }

    /// Calls `run`.
    pub fn run(&self, host: &HostState, params: &str) -> i32 {
        // SAFETY: `declared()` checked the ABI version and that `run` is set.
        match unsafe { (*self.descriptor).run } {
            Some(run) => call(run, host, params),
            None => 1,
        }
    }
}

fn call(function: CallFn, host: &HostState, params: &str) -> i32 {
    // The ABI promises a NUL after the params.
    let mut text = Vec::with_capacity(params.len() + 1);
    text.extend_from_slice(params.as_bytes());
    text.push(0);
    let api = HostApi {
        abi_version: abi::ABI_VERSION,
        log: host_log,
        set_message: host_set_message,
        is_cancelled: host_is_cancelled,
        deadline_ms: host_deadline_ms,
    };
    let host_ptr = std::ptr::from_ref(host).cast_mut().cast::<Host>();
    // SAFETY: the pointers are valid for the call: `api` and `text` live on this frame and
    // `host` outlives it; the plugin may only use them until it returns.
    unsafe { function(&api, host_ptr, text.as_ptr().cast(), params.len()) }
}

/// The text of `len` bytes at `msg`, replacing invalid UTF-8 and capped at [`MAX_LINE`].
///
/// # Safety
/// `msg` must point at `len` readable bytes (or be NULL).
unsafe fn text_of(msg: *const c_char, len: usize) -> String {
    if msg.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise.
    let bytes = unsafe { std::slice::from_raw_parts(msg.cast::<u8>(), len.min(MAX_LINE)) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// # Safety
/// `ptr` must be NULL or a NUL-terminated string.
unsafe fn c_string(ptr: *const c_char) -> Option<String> {
    if ptr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .ok()
        .map(str::to_owned)
}

/// # Safety
/// `h` must be the `HostState` pointer `call` handed to the plugin, during that call.
unsafe fn host<'a>(h: *mut Host) -> &'a HostState {
    // SAFETY: the caller's promise.
    unsafe { &*h.cast::<HostState>() }
}

unsafe extern "C" fn host_log(h: *mut Host, level: i32, msg: *const c_char, len: usize) {
    // SAFETY: the plugin passes back the host pointer and a buffer of `len` bytes.
    let (host, text) = unsafe { (host(h), text_of(msg, len)) };
    for line in text.lines() {
        (host.log)(level, line.to_owned());
    }
}

unsafe extern "C" fn host_set_message(h: *mut Host, msg: *const c_char, len: usize) {
    // SAFETY: as in `host_log`.
    let (host, text) = unsafe { (host(h), text_of(msg, len)) };
    (host.message)(text);
}

unsafe extern "C" fn host_is_cancelled(h: *mut Host) -> i32 {
    // SAFETY: the plugin passes back the host pointer.
    i32::from(unsafe { host(h) }.cancelled.load(Ordering::Relaxed))
}

unsafe extern "C" fn host_deadline_ms(h: *mut Host) -> i64 {
    // SAFETY: the plugin passes back the host pointer.
    unsafe { host(h) }.deadline_ms
}

/// The loader's own words: libloading's message is only "dlopen failed", and dlerror's text,
/// which names the file and the reason ("file too short", "wrong ELF class"), is its source.
fn dl_error(error: &libloading::Error) -> String {
    std::error::Error::source(error).map_or_else(|| error.to_string(), ToString::to_string)
}

/// The supplementary groups of the process at the other end of a Unix socket, as the kernel
/// recorded them when it connected (`SO_PEERGROUPS`, Linux 4.13). Unlike `/proc/PID/status`,
/// this needs no view of the peer's process, which systemd's `ProtectProc=invisible` hides.
pub fn peer_groups(socket: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let size = size_of::<libc::gid_t>();
    let mut groups: Vec<libc::gid_t> = vec![0; 32];
    loop {
        let mut len = libc::socklen_t::try_from(groups.len() * size)
            .map_err(|_| io::Error::other("too many groups"))?;
        // SAFETY: `groups` is valid for `len` bytes, and the kernel writes at most `len` bytes
        // and stores in `len` how many it wrote (or, with ERANGE, how many it needs).
        let rc = unsafe {
            libc::getsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &raw mut len,
            )
        };
        let written = usize::try_from(len).unwrap_or(0) / size;
        if rc == 0 {
            groups.truncate(written);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::ERANGE) && written > groups.len() {
            groups.resize(written, 0);
            continue;
        }
        return Err(error);
    }
}

/// Gives `signals` the kernel's default action again.
///
/// Rust's runtime handles SIGSEGV and SIGBUS to report stack overflows, and ignores SIGPIPE; in
/// a worker that would swallow a plugin's own `raise(SIGSEGV)`, and in the CLI it turns a
/// closed pipe (`pacer history | head`) into a panic instead of a quiet end.
pub fn restore_default_actions(signals: &[nix::sys::signal::Signal]) {
    use nix::sys::signal::{SigHandler, signal};
    for &which in signals {
        // SAFETY: the default action installs no code of ours to run in a signal context.
        let _ = unsafe { signal(which, SigHandler::SigDfl) };
    }
}

/// Exit status after a fault on a memory-mapped file: `EX_IOERR` of sysexits.h.
pub const BUS_ERROR_EXIT: i32 = 74;

/// What the SIGBUS handler writes; set once, before the handler is installed, never freed.
static BUS_ERROR_REPORT: OnceLock<Box<[u8]>> = OnceLock::new();

/// Makes SIGBUS end the process with `report` on stderr and status [`BUS_ERROR_EXIT`], instead
/// of a silent death by signal.
///
/// SIGBUS is how the kernel reports a failed access to a memory-mapped file, such as SQLite's
/// shared-memory file after it was made immutable or its file system failed. The faulting
/// access cannot be resumed or turned into an error value, so the handler only says what
/// happened and exits; the next start finds the cause as an error at open.
pub fn exit_on_bus_error(report: &str) -> io::Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let _ = BUS_ERROR_REPORT.set(format!("{report}\n").into_bytes().into_boxed_slice());
    let action = SigAction::new(
        SigHandler::Handler(report_bus_error),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler calls only async-signal-safe functions (write, _exit) on memory that
    // is set before it is installed and never changed or freed afterwards.
    unsafe { sigaction(Signal::SIGBUS, &action) }?;
    Ok(())
}

extern "C" fn report_bus_error(_: libc::c_int) {
    if let Some(report) = BUS_ERROR_REPORT.get() {
        // SAFETY: write(2) is async-signal-safe, and the report lives for the whole process.
        unsafe { libc::write(2, report.as_ptr().cast(), report.len()) };
    }
    // SAFETY: _exit(2) is async-signal-safe and ends the process without running anything of
    // ours (the faulting thread may hold any lock).
    unsafe { libc::_exit(BUS_ERROR_EXIT) };
}

/// Sets an environment variable of the worker process.
///
/// Only called by a worker before it loads the plugin, while it has a single thread, which is
/// what makes changing the environment sound.
pub fn set_env(key: &str, value: &str) {
    // SAFETY: single-threaded at this point (see above), so no other thread reads the
    // environment concurrently.
    unsafe { std::env::set_var(key, value) };
}

/// Removes an environment variable of the worker process.
///
/// Only called by a worker before it loads the plugin, while it has a single thread, which is
/// what makes changing the environment sound.
pub fn remove_env(key: &std::ffi::OsStr) {
    // SAFETY: single-threaded at this point (see above), so no other thread reads the
    // environment concurrently.
    unsafe { std::env::remove_var(key) };
}

/// Closes every descriptor above stderr except `keep`, so a plugin and what it starts inherit
/// nothing of the daemon's or of whoever started the daemon.
///
/// Called first thing in a worker, before anything in the process opened a descriptor of its
/// own other than `keep`.
pub fn close_descriptors_except(keep: RawFd) {
    // `close_range` needs no `/proc` lookup, which would also make reaping the worker slower
    // for the daemon (the kernel then has `/proc/PID` entries to invalidate).
    let keep = u32::try_from(keep).unwrap_or(0);
    let ranges = [(3, keep.saturating_sub(1)), (keep.max(2) + 1, u32::MAX)];
    // SAFETY: nothing in this freshly started worker owns these descriptors: they were
    // inherited across exec, and the only one it opened (`keep`) is spared. close_range takes
    // no pointers.
    let closed = ranges
        .iter()
        .filter(|(first, last)| first <= last)
        .all(|(first, last)| unsafe { libc::close_range(*first, *last, 0) } == 0);
    if !closed {
        close_listed_descriptors(RawFd::try_from(keep).unwrap_or(-1));
    }
}

/// The same by listing `/proc/self/fd`, for kernels before 5.9.
fn close_listed_descriptors(keep: RawFd) {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    // Collected first: the directory being listed is itself one of the descriptors.
    let fds: Vec<RawFd> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2 && *fd != keep)
        .collect();
    for fd in fds {
        // SAFETY: nothing in this freshly started worker owns these descriptors: they were
        // inherited across exec, and the only one it opened (`keep`) is spared. Closing the
        // listing's own, already closed descriptor fails harmlessly with EBADF.
        unsafe { libc::close(fd) };
    }
}

/// Flushes C stdio buffers: a C plugin's `printf` output would otherwise be lost if the
/// process ends without `exit`.
pub fn flush_c_stdio() {
    // SAFETY: fflush(NULL) flushes every open output stream; it takes no pointers of ours.
    unsafe { libc::fflush(std::ptr::null_mut()) };
}

/// A descriptor, registered with tokio, that becomes readable when process `pid` exits
/// (without reaping it).
pub fn exit_watch(pid: i32) -> io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    register_readable(pidfd_open(pid)?)
}

/// Registers the descriptor `owner` owns with tokio, to wait until it is readable.
pub fn register_readable<T: AsFd + AsRawFd>(owner: T) -> io::Result<tokio::io::unix::AsyncFd<T>> {
    // SAFETY: `owner` owns its descriptor (`AsFd`) and moves into the `AsyncFd`, so the
    // descriptor stays open and refers to the same object for the whole life of the `AsyncFd`.
    unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(owner, tokio::io::Interest::READABLE)
    }
    .map_err(io::Error::from)
}

fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| io::Error::other("pidfd out of range"))?;
    // SAFETY: the kernel just returned this descriptor to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// While the daemon starts, blocks of at least this size are mapped on their own, and unmapped
/// when freed.
const STARTING_MMAP_THRESHOLD: libc::c_int = 256 << 10;

/// Once it runs: about where glibc's own adjustment settled before (the largest block freed
/// at start), so that large transient buffers (a page of the web view read from PostgreSQL)
/// are reused from the heap rather than mapped and faulted in at every request.
const RUNNING_MMAP_THRESHOLD: libc::c_int = 16 << 20;

/// Free memory at the top of the heap beyond this is given back when a block is freed (glibc
/// pairs it with the mmap threshold, twice as large).
const RUNNING_TRIM_THRESHOLD: libc::c_int = 32 << 20;

/// Sets the allocator's thresholds for the daemon's start, until [`allocator_running`].
///
/// By default glibc raises its mmap threshold to the size of the largest mapped block freed so
/// far. Parsing a config of 10,000 jobs frees blocks of 9 and 13 MB (the TOML parser's token
/// buffers), so every later block under 13 MB, the engine's and the scheduler's tables for
/// those jobs among them, came from the heap, laid out among the parser's freed memory, which
/// the heap then could not give back: 3 MB more at idle (`pacer-bench --only idle`).
pub fn allocator_starting() {
    // SAFETY: mallopt only sets the allocator's parameters; it takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, STARTING_MMAP_THRESHOLD);
    }
}

/// Sets the allocator's thresholds for the daemon once it has started (see
/// [`allocator_starting`]).
pub fn allocator_running() {
    // SAFETY: as above.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, RUNNING_MMAP_THRESHOLD);
        libc::mallopt(libc::M_TRIM_THRESHOLD, RUNNING_TRIM_THRESHOLD);
    }
}

/// Hands the heap's free pages back to the system.
///
/// Loading a config of 10,000 jobs parses about 45 MB of temporaries, and the jobs built
/// meanwhile end up scattered between them, so the allocator cannot shrink its heap by itself
/// and the daemon would idle at twice the memory it uses. Called after each config load.
pub fn return_free_memory() {
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers.
    unsafe { libc::malloc_trim(0) };
}
