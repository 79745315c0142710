//! Async code inside a plugin.

use std::future::Future;

use crate::{Error, ResultExt};

/// Runs `future` to completion on a new current-thread tokio runtime and returns its result.
///
/// `pacerd` runs each call in its own process and thread, with no runtime, so a plugin written
/// with async code builds one per call. The runtime has the time driver, and the I/O driver too
/// when the plugin's dependencies enable tokio's `net` feature (as HTTP clients do). The
/// future's own error type is [`Error`], so that `?` works inside an `async` block.
///
/// ```
/// use std::time::Duration;
///
/// use pacer_plugin_api::{Context, Error, Plugin, block_on};
///
/// #[derive(Default)]
/// struct Tick;
///
/// impl Plugin for Tick {
///     const NAME: &'static str = "tick";
///     const VERSION: &'static str = "1.0.0";
///     type Params = serde::de::IgnoredAny;
///
///     fn run(&self, ctx: &Context, _params: Self::Params) -> Result<(), Error> {
///         let ticks = block_on(async {
///             let mut interval = tokio::time::interval(Duration::from_millis(5));
///             let mut ticks = 0;
///             while ticks < 3 && !ctx.is_cancelled() {
///                 interval.tick().await;
///                 ticks += 1;
///             }
///             Ok(ticks)
///         })?;
///         ctx.set_message(&format!("{ticks} ticks"));
///         Ok(())
///     }
/// }
///
/// let outcome = pacer_plugin_api::testing::TestHost::new().run::<Tick>();
/// assert_eq!(outcome.message.as_deref(), Some("3 ticks"));
/// ```
pub fn block_on<T>(future: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}
