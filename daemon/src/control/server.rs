//! The daemon's side of the control socket: accept connections, read one request each, and
//! pass it to the engine, which owns the state every answer comes from.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

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

/// Accepts connections until the listener fails; each request goes to `engine`.
pub async fn serve(listener: UnixListener, engine: mpsc::Sender<Incoming>, access: Access) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(handle(stream, engine.clone(), access));
            }
            Err(e) => {
                tracing::warn!("control socket accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn handle(stream: UnixStream, engine: mpsc::Sender<Incoming>, access: Access) {
    let peer = Peer::of(&stream);
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    let (reply, mut answers) = mpsc::unbounded_channel();
    let request = match reader.read_line(&mut line).await {
        Ok(0) => return,
        Ok(_) => super::decode_request(&line),
        Err(e) => Err(format!("cannot read the request: {e}")),
    };
    // `reply` moves into the engine's hands or is dropped here, so `answers` ends once the
    // engine has said everything.
    pass_on(request, peer, access, &engine, reply).await;
    while let Some(response) = answers.recv().await {
        let Ok(mut bytes) = serde_json::to_vec(&response) else {
            continue;
        };
        bytes.push(b'\n');
        if write.write_all(&bytes).await.is_err() {
            return;
        }
    }
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
