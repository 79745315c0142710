//! The daemon's side of the control socket: accept connections, read one request each, and
//! pass it to the engine, which owns the state every answer comes from.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedReadHalf;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;

use super::{MAX_REQUEST, Request, Response};

/// A request waiting for the engine's answers.
#[derive(Debug)]
pub struct Incoming {
    /// What was asked.
    pub request: Request,
    /// Where the answers go; the connection closes when every sender is dropped.
    pub reply: mpsc::UnboundedSender<Response>,
}

/// Who may change the daemon's state: root, the daemon's own user, and members of the control
/// socket's group. Anyone who can open the socket may read.
#[derive(Debug, Clone, Copy)]
pub struct Access {
    socket_gid: u32,
    daemon_uid: u32,
}

impl Access {
    fn allows(self, peer: &Peer) -> bool {
        peer.uid == 0
            || peer.uid == self.daemon_uid
            || peer.gid == self.socket_gid
            || peer.groups.contains(&self.socket_gid)
    }

    fn refusal(self, verb: &str, uid: u32) -> String {
        let group = nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(self.socket_gid))
            .ok()
            .flatten()
            .map_or_else(
                || format!("gid {}", self.socket_gid),
                |g| format!("`{}`", g.name),
            );
        format!(
            "`pacer {verb}` needs root or membership in the control socket's group {group}; uid {uid} is neither"
        )
    }
}

/// Who is at the other end of a connection, as the kernel recorded it when it connected.
#[derive(Debug)]
struct Peer {
    uid: u32,
    gid: u32,
    /// Its supplementary groups, which the credentials (`SO_PEERCRED`) do not carry.
    groups: Vec<u32>,
}

impl Peer {
    fn of(stream: &UnixStream) -> Option<Peer> {
        use std::os::fd::AsFd;
        let credentials = stream.peer_cred().ok()?;
        let groups = crate::sys::peer_groups(stream.as_fd()).unwrap_or_else(|e| {
            tracing::warn!(
                "cannot read the supplementary groups of a pacer command (SO_PEERGROUPS needs \
                 Linux 4.13): members of the socket's group count only by their primary group: {e}"
            );
            Vec::new()
        });
        Some(Peer {
            uid: credentials.uid(),
            gid: credentials.gid(),
            groups,
        })
    }
}

/// Binds the socket: refuses when another daemon answers on it, replaces a stale one, and
/// makes it `0660` so root and the socket's group may use it.
pub fn bind(path: &Path) -> io::Result<(UnixListener, Access)> {
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
    let access = Access {
        socket_gid: std::fs::metadata(path)?.gid(),
        daemon_uid: nix::unistd::geteuid().as_raw(),
    };
    Ok((listener, access))
}

/// What one client may take of the daemon. A client is `pacer` or an application on the
/// control socket: it connects, sends one request line, and reads the answers.
#[derive(Debug, Clone, Copy)]
pub struct ClientLimits {
    /// Connections served at once; more are refused at once with a one-line error.
    pub max_clients: usize,
    /// The longest silence while the request line arrives.
    pub idle: Duration,
    /// The longest a request line may take to arrive, however it trickles in.
    pub request_deadline: Duration,
    /// The longest one answer may take to be taken by the client.
    pub write_deadline: Duration,
    /// Descriptors that must stay free before another connection is accepted, so that
    /// starting a run never fails for want of one.
    pub descriptor_reserve: u64,
}

impl ClientLimits {
    /// The daemon's limits, keeping descriptors for `max_concurrency` runs in flight.
    pub fn reserving_for_runs(max_concurrency: u32) -> ClientLimits {
        ClientLimits {
            max_clients: MAX_CLIENTS,
            idle: Duration::from_secs(3),
            request_deadline: Duration::from_secs(10),
            write_deadline: Duration::from_secs(10),
            descriptor_reserve: crate::descriptors::reserve_for_runs(max_concurrency),
        }
    }
}

/// Clients served at once: far more than operators and scripts need, few enough that their
/// buffers stay small (each at most [`MAX_REQUEST`] while its request arrives).
const MAX_CLIENTS: usize = 64;

/// While descriptors are short, how often the accept loop looks again (runs ending free them
/// without telling it).
const SHORT_OF_DESCRIPTORS_RETRY: Duration = Duration::from_millis(200);

/// Accepts connections until the listener fails; each request goes to `engine`.
pub async fn serve(
    listener: UnixListener,
    engine: mpsc::Sender<Incoming>,
    access: Access,
    limits: ClientLimits,
) {
    let slots = Arc::new(Semaphore::new(limits.max_clients));
    let mut room = Room::new(&limits);
    let mut short = false;
    loop {
        // Checked before accepting: once accepted, a connection holds its descriptor.
        if !room.for_a_client() {
            if !short {
                tracing::warn!(
                    reserve = limits.descriptor_reserve,
                    "the control socket stops accepting until descriptors are free: they are kept for runs"
                );
                short = true;
            }
            tokio::time::sleep(SHORT_OF_DESCRIPTORS_RETRY).await;
            continue;
        }
        short = false;
        match listener.accept().await {
            Ok((stream, _)) => match Arc::clone(&slots).try_acquire_owned() {
                Ok(slot) => {
                    tokio::spawn(handle(stream, engine.clone(), access, limits, slot));
                }
                Err(_) => refuse(&stream, limits.max_clients),
            },
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(SHORT_OF_DESCRIPTORS_RETRY).await;
            }
        }
    }
}

/// How long a count of free descriptors that left room for every client is trusted.
const RECOUNT_EVERY: Duration = Duration::from_secs(1);

/// Whether a connection may take a descriptor without eating into the runs' reserve.
///
/// Counting free descriptors lists `/proc/self/fd`, which for each connection of a burst of
/// requests cost more than serving it. The server itself holds at most `max_clients`
/// connections (and one being refused), so a count that left that many free above the
/// reserve stays good for the server's own connections; it is taken again after
/// [`RECOUNT_EVERY`] for what other parts of the daemon opened meanwhile.
#[derive(Debug)]
struct Room {
    reserve: u64,
    clients: u64,
    /// When a count last left room for every client on top of the reserve.
    roomy_since: Option<Instant>,
}

impl Room {
    fn new(limits: &ClientLimits) -> Room {
        Room {
            reserve: limits.descriptor_reserve,
            clients: u64::try_from(limits.max_clients)
                .unwrap_or(u64::MAX)
                .saturating_add(1),
            roomy_since: None,
        }
    }

    fn for_a_client(&mut self) -> bool {
        if self
            .roomy_since
            .is_some_and(|since| since.elapsed() < RECOUNT_EVERY)
        {
            return true;
        }
        let free = crate::descriptors::free();
        let roomy = free.is_some_and(|free| free > self.reserve.saturating_add(self.clients));
        self.roomy_since = roomy.then(Instant::now);
        free.is_some_and(|free| free > self.reserve)
    }
}

/// Answers a connection beyond [`ClientLimits::max_clients`] with one line and closes it.
/// The line fits in the socket's empty send buffer, so the write never waits.
fn refuse(stream: &UnixStream, max_clients: usize) {
    let refusal = Response::Error {
        message: format!(
            "pacerd is busy: it serves {max_clients} connections at once and all are taken; \
             try again in a few seconds"
        ),
    };
    if let Ok(mut line) = serde_json::to_vec(&refusal) {
        line.push(b'\n');
        let _ = stream.try_write(&line);
    }
}

async fn handle(
    stream: UnixStream,
    engine: mpsc::Sender<Incoming>,
    access: Access,
    limits: ClientLimits,
    _slot: OwnedSemaphorePermit,
) {
    let peer = Peer::of(&stream);
    let (mut read, mut write) = stream.into_split();
    let (reply, mut answers) = mpsc::unbounded_channel();
    let (request, still_sending) = match read_request(&mut read, &limits).await {
        Ok(None) => return,
        Ok(Some(line)) => (decode(&line), false),
        Err(refused) => (Err(refused.message), refused.still_sending),
    };
    // `reply` moves into the engine's hands or is dropped here, so `answers` ends once the
    // engine has said everything.
    pass_on(request, peer, access, &engine, reply).await;
    while let Some(response) = answers.recv().await {
        let Ok(mut bytes) = serde_json::to_vec(&response) else {
            continue;
        };
        bytes.push(b'\n');
        // A client that stops reading would hold its connection, and the answers queued for
        // it, for ever.
        match tokio::time::timeout(limits.write_deadline, write.write_all(&bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
    if still_sending {
        let _ = write.shutdown().await;
        discard_the_rest(&mut read, &limits).await;
    }
}

/// The most of a refused request that is read and dropped after the refusal.
const DISCARDED_AT_MOST: usize = 16 << 20;

/// Reads and drops what a client whose request was refused unread still sends, until it closes
/// (or [`DISCARDED_AT_MOST`] bytes, or `request_deadline`). Closing a Unix socket with unread
/// bytes resets the connection, and the client, still writing, would get the reset rather than
/// the refusal already sent to it.
async fn discard_the_rest(read: &mut OwnedReadHalf, limits: &ClientLimits) {
    let mut sink = vec![0_u8; 8 << 10];
    let mut left = DISCARDED_AT_MOST;
    let drained = async {
        while left > 0 {
            match read.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    let _ = tokio::time::timeout(limits.request_deadline, drained).await;
}

/// Why the request line was not taken.
#[derive(Debug)]
struct Refused {
    /// What the client is told.
    message: String,
    /// Whether the client may still be sending (its line was too long).
    still_sending: bool,
}

impl From<String> for Refused {
    fn from(message: String) -> Refused {
        Refused {
            message,
            still_sending: false,
        }
    }
}

/// Reads the one request line: `None` when the client closed without sending anything. A
/// line longer than [`MAX_REQUEST`], a pause longer than `idle` or a request slower than
/// `request_deadline` is refused with the reason.
async fn read_request(
    read: &mut OwnedReadHalf,
    limits: &ClientLimits,
) -> Result<Option<Vec<u8>>, Refused> {
    let deadline = Instant::now() + limits.request_deadline;
    let mut line = RequestLine::default();
    let mut chunk = vec![0_u8; 4096];
    loop {
        let by = deadline.min(Instant::now() + limits.idle);
        let n = match tokio::time::timeout_at(by, read.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(format!("cannot read the request: {e}").into()),
            Err(_) if by == deadline => {
                return Err(format!(
                    "the request did not arrive within {:?}",
                    limits.request_deadline
                )
                .into());
            }
            Err(_) => {
                return Err(format!("no byte of the request came for {:?}", limits.idle).into());
            }
        };
        // End of stream ends the request too, for clients that shut down their side.
        if n == 0 {
            return Ok(line.finish());
        }
        match line.push(&chunk[..n]) {
            Ok(Some(done)) => return Ok(Some(done)),
            Ok(None) => {}
            Err(message) => {
                return Err(Refused {
                    message,
                    still_sending: true,
                });
            }
        }
    }
}

/// The one request line of a connection, collected from what the client sends: everything
/// before the first newline, at most [`MAX_REQUEST`] bytes of it.
#[derive(Debug, Default)]
pub struct RequestLine {
    line: Vec<u8>,
}

impl RequestLine {
    /// Takes the next bytes received: the whole line once they end it, an error once it is
    /// too long, `None` while it goes on. Bytes after the newline are ignored (one request per
    /// connection).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let end = bytes.iter().position(|&b| b == b'\n');
        self.line
            .extend_from_slice(&bytes[..end.unwrap_or(bytes.len())]);
        if self.line.len() > MAX_REQUEST {
            self.line = Vec::new();
            return Err(format!(
                "the request is longer than {} KiB, the most pacerd reads",
                MAX_REQUEST / 1024
            ));
        }
        Ok(end.map(|_| std::mem::take(&mut self.line)))
    }

    /// The line when the client ends its side before a newline, `None` if it sent nothing.
    pub fn finish(self) -> Option<Vec<u8>> {
        (!self.line.is_empty()).then_some(self.line)
    }
}

/// A request line as the engine takes it; an error says what is wrong and where: serde's line
/// and column, or, for what serde finds only once the whole object is read (a missing field of
/// a verb, which the `verb` tag makes it read ahead), the span of the whole request. A request
/// written for another `api` version is refused rather than misread.
pub fn decode(line: &[u8]) -> Result<Request, String> {
    let unreadable = |e: serde_json::Error| {
        if e.line() == 0 {
            format!(
                "unreadable request: {e} in the request at line 1 column 1 to column {}",
                String::from_utf8_lossy(line).chars().count()
            )
        } else {
            format!("unreadable request: {e}")
        }
    };
    let value: serde_json::Value = serde_json::from_slice(line).map_err(unreadable)?;
    match value.get("api") {
        None => {}
        Some(version) if version.as_u64() == Some(super::API_VERSION) => {}
        Some(version) => {
            return Err(format!(
                "this pacerd speaks api {}, not {version} (docs/api.md)",
                super::API_VERSION
            ));
        }
    }
    serde_json::from_value::<Request>(value).map_err(unreadable)
}

async fn pass_on(
    request: Result<Request, String>,
    peer: Option<Peer>,
    access: Access,
    engine: &mpsc::Sender<Incoming>,
    reply: mpsc::UnboundedSender<Response>,
) {
    let request = match request {
        Ok(request) => request,
        Err(message) => {
            let _ = reply.send(Response::Error { message });
            return;
        }
    };
    let allowed = peer.as_ref().is_some_and(|p| access.allows(p));
    if request.mutates() && !allowed {
        let message = access.refusal(request.verb(), peer.map_or(u32::MAX, |p| p.uid));
        tracing::warn!("{message}");
        let _ = reply.send(Response::Error { message });
        return;
    }
    let _ = engine.send(Incoming { request, reply }).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_descriptors_are_counted_again_only_when_they_may_run_short() {
        let limits = ClientLimits {
            descriptor_reserve: 0,
            ..ClientLimits::reserving_for_runs(1)
        };
        let mut plenty = Room::new(&limits);
        assert!(plenty.for_a_client());
        assert!(
            plenty.roomy_since.is_some(),
            "room for every client: the count is trusted for a while"
        );
        let mut short = Room::new(&ClientLimits {
            descriptor_reserve: u64::MAX - 1,
            ..limits
        });
        assert!(!short.for_a_client());
        assert!(short.roomy_since.is_none(), "short: counted at each accept");
    }

    #[tokio::test]
    async fn a_peer_carries_its_supplementary_groups_without_proc() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let peer = Peer::of(&ours).unwrap();
        let mut expected: Vec<u32> = nix::unistd::getgroups()
            .unwrap()
            .into_iter()
            .map(nix::unistd::Gid::as_raw)
            .collect();
        let mut groups = peer.groups.clone();
        expected.sort_unstable();
        groups.sort_unstable();
        assert_eq!(groups, expected);
        assert_eq!(peer.uid, nix::unistd::geteuid().as_raw());
        let access = Access {
            socket_gid: groups.first().copied().unwrap_or(u32::MAX),
            daemon_uid: u32::MAX,
        };
        assert_eq!(
            access.allows(&Peer {
                uid: 4242,
                gid: 4242,
                ..peer
            }),
            !groups.is_empty(),
            "a supplementary group is enough"
        );
    }
}
