//! The daemon's side of the control socket: accept connections, read one request each, and
//! pass it to the engine, which owns the state every answer comes from.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

use super::{MAX_REQUEST, Request, Response};

/// A request waiting for the engine's answer.
#[derive(Debug)]
pub struct Incoming {
    /// What was asked.
    pub request: Request,
    /// Where the answer goes.
    pub reply: oneshot::Sender<Response>,
}

/// Binds the socket: refuses when another daemon answers on it, replaces a stale one, and
/// makes it `0660` so root and the socket's group may use it.
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "another pacerd is already listening on {}; stop it or set another `socket` in [daemon]",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Accepts connections until the listener fails; each request goes to `engine`.
pub async fn serve(listener: UnixListener, engine: mpsc::Sender<Incoming>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, engine.clone()));
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, engine: mpsc::Sender<Incoming>) {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let response = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => match serde_json::from_str::<Request>(&line) {
            Ok(request) => {
                let (reply, answer) = oneshot::channel();
                if engine.send(Incoming { request, reply }).await.is_err() {
                    return;
                }
                match answer.await {
                    Ok(response) => response,
                    Err(_) => return,
                }
            }
            Err(e) => Response::Error {
                message: format!("unreadable request: {e}"),
            },
        },
        Err(e) => Response::Error {
            message: format!("cannot read the request: {e}"),
        },
    };
    if let Ok(mut bytes) = serde_json::to_vec(&response) {
        bytes.push(b'\n');
        let _ = write.write_all(&bytes).await;
    }
}
