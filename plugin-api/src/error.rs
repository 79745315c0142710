//! The error a plugin returns: a message for the run record.

use std::fmt;

/// Why `validate` or `run` failed; its text becomes the run's message.
///
/// Like `anyhow::Error`, this is a message rather than a type to match on: the host only shows
/// it. Any [`std::error::Error`] converts into it with `?`, and the conversion writes out the
/// whole chain of sources, `outer: inner: innermost`, because the message is all that survives
/// the process boundary. For the same reason `Error` does not implement `std::error::Error`
/// itself (which also makes that blanket conversion possible).
///
/// ```
/// use pacer_plugin_api::{Error, ResultExt};
///
/// fn read_limit(text: &str) -> Result<u32, Error> {
///     text.trim().parse::<u32>().context("reading `limit`")
/// }
///
/// let err = read_limit("ten").unwrap_err();
/// assert_eq!(err.to_string(), "reading `limit`: invalid digit found in string");
/// assert_eq!(Error::msg("no such job").to_string(), "no such job");
/// ```
pub struct Error {
    message: String,
}

impl Error {
    /// An error with this message.
    pub fn msg(message: impl fmt::Display) -> Self {
        Self {
            message: message.to_string(),
        }
    }

    fn context(self, context: impl fmt::Display) -> Self {
        Self::msg(format_args!("{context}: {}", self.message))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// The message alone, so that a test's `unwrap()` on a plugin result prints it readably.
impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

// No `Send + Sync + 'static` bounds: the error is formatted at once and not kept, so borrowed
// errors such as a `PoisonError<MutexGuard<_>>` convert too.
impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        let mut message = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self { message }
    }
}

/// Says what was being done when something failed, for `Result` and `Option` alike.
///
/// ```
/// use pacer_plugin_api::{Error, ResultExt};
///
/// fn first_word(text: &str) -> Result<&str, Error> {
///     text.split_whitespace().next().context("the text is blank")
/// }
///
/// assert_eq!(first_word("  ").unwrap_err().to_string(), "the text is blank");
/// let err = std::fs::read("/nonexistent")
///     .with_context(|| format!("reading {}", "/nonexistent"))
///     .unwrap_err();
/// assert!(err.to_string().starts_with("reading /nonexistent: No such file"));
/// ```
pub trait ResultExt<T> {
    /// On failure, an [`Error`] reading `context: cause` (or just `context` for `None`).
    fn context(self, context: impl fmt::Display) -> Result<T, Error>;

    /// Like [`context`](ResultExt::context), but builds the text only when there is a failure.
    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T, Error>;
}

impl<T, E: Into<Error>> ResultExt<T> for Result<T, E> {
    fn context(self, context: impl fmt::Display) -> Result<T, Error> {
        self.map_err(|e| e.into().context(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T, Error> {
        self.map_err(|e| e.into().context(context()))
    }
}

impl<T> ResultExt<T> for Option<T> {
    fn context(self, context: impl fmt::Display) -> Result<T, Error> {
        self.ok_or_else(|| Error::msg(context))
    }

    fn with_context<C: fmt::Display>(self, context: impl FnOnce() -> C) -> Result<T, Error> {
        self.ok_or_else(|| Error::msg(context()))
    }
}

/// Returns early with an [`Error`] built from a format string.
///
/// ```
/// use pacer_plugin_api::{Error, bail};
///
/// fn check_port(port: u32) -> Result<(), Error> {
///     if port > 65535 {
///         bail!("port {port} is out of range");
///     }
///     Ok(())
/// }
///
/// assert_eq!(check_port(70000).unwrap_err().to_string(), "port 70000 is out of range");
/// ```
#[macro_export]
macro_rules! bail {
    ($($arg:tt)+) => {
        return ::core::result::Result::Err($crate::Error::msg(::core::format_args!($($arg)+)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Outer(std::io::Error);

    impl fmt::Display for Outer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("loading config")
        }
    }

    impl std::error::Error for Outer {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn conversion_writes_the_source_chain() {
        let err = Error::from(Outer(std::io::Error::other("disk on fire")));
        assert_eq!(err.to_string(), "loading config: disk on fire");
    }

    #[test]
    fn contexts_nest_outermost_first() {
        let result: Result<(), Error> = Err(Error::msg("timed out"));
        let err = result
            .context("connecting")
            .context("sending the report")
            .unwrap_err();
        assert_eq!(err.to_string(), "sending the report: connecting: timed out");
    }
}
