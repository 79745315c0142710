//! A real PostgreSQL for the cluster tests: Debian's `postgresql` package, `initdb` and
//! `pg_ctl` as an unprivileged user (`nobody` when the tests run as root, which PostgreSQL
//! refuses to run as) in a temporary directory, on a free TCP port of 127.0.0.1, with its
//! socket directory in the same temporary directory. Stopped when dropped.
//!
//! `initdb` takes a second or two; a template made once per machine (under the system's
//! temporary directory, per PostgreSQL version and user) is copied instead, which takes a
//! fraction of that.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The superuser's name and password in every test server.
pub const USER: &str = "pacer";
/// The superuser's password: connections over TCP authenticate with SCRAM.
pub const PASSWORD: &str = "pacer-test";

/// What the server is started with.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A PEM certificate and its PEM key: the server then offers TLS.
    pub tls: Option<(String, String)>,
}

/// A running PostgreSQL server, stopped when dropped.
#[derive(Debug)]
pub struct Postgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    port: u16,
    runs_as: Option<Account>,
}

/// An unprivileged account the server runs as when the tests run as root.
#[derive(Debug, Clone)]
struct Account {
    name: String,
    group: String,
    uid: u32,
    gid: u32,
}

impl Postgres {
    /// Starts a server; `None` (with the reason printed) when PostgreSQL is not installed,
    /// except under `CI=true`, where that fails the test.
    pub fn start() -> Option<Postgres> {
        Self::start_with(&Options::default())
    }

    /// Starts a server with `options`.
    pub fn start_with(options: &Options) -> Option<Postgres> {
        let Some(bin) = find_bin() else {
            let reason = "PostgreSQL is not installed (apt-get install postgresql; \
                          .ci/run installs it)";
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI must run the cluster tests: {reason}"
            );
            eprintln!("skipped: {reason}");
            return None;
        };
        let runs_as = crate::running_as_root().then(|| {
            account("nobody").expect("PostgreSQL refuses to run as root; the user nobody is needed")
        });
        let dir = tempfile::Builder::new()
            .prefix("pacer-pg-")
            .tempdir()
            .expect("a temporary directory");
        if let Some(account) = &runs_as {
            std::os::unix::fs::chown(dir.path(), Some(account.uid), Some(account.gid))
                .expect("the server's directory is given to its user");
        }
        let template = template(&bin, runs_as.as_ref());
        let server = Postgres {
            bin,
            dir,
            port: 0,
            runs_as,
        };
        let data = server.data();
        server.run(Command::new("cp").arg("-a").arg(&template).arg(&data));
        if let Some((cert, key)) = &options.tls {
            server.write_private(&data.join("server.crt"), cert);
            server.write_private(&data.join("server.key"), key);
        }
        let mut conf = String::from(
            "fsync = off\nshared_buffers = 16MB\nmax_connections = 100\n\
             listen_addresses = '127.0.0.1'\nlog_min_messages = warning\n",
        );
        conf.push_str(&format!(
            "unix_socket_directories = '{}'\n",
            server.dir.path().display()
        ));
        if options.tls.is_some() {
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        let auto = data.join("postgresql.auto.conf");
        let mut text = std::fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&conf);
        std::fs::write(&auto, text).expect("the server's settings are written");
        Some(server.started())
    }

    /// Tries free ports until the server listens on one (another test may take a port
    /// between finding it free and the server binding it).
    fn started(mut self) -> Postgres {
        for _ in 0..10 {
            self.port = free_port();
            let status = self.pg_ctl(&[
                "start",
                "-w",
                "-t",
                "60",
                "-o",
                &format!("-p {}", self.port),
            ]);
            if status {
                return self;
            }
        }
        panic!(
            "PostgreSQL did not start; its log:\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// The TCP port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A URL for database `postgres` as the superuser, through `port` (the server's own, or a
    /// proxy's in front of it), with `extra` query parameters (`sslmode=...`).
    pub fn url_via(&self, port: u16, extra: &str) -> String {
        let mut url = format!("postgresql://{USER}:{PASSWORD}@127.0.0.1:{port}/postgres");
        if !extra.is_empty() {
            url.push('?');
            url.push_str(extra);
        }
        url
    }

    /// A URL for database `postgres` as the superuser.
    pub fn url(&self) -> String {
        self.url_via(self.port, "")
    }

    /// Runs SQL through `psql` on the server's socket; its output.
    pub fn psql(&self, sql: &str) -> String {
        let output = self
            .command(&self.bin.join("psql"))
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h"])
            .arg(self.dir.path())
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                "postgres",
                "-c",
                sql,
            ])
            .output()
            .expect("psql runs");
        assert!(
            output.status.success(),
            "psql failed on {sql}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Crashes and restarts the server (`pg_ctl restart -m immediate`): every connection
    /// drops, and only committed transactions survive.
    pub fn restart_immediate(&self) {
        assert!(
            self.pg_ctl(&["restart", "-m", "immediate", "-w", "-t", "60"]),
            "PostgreSQL did not restart; its log:\n{}",
            std::fs::read_to_string(self.log()).unwrap_or_default()
        );
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(self.log()).unwrap_or_default()
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn pg_ctl(&self, args: &[&str]) -> bool {
        self.command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.log())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    }

    fn command(&self, program: &Path) -> Command {
        as_account(program, self.runs_as.as_ref())
    }

    fn run(&self, command: &mut Command) {
        let output = command.output().expect("the command runs");
        assert!(
            output.status.success(),
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Writes a file only the server's user may read (PostgreSQL insists on it for its key).
    fn write_private(&self, path: &Path, text: &str) {
        std::fs::write(path, text).expect("the file is written");
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .expect("the file is made private");
        if let Some(account) = &self.runs_as {
            std::os::unix::fs::chown(path, Some(account.uid), Some(account.gid))
                .expect("the file is given to the server's user");
        }
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if self.port != 0 {
            self.pg_ctl(&["stop", "-m", "immediate", "-w", "-t", "30"]);
        }
    }
}

/// The newest installed PostgreSQL's `bin` directory (`PACER_PG_BIN` overrides it).
fn find_bin() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("PACER_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

/// A data directory made by `initdb` once and reused: `pacer` as superuser with a password
/// for TCP (SCRAM), trust on the socket.
fn template(bin: &Path, runs_as: Option<&Account>) -> PathBuf {
    let version = Command::new(bin.join("pg_ctl"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let version: String = version
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let uid = runs_as.map_or_else(current_uid, |account| account.uid);
    let template = std::env::temp_dir().join(format!("pacer-pg-template-{version}-{uid}"));
    if usable_template(&template, uid) {
        return template;
    }
    let fresh = std::env::temp_dir().join(format!(
        "pacer-pg-template-{version}-{uid}.{}.{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir(&fresh).expect("the template's directory is made");
    if let Some(account) = runs_as {
        std::os::unix::fs::chown(&fresh, Some(account.uid), Some(account.gid))
            .expect("the template's directory is given to the server's user");
    }
    let password = fresh.join("pwfile");
    std::fs::write(&password, PASSWORD).expect("the password file is written");
    if let Some(account) = runs_as {
        std::os::unix::fs::chown(&password, Some(account.uid), Some(account.gid))
            .expect("the password file is given to the server's user");
    }
    let data = fresh.join("data");
    let output = as_account(&bin.join("initdb"), runs_as)
        .arg("-D")
        .arg(&data)
        .args(["-U", USER, "-E", "UTF8", "--locale=C", "--no-sync"])
        .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
        .arg(format!("--pwfile={}", password.display()))
        .output()
        .expect("initdb runs");
    assert!(
        output.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Another test process may have made one meanwhile: either is as good.
    if std::fs::rename(&data, &template).is_err() && !usable_template(&template, uid) {
        panic!(
            "cannot keep the PostgreSQL template at {}",
            template.display()
        );
    }
    let _ = as_account(Path::new("rm"), runs_as)
        .arg("-rf")
        .arg(&fresh)
        .status();
    template
}

/// A template made by the same user and writable by no one else (nobody could have slipped
/// another one in).
fn usable_template(path: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .is_ok_and(|meta| meta.is_dir() && meta.uid() == uid && meta.mode() & 0o022 == 0)
        && path.join("PG_VERSION").exists()
}

/// `program` run as `account` (via `setpriv`), or as this process's user.
fn as_account(program: &Path, account: Option<&Account>) -> Command {
    let mut command = match account {
        Some(account) => {
            let mut command = Command::new("setpriv");
            command
                .arg(format!("--reuid={}", account.name))
                .arg(format!("--regid={}", account.group))
                .arg("--clear-groups")
                .arg("--")
                .arg(program);
            command
        }
        None => Command::new(program),
    };
    command
        .env("LC_ALL", "C")
        .env_remove("PGDATA")
        .current_dir("/");
    command
}

fn account(name: &str) -> Option<Account> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let fields: Vec<&str> = passwd
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))?;
    let uid = fields.get(2)?.parse().ok()?;
    let gid: u32 = fields.get(3)?.parse().ok()?;
    let groups = std::fs::read_to_string("/etc/group").ok()?;
    let group = groups
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(gid))
        .and_then(|fields| fields.first().map(|g| (*g).to_owned()))?;
    Some(Account {
        name: name.to_owned(),
        group,
        uid,
        gid,
    })
}

fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map_or(0, |meta| meta.uid())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}
