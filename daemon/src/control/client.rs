//! The CLI's side of the control socket.

use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use nix::sys::socket::{MsgFlags, send};

use super::{MAX_REQUEST, Request, Response};

/// How long the CLI waits for an answer (except for `pacer run --wait`).
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("pacerd is not running (no answer on {0})")]
    NotRunning(String),
    /// The socket exists but may not be opened.
    #[error("cannot reach pacerd on {path}: {cause} (be root or in the socket's group)")]
    Denied {
        /// The socket.
        path: String,
        /// The refusal (in the message, not a separate source, so it is said once).
        cause: std::io::Error,
    },
    /// The request is longer than the daemon reads.
    #[error(
        "the request is {size} bytes, more than the {} KiB pacerd reads: pass large data by \
         reference (a file's path in --params) instead",
        MAX_REQUEST / 1024
    )]
    TooLarge {
        /// Its length, newline included.
        size: usize,
    },
    /// No answer came within the time the caller gave.
    #[error("pacerd did not answer within {} s on {path}", waited.as_secs())]
    NoAnswer {
        /// The socket.
        path: String,
        /// How long it was waited for.
        waited: Duration,
    },
    /// The exchange broke off.
    #[error("pacerd did not answer properly on {path}: {reason}")]
    Protocol {
        /// The socket.
        path: String,
        /// What went wrong.
        reason: String,
    },
}

/// Sends `request` and returns the daemon's one answer.
pub fn ask(socket: &Path, request: &Request) -> Result<Response, ClientError> {
    let mut answer = None;
    converse(socket, request, Some(TIMEOUT), |response| {
        answer = Some(response);
        false
    })?;
    answer.ok_or_else(|| ClientError::Protocol {
        path: socket.display().to_string(),
        reason: "the connection closed without an answer".to_owned(),
    })
}

/// Sends `request` and hands each answer to `each` until it returns false or the daemon has
/// said everything. `timeout` bounds the wait for each answer (`None`: wait as long as it takes).
pub fn converse(
    socket: &Path,
    request: &Request,
    timeout: Option<Duration>,
    mut each: impl FnMut(Response) -> bool,
) -> Result<(), ClientError> {
    let path = socket.display().to_string();
    let protocol = |reason: String| ClientError::Protocol {
        path: path.clone(),
        reason,
    };
    let mut line = serde_json::to_vec(request).map_err(|e| protocol(e.to_string()))?;
    line.push(b'\n');
    if line.len() > MAX_REQUEST {
        return Err(ClientError::TooLarge { size: line.len() });
    }
    let stream = connect(socket).map_err(|e| match e.kind() {
        std::io::ErrorKind::PermissionDenied => ClientError::Denied {
            path: path.clone(),
            cause: e,
        },
        std::io::ErrorKind::WouldBlock => protocol(format!(
            "it did not take the connection within {CONNECT_TIMEOUT:?}: it holds back new \
             connections while file descriptors are short (see its log)"
        )),
        _ => ClientError::NotRunning(path.clone()),
    })?;
    stream
        .set_read_timeout(timeout)
        .map_err(|e| protocol(e.to_string()))?;
    send_all(&stream, &line).map_err(|e| protocol(e.to_string()))?;
    for answer in BufReader::new(stream).lines() {
        let answer = answer.map_err(|e| match (e.kind(), timeout) {
            (std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut, Some(waited)) => {
                ClientError::NoAnswer {
                    path: path.clone(),
                    waited,
                }
            }
            _ => protocol(e.to_string()),
        })?;
        let response: Response = serde_json::from_str(&answer)
            .map_err(|e| protocol(format!("unreadable answer: {e}")))?;
        if !each(response) {
            break;
        }
    }
    Ok(())
}

/// How long connecting waits while the daemon does not accept: a Unix socket's connect
/// otherwise blocks for as long as the daemon's backlog is full.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to `socket`, giving up after [`CONNECT_TIMEOUT`] (`WouldBlock`). For a Unix
/// socket the kernel bounds the wait for room in the backlog by the send timeout.
fn connect(socket: &Path) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, setsockopt, sockopt};
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let timeout = nix::sys::time::TimeVal::new(
        i64::try_from(CONNECT_TIMEOUT.as_secs()).unwrap_or(i64::MAX),
        0,
    );
    setsockopt(&fd, sockopt::SendTimeout, &timeout)?;
    nix::sys::socket::connect(fd.as_raw_fd(), &UnixAddr::new(socket)?)?;
    // Writes get no timeout of their own: the daemon reads a request as soon as it accepts.
    setsockopt(
        &fd,
        sockopt::SendTimeout,
        &nix::sys::time::TimeVal::new(0, 0),
    )?;
    Ok(UnixStream::from(fd))
}

/// Writes `bytes` without raising SIGPIPE: `pacer` takes SIGPIPE's default action (so that
/// `pacer history | head` ends quietly), and a daemon that closes mid-request must give an
/// error message, not a silent death.
fn send_all(stream: &UnixStream, mut bytes: &[u8]) -> std::io::Result<()> {
    while !bytes.is_empty() {
        match send(stream.as_raw_fd(), bytes, MsgFlags::MSG_NOSIGNAL) {
            Ok(sent) => bytes = &bytes[sent..],
            Err(nix::errno::Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
