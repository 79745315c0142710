//! One call into a plugin, the same whether the host is `pacerd` or a test.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};

use crate::{Context, Error, Plugin};

/// Which of the plugin's entry points the host called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Validate,
    Run,
}

/// Calls plugin `P` for `stage` and tells whether it succeeded; on failure the reason has been
/// sent to the host as the run's message.
///
/// Every step, from parsing params to dropping the plugin, runs under `catch_unwind`: through the
/// C ABI an escaping panic would abort the process and lose its message.
pub(crate) fn call<P: Plugin>(ctx: &Context, params: &[u8], stage: Stage) -> bool {
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| -> Result<(), Error> {
        let params: P::Params = serde_json::from_slice(params)
            .map_err(|e| Error::msg(format_args!("invalid params: {}", params_error(&e))))?;
        let plugin = P::default();
        plugin.validate(&params)?;
        match stage {
            Stage::Validate => Ok(()),
            Stage::Run => plugin.run(ctx, params),
        }
    }));
    let message = match outcome {
        Ok(Ok(())) => return true,
        Ok(Err(error)) => error.to_string(),
        Err(payload) => panic_message(payload.as_ref()),
    };
    ctx.set_message(&message);
    false
}

/// A params error as the operator can act on it: without serde's position, which points into
/// the JSON the host built from the config, not into anything the operator wrote, and without
/// `upstream` among the keys to choose from, since the host adds that one to chained runs.
fn params_error(error: &serde_json::Error) -> String {
    let text = error.to_string();
    let position = format!(" at line {} column {}", error.line(), error.column());
    text.strip_suffix(&position)
        .unwrap_or(&text)
        .replace(", `upstream`", "")
        .replace(" or `upstream`", "")
        .replace("`upstream`, ", "")
}

/// The run's message for a caught panic. `panic!` payloads are `&str` or `String`; other types
/// come only from `std::panic::panic_any`.
fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        format!("panicked: {text}")
    } else if let Some(text) = payload.downcast_ref::<String>() {
        format!("panicked: {text}")
    } else {
        "panicked (non-string payload)".to_owned()
    }
}
