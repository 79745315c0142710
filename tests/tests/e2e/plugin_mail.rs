//! The `mail` plugin through the real daemon, against an SMTP server this test runs.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use pacer_tests::{Sandbox, text, wait_until};
use serde_json::Value;

/// What the server got from one client.
#[derive(Debug, Clone, Default)]
struct Received {
    /// The AUTH command as sent.
    auth: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    data: Option<String>,
}

/// A plain SMTP server on 127.0.0.1 that offers AUTH PLAIN, accepts any login, refuses the
/// recipients it is told to, and records every session.
struct SmtpServer {
    port: u16,
    sessions: Arc<Mutex<Vec<Received>>>,
}

impl SmtpServer {
    fn start(refuse: &'static [&'static str]) -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sessions: Arc<Mutex<Vec<Received>>> = Arc::default();
        let recorded = Arc::clone(&sessions);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || {
                    let mut received = Received::default();
                    // A client that hangs up early just ends the session.
                    let _ = serve(stream, refuse, &mut received);
                    recorded.lock().unwrap().push(received);
                });
            }
        });
        SmtpServer { port, sessions }
    }

    /// The sessions that ended so far.
    fn sessions(&self) -> Vec<Received> {
        self.sessions.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, refuse: &[&str], received: &mut Received) -> std::io::Result<()> {
    // Replies go out in pieces; without this each would wait for the client's delayed ACK.
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut send = |line: &str| write!(writer, "{line}\r\n");
    send("220 e2e.example ESMTP")?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end().to_owned();
        let verb = line
            .split(' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let address = || {
            let start = line.find('<').map_or(0, |i| i + 1);
            line[start..line.find('>').unwrap_or(line.len())].to_owned()
        };
        match verb.as_str() {
            "EHLO" => send("250-e2e.example\r\n250 AUTH PLAIN")?,
            "AUTH" => {
                received.auth = Some(line.clone());
                send("235 2.7.0 Authentication successful")?;
            }
            "MAIL" => {
                received.mail_from = Some(address());
                send("250 2.1.0 Ok")?;
            }
            "RCPT" if refuse.contains(&address().as_str()) => send(&format!(
                "550 5.1.1 <{}>: Recipient address rejected",
                address()
            ))?,
            "RCPT" => {
                received.rcpt_to.push(address());
                send("250 2.1.5 Ok")?;
            }
            "DATA" => {
                send("354 End data with <CR><LF>.<CR><LF>")?;
                let mut data = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line)? == 0 || line == ".\r\n" {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                }
                received.data = Some(data);
                send("250 2.0.0 Ok: queued")?;
            }
            "QUIT" => return send("221 2.0.0 Bye"),
            _ => send("250 2.0.0 Ok")?,
        }
    }
}

/// The newest run of `job` that ended with `status`, once there is one.
fn wait_for_run(sandbox: &Sandbox, job: &str, status: &str) -> Value {
    wait_until(&format!("a {status} run of {job}"), || {
        sandbox
            .history(&["--job", job, "--status", status])
            .into_iter()
            .next()
    })
}

/// The one session in which a mail was sent, once it has ended.
fn wait_for_mail(server: &SmtpServer) -> Received {
    wait_until("a mail at the SMTP server", || {
        server
            .sessions()
            .into_iter()
            .find(|session| session.data.is_some())
    })
}

#[test]
fn a_mail_goes_out_with_a_password_from_a_file() {
    let server = SmtpServer::start(&[]);
    let sandbox = Sandbox::new();
    sandbox.install_bundled("mail");
    // Relative to the directory of the config file, as the run's working directory is.
    sandbox.write("secrets/smtp-password", "e2e-secret\n");
    sandbox.write_config(
        "",
        &format!(
            r#"
[[jobs]]
name = "notify"
plugin = "mail"
[jobs.params]
smtp_host = "127.0.0.1"
smtp_port = {}
# This server offers no STARTTLS; logging in unencrypted takes an explicit "off".
starttls = "off"
username = "pacer"
password_file = "secrets/smtp-password"
from = "Pacer <pacer@example.com>"
to = ["ops@example.com", "oncall@example.com"]
body = "Nightly report attached in spirit."
"#,
            server.port
        ),
    );
    let _daemon = sandbox.start();
    let run = sandbox.pacer(["run", "notify", "--wait"]);
    assert_eq!(run.code, 0, "{run}");

    let mail = wait_for_mail(&server);
    // base64 of "\0pacer\0e2e-secret": the password without the file's newline.
    assert_eq!(
        mail.auth.as_deref(),
        Some("AUTH PLAIN AHBhY2VyAGUyZS1zZWNyZXQ=")
    );
    assert_eq!(mail.mail_from.as_deref(), Some("pacer@example.com"));
    assert_eq!(mail.rcpt_to, ["ops@example.com", "oncall@example.com"]);
    let data = mail.data.unwrap();
    for line in [
        "From: Pacer <pacer@example.com>\r\n",
        "To: ops@example.com, oncall@example.com\r\n",
        // No `subject` param: the job's name says where the mail comes from.
        "Subject: Pacer job notify\r\n",
        "Content-Type: text/plain; charset=utf-8\r\n",
        "\r\n\r\nNightly report attached in spirit.\r\n",
    ] {
        assert!(data.contains(line), "{line:?} not in\n{data}");
    }

    let record = wait_for_run(&sandbox, "notify", "succeeded");
    let id = record["id"].as_i64().unwrap().to_string();
    let output = text(&sandbox.pacer_json(&["show", &id]), "output").to_owned();
    let at = format!("127.0.0.1:{}", server.port);
    assert!(
        output.contains(&format!("sending mail to 2 recipients via {at}")),
        "{output}"
    );
    assert!(!output.contains("e2e-secret"), "{output}");
}

#[test]
fn a_failure_notice_names_the_failed_run() {
    let server = SmtpServer::start(&[]);
    let sandbox = Sandbox::new();
    sandbox.install_bundled("mail");
    sandbox.write_config(
        "",
        &format!(
            r#"
[[jobs]]
name = "backup"
plugin = "exec"
on_failure = ["mail-ops"]
params = {{ command = "exit 3" }}

[[jobs]]
name = "mail-ops"
plugin = "mail"
[jobs.params]
smtp_host = "127.0.0.1"
smtp_port = {}
from = "pacer@example.com"
to = "ops@example.com"
subject = "{{upstream.job}} {{upstream.status}}"
body = "Run {{upstream.id}} of {{upstream.job}} ended {{upstream.status}}: {{upstream.error}}"
"#,
            server.port
        ),
    );
    let _daemon = sandbox.start();
    let started = sandbox.pacer(["run", "backup"]);
    assert_eq!(started.code, 0, "{started}");
    let backup = wait_for_run(&sandbox, "backup", "failed");
    let notice = wait_for_run(&sandbox, "mail-ops", "succeeded");
    assert_eq!(notice["trigger"], "chained");

    let data = wait_for_mail(&server).data.unwrap();
    assert!(data.contains("Subject: backup failed\r\n"), "{data}");
    let body = format!(
        "\r\n\r\nRun {} of backup ended failed: command exited with code 3\r\n",
        backup["id"]
    );
    assert!(data.ends_with(&body), "{body:?} does not end\n{data}");
}

#[test]
fn a_refused_recipient_or_missing_starttls_fails_the_run() {
    let server = SmtpServer::start(&["nobody@example.com"]);
    let sandbox = Sandbox::new();
    sandbox.install_bundled("mail");
    sandbox.write_config(
        "",
        &format!(
            r#"
[[jobs]]
name = "unknown-user"
plugin = "mail"
params = {{ smtp_host = "127.0.0.1", smtp_port = {port}, from = "pacer@example.com", to = ["ops@example.com", "nobody@example.com"] }}

[[jobs]]
name = "needs-tls"
plugin = "mail"
params = {{ smtp_host = "127.0.0.1", smtp_port = {port}, starttls = "required", from = "pacer@example.com", to = "ops@example.com" }}
"#,
            port = server.port
        ),
    );
    let _daemon = sandbox.start();
    let at = format!("127.0.0.1:{}", server.port);
    for (job, error) in [
        (
            "unknown-user",
            format!(
                "mail server {at} refused recipient <nobody@example.com>: 550 5.1.1 \
                 <nobody@example.com>: Recipient address rejected"
            ),
        ),
        (
            "needs-tls",
            format!(r#"mail server {at} does not offer STARTTLS, and starttls is "required""#),
        ),
    ] {
        let run = sandbox.pacer(["run", job, "--wait"]);
        assert_eq!(run.code, 1, "{run}");
        let record = wait_for_run(&sandbox, job, "failed");
        assert_eq!(text(&record, "error"), error);
    }
    assert!(
        server
            .sessions()
            .iter()
            .all(|session| session.data.is_none()),
        "no mail went out"
    );
}

#[test]
fn check_names_the_job_and_the_key() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("mail");
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "nobody"
plugin = "mail"
params = { smtp_host = "mail.example.com", from = "pacer@example.com", to = [] }

[[jobs]]
name = "two-passwords"
plugin = "mail"
[jobs.params]
smtp_host = "mail.example.com"
from = "pacer@example.com"
to = "ops@example.com"
username = "pacer"
password = "x"
password_file = "secret"
"#,
    );
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    let verdicts = check.json();
    for (job, error) in [
        (
            "nobody",
            "params of `nobody`: `to` must name at least one address",
        ),
        (
            "two-passwords",
            "params of `two-passwords`: give `password` or `password_file`, not both",
        ),
    ] {
        let verdict = verdicts
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["job"] == job)
            .unwrap_or_else(|| panic!("no verdict for {job}: {verdicts}"));
        let text = verdict["error"].as_str().unwrap_or_default();
        assert!(text.ends_with(error), "{job}: {text}");
    }
}
