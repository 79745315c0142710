//! The verbs that change the daemon's state: `run`, `cancel`, `pause`, `resume`, `reload`.
//! Each needs a running daemon, and root or membership in the control socket's group.

use std::path::Path;
use std::process::ExitCode;

use anyhow::{anyhow, bail};

use super::source::Source;
use super::{Context, print_json};
use crate::control::client::{ClientError, ask, converse};
use crate::control::{Request, Response, RunUpdate};
use crate::model::Status;

/// `pacer run J [--params JSON] [--wait]`.
pub fn run(
    context: &Context,
    job: &str,
    params: Option<serde_json::Value>,
    wait: bool,
) -> anyhow::Result<ExitCode> {
    let settings = context.settings()?;
    let request = Request::Run {
        job: job.to_owned(),
        params,
        wait,
    };
    // A run is answered once its record is committed: while the history cannot be written,
    // that waits, and the user hears why at once rather than after a silence.
    if let Ok(Response::Status(status)) = ask(&settings.socket, &Request::Status)
        && let Some(why) = status.history_error
    {
        eprintln!(
            "pacer: {why}: the run is recorded, and gets its id, only once it can be; until then \
             this waits"
        );
    }
    let mut outcome: Result<Option<Status>, String> = Err(
        "pacerd closed the connection before answering (it stopped or was killed): if the run \
         was recorded first, pacer history shows it (it runs at pacerd's next start); if not, \
         it was not accepted"
            .to_owned(),
    );
    let timeout = (!wait).then_some(std::time::Duration::from_secs(60));
    let talked = converse(&settings.socket, &request, timeout, |response| {
        match response {
            Response::Run(update) => {
                report(context, &update);
                outcome = match update {
                    RunUpdate::Started { .. } | RunUpdate::Queued { .. } => Ok(None),
                    RunUpdate::Skipped {
                        id: Some(id),
                        reason,
                    } => Err(format!("run {id} skipped: {reason}")),
                    RunUpdate::Skipped { id: None, reason } => Err(format!("skipped: {reason}")),
                    RunUpdate::Finished { status, .. } => Ok(Some(status)),
                };
            }
            Response::Error { message } => outcome = Err(message),
            other => outcome = Err(format!("unexpected answer from pacerd: {other:?}")),
        }
        outcome.is_ok()
    });
    if let Err(ClientError::NoAnswer { waited, .. }) = talked {
        bail!(
            "pacerd has not recorded the run within {} s (pacer status tells why: the history \
             may not be writable); it is not lost while pacerd runs: it gets its id and starts \
             once it is recorded, and pacer history shows it then. Do not run it again",
            waited.as_secs()
        );
    }
    not_running_is_an_error(talked)?;
    if wait && matches!(outcome, Ok(None)) {
        outcome =
            Err("pacerd closed the connection before the run ended (see pacer history)".to_owned());
    }
    match outcome {
        Ok(Some(Status::Succeeded)) | Ok(None) => Ok(ExitCode::SUCCESS),
        Ok(Some(_)) => Ok(ExitCode::FAILURE),
        Err(message) => {
            eprintln!("pacer: {message}");
            Ok(ExitCode::FAILURE)
        }
    }
}

fn report(context: &Context, update: &RunUpdate) {
    if context.json {
        if let Ok(text) = serde_json::to_string(update) {
            println!("{text}");
        }
        return;
    }
    match update {
        RunUpdate::Started { id, attempt: 1 } => println!("started run {id}"),
        RunUpdate::Started { id, attempt } => println!("started run {id} (attempt {attempt})"),
        RunUpdate::Queued { id, reason } => println!("queued run {id}: {reason}"),
        RunUpdate::Skipped { .. } => {}
        RunUpdate::Finished { id, status, error } => match error {
            Some(error) => println!("run {id} {status}: {error}"),
            None => println!("run {id} {status}"),
        },
    }
}

/// `pacer cancel`, `pause`, `resume`, `reload`: one request, one answer.
pub fn simple(context: &Context, request: &Request) -> anyhow::Result<ExitCode> {
    let settings = context.settings()?;
    let answer = ask_recorded(&settings.socket, request)?;
    tell(context, answer)
}

/// The answer to a verb that the daemon confirms once its record is written. When none comes
/// in time, the user learns whether the history is what it waits for (the request then takes
/// effect once it can be written) rather than just that pacerd was silent.
fn ask_recorded(socket: &Path, request: &Request) -> anyhow::Result<Response> {
    let waited = match ask(socket, request) {
        Err(ClientError::NoAnswer { waited, .. }) => waited.as_secs(),
        other => return not_running_is_an_error(other),
    };
    let what = match request {
        Request::Cancel { id } => format!("the cancel of run {id}"),
        Request::Pause { job } => format!("the pause of `{job}`"),
        Request::Resume { job } => format!("the resume of `{job}`"),
        Request::Reload => "the reload".to_owned(),
        _ => "the request".to_owned(),
    };
    let history_error = match ask(socket, &Request::Status) {
        Ok(Response::Status(status)) => status.history_error,
        _ => None,
    };
    Err(match history_error {
        Some(why) => anyhow!(
            "pacerd has not recorded {what} within {waited} s: {why}. It takes effect once the \
             history can be written (pacer status says when it can); do not repeat it"
        ),
        None => anyhow!(
            "pacerd did not answer {what} within {waited} s; it may still take effect (pacer \
             status and pacer history tell)"
        ),
    })
}

/// `pacer cancel ID`. The daemon knows the runs that go or wait; for an id it does not know,
/// the history tells a run that ended from one that never was.
pub fn cancel(context: &Context, id: i64) -> anyhow::Result<ExitCode> {
    let settings = context.settings()?;
    let answer = ask_recorded(&settings.socket, &Request::Cancel { id })?;
    if matches!(answer, Response::Error { .. }) && run_is_unknown(context, id) {
        return tell(
            context,
            Response::Error {
                message: format!("no run with id {id} (pacer history lists them)"),
            },
        );
    }
    tell(context, answer)
}

/// Whether the history holds no run `id` (not when it cannot be read: the daemon's word stands).
fn run_is_unknown(context: &Context, id: i64) -> bool {
    match Source::open(context) {
        Ok(Some(source)) => matches!(source.run(id), Ok(None)),
        Ok(None) => true,
        Err(_) => false,
    }
}

/// Prints the daemon's answer to a verb that changes its state.
fn tell(context: &Context, answer: Response) -> anyhow::Result<ExitCode> {
    match answer {
        Response::Done { message } => {
            if context.json {
                print_json(&serde_json::json!({ "ok": true, "message": message }))?;
            } else {
                println!("{message}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { message } => {
            if context.json {
                print_json(&serde_json::json!({ "ok": false, "message": message }))?;
            }
            eprintln!("pacer: {message}");
            Ok(ExitCode::FAILURE)
        }
        other => bail!("unexpected answer from pacerd: {other:?}"),
    }
}

/// Verbs that need the daemon say plainly that it is not running.
fn not_running_is_an_error<T>(result: Result<T, ClientError>) -> anyhow::Result<T> {
    result.map_err(|e| match e {
        ClientError::NotRunning(_) => anyhow!("pacerd is not running"),
        other => other.into(),
    })
}
