//! The control socket's answers while the daemon starts: it listens as soon as the history is
//! taken, so that a start that waits for the history (a full disk, a lock) says so rather than
//! look like no pacerd at all.

use std::convert::Infallible;

use tokio::sync::mpsc;

use crate::control::Response;
use crate::control::server::Incoming;

/// Answers every request with what pacerd does before it can take it (`what`), until the caller stops polling
/// this (the start is done and the engine takes the requests that come next).
pub async fn answer_while_opening(
    requests: &mut mpsc::Receiver<Incoming>,
    what: &str,
) -> Infallible {
    let message = format!("pacerd is starting: it is {what}. Try again once it is ready");
    while let Some(incoming) = requests.recv().await {
        let _ = incoming.reply.send(Response::Error {
            message: message.clone(),
        });
    }
    std::future::pending().await
}
