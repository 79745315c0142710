//! The `mail` plugin: sends one plain-text mail through an SMTP server, typically to tell
//! someone that another job failed.
//!
//! # Params
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `smtp_host` | string | required | the mail server's host name or IP address |
//! | `smtp_port` | integer | `25` | its SMTP port: 25, or 587 for submission |
//! | `starttls` | string | `"opportunistic"` | `"off"`, `"opportunistic"` (encrypt when the server offers STARTTLS; never log in unencrypted) or `"required"` (fail when it does not) |
//! | `username` | string | none | log in with AUTH PLAIN or AUTH LOGIN as this user |
//! | `password` | string | none | the password for `username` |
//! | `password_file` | string | none | a file holding the password instead (a trailing newline is dropped); a relative path is taken from the directory of the job's config file |
//! | `from` | string | required | the sender: `alerts@example.com` or `Pacer <alerts@example.com>` |
//! | `to` | string or array of strings | required | one recipient or several, in the same forms |
//! | `subject` | string | `Pacer job NAME` | the subject line |
//! | `body` | string | empty | the text of the mail |
//!
//! Any other key is an error, so `pacer check` reports a misspelled one. A chained run's
//! `upstream` table is accepted and ignored: `pacerd` has already expanded `{upstream.job}`,
//! `{upstream.id}`, `{upstream.status}` and `{upstream.error}` in the string params, which is how
//! a failure notice names the failed run.
//!
//! The mail carries `Date`, `Message-ID` (`<random@this host's name>`), `From`, `To`, `Subject`
//! and `MIME-Version: 1.0`, and its body is `text/plain; charset=utf-8`, encoded for 7-bit
//! transport when it is not plain ASCII. Line breaks in the subject become spaces, since a header
//! is one line. All recipients go into one `To` header and one SMTP transaction.
//!
//! # What happens
//!
//! The log says `sending mail to N recipients via HOST:PORT` (never the password). The plugin
//! connects, says EHLO with this host's name, upgrades the session with STARTTLS as `starttls`
//! asks, logs in if `username` is set, and hands over the mail. A server that refuses any
//! recipient fails the run before the mail is sent, so a retry does not send it twice to the
//! others. Each step waits at most 30 seconds for the server (less when the job's `timeout`
//! comes sooner); a cancelled run stops between steps.
//!
//! STARTTLS verifies the server's certificate for `smtp_host` against the system's CA store, or
//! against what `SSL_CERT_FILE` (a PEM bundle) or `SSL_CERT_DIR` name in the daemon's
//! environment; a certificate that does not verify is an error in both `opportunistic` and
//! `required` mode, never a reason to go on unencrypted. SMTP over TLS from the first byte (port
//! 465) is not supported: use port 587 with STARTTLS.
//!
//! # Errors
//!
//! Each names the server and the step, with the server's own reply where it gave one:
//!
//! - `cannot connect to mail server mail.example.com:25: connection refused`
//! - `mail server mail.example.com:25 does not offer STARTTLS, and starttls is "required"`
//! - ``mail server mail.example.com:587 refused the login of `pacer`: 535 5.7.8 Authentication
//!   credentials invalid``
//! - `mail server mail.example.com:25 refused recipient <nobody@example.com>: 550 5.1.1 User
//!   unknown`
//! - `no answer from mail server mail.example.com:25 within 30s to the message`
//!
//! # Example
//!
//! A notice to the operators when the backup fails, started by the backup job's `on_failure`:
//!
//! ```toml
//! [[jobs]]
//! name = "backup"
//! schedule = "15 3 * * *"
//! plugin = "exec"
//! on_failure = ["mail-ops"]
//! [jobs.params]
//! command = "/usr/local/bin/backup"
//!
//! [[jobs]]
//! name = "mail-ops"
//! plugin = "mail"
//! [jobs.params]
//! smtp_host = "mail.example.com"
//! smtp_port = 587
//! starttls = "required"
//! username = "pacer"
//! password_file = "/etc/pacer/smtp-password"
//! from = "Pacer <pacer@example.com>"
//! to = ["ops@example.com", "oncall@example.com"]
//! subject = "{upstream.job} {upstream.status}"
//! body = "Run {upstream.id} of {upstream.job} ended {upstream.status}: {upstream.error}"
//! ```

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use lettre::message::{Mailbox, SinglePart};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{SmtpConnection, TlsParameters};
use lettre::transport::smtp::commands::{Data, Mail, Rcpt};
use lettre::transport::smtp::extension::{ClientId, Extension, MailParameter};
use lettre::transport::smtp::response::Response;
use lettre::{Address, Message};
use pacer_plugin_api::{Cancelled, Context, Error, Plugin, ResultExt, bail, export_plugin};
use serde_json::{Map, Value};

use pacer_plugin_api::fields::{Fields, describe};

const KEYS: [&str; 10] = [
    "smtp_host",
    "smtp_port",
    "starttls",
    "username",
    "password",
    "password_file",
    "from",
    "to",
    "subject",
    "body",
];

const DEFAULT_PORT: u16 = 25;

/// How long each step of the SMTP session may wait for the server. RFC 5321 suggests minutes
/// for some replies, but a notice that cannot be delivered within this is better reported than
/// left hanging until the job's timeout.
const STEP_TIMEOUT: Duration = Duration::from_secs(30);

const ADDRESS_HINT: &str = r#"such as "alerts@example.com" or "Pacer <alerts@example.com>""#;

/// When to upgrade the session with STARTTLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartTls {
    Off,
    Opportunistic,
    Required,
}

/// A login: the user and where the password comes from.
struct Login {
    username: String,
    secret: Secret,
}

enum Secret {
    Inline(String),
    File(PathBuf),
}

impl Login {
    /// Reads the password (from `password_file` at run time, so `pacer check` needs no access
    /// to it).
    fn credentials(&self) -> Result<Credentials, Error> {
        let password = match &self.secret {
            Secret::Inline(password) => password.clone(),
            Secret::File(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read `password_file` {}", path.display()))?;
                let password = text.strip_suffix('\n').map_or(text.as_str(), |line| {
                    line.strip_suffix('\r').unwrap_or(line)
                });
                password.to_owned()
            }
        };
        Ok(Credentials::new(self.username.clone(), password))
    }
}

/// A mail as the params describe it, checked.
struct Mailing {
    host: String,
    port: u16,
    starttls: StartTls,
    login: Option<Login>,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: Option<String>,
    body: String,
}

impl Mailing {
    fn parse(params: &Map<String, Value>) -> Result<Self, Error> {
        let fields = Fields::new(params, &KEYS)?;
        let host = parse_host(fields.required_string(
            "smtp_host",
            r#"the mail server's host name, such as "mail.example.com""#,
        )?)?;
        let port = match fields.get("smtp_port") {
            None => DEFAULT_PORT,
            Some(value) => parse_port(value)?,
        };
        let starttls = match fields.string("starttls", r#""off", "opportunistic" or "required""#)? {
            None | Some("opportunistic") => StartTls::Opportunistic,
            Some("required") => StartTls::Required,
            Some("off") => StartTls::Off,
            Some(other) => {
                bail!(r#"`starttls` must be "off", "opportunistic" or "required", not {other:?}"#)
            }
        };
        let login = parse_login(&fields)?;
        let from = parse_mailbox(
            "from",
            fields.required_string("from", &format!("the sender's address, {ADDRESS_HINT}"))?,
        )?;
        let to = parse_recipients(fields.get("to"))?;
        let subject = fields
            .string("subject", "a string (the subject line)")?
            .map(str::to_owned);
        let body = fields
            .string("body", "a string (the text of the mail)")?
            .unwrap_or_default()
            .to_owned();
        Ok(Self {
            host,
            port,
            starttls,
            login,
            from,
            to,
            subject,
            body,
        })
    }

    /// `host:port`, with brackets around an IPv6 address.
    fn server(&self) -> String {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{}]:{}", self.host, self.port),
            _ => format!("{}:{}", self.host, self.port),
        }
    }

    /// The mail as it goes over the wire, headers and all.
    fn message(&self) -> Result<Vec<u8>, Error> {
        let subject = match &self.subject {
            Some(subject) => subject.clone(),
            None => default_subject(),
        };
        let mut builder = Message::builder()
            .from(self.from.clone())
            // A header is one line; an expanded `{upstream.error}` may hold several.
            .subject(subject.replace(['\r', '\n'], " "))
            .date_now()
            .message_id(None);
        for recipient in &self.to {
            builder = builder.to(recipient.clone());
        }
        let message = builder
            .singlepart(SinglePart::plain(self.body.clone()))
            .context("composing the mail")?;
        let mut mail = message.formatted();
        // The end-of-data marker (CRLF . CRLF) supplies the last line's break; left in, this
        // one would add an empty line to the end of every mail.
        if mail.ends_with(b"\r\n") {
            mail.truncate(mail.len() - 2);
        }
        Ok(mail)
    }

    fn addresses(&self) -> impl Iterator<Item = &Address> {
        std::iter::once(&self.from.email).chain(self.to.iter().map(|mailbox| &mailbox.email))
    }
}

/// One SMTP session with the mail server, a method per step.
struct Session<'a> {
    mailing: &'a Mailing,
    ctx: &'a Context,
    wait: &'a Wait,
    /// `host:port`, for messages.
    server: String,
    connection: SmtpConnection,
}

impl<'a> Session<'a> {
    /// Connects and reads the greeting; the connection has said EHLO when this returns.
    fn open(mailing: &'a Mailing, ctx: &'a Context, wait: &'a Wait) -> Result<Self, Error> {
        let server = mailing.server();
        let addresses: Vec<SocketAddr> = (mailing.host.as_str(), mailing.port)
            .to_socket_addrs()
            .with_context(|| format!("cannot resolve mail server host `{}`", mailing.host))?
            .collect();
        let connection = SmtpConnection::connect(
            addresses.as_slice(),
            Some(wait.step),
            &ClientId::default(),
            None,
            None,
        )
        .map_err(|e| match (e.status(), io_cause(&e)) {
            (Some(code), _) => Error::msg(format_args!(
                "mail server {server} refused the session: {code} {}",
                detail(&e)
            )),
            _ if is_timeout(&e) => Error::msg(format_args!(
                "no answer from mail server {server} {}",
                wait.phrase
            )),
            (None, Some(io)) if io.kind() == io::ErrorKind::ConnectionRefused => Error::msg(
                format_args!("cannot connect to mail server {server}: connection refused"),
            ),
            (None, _) => Error::msg(format_args!(
                "cannot connect to mail server {server}: {}",
                detail(&e)
            )),
        })?;
        Ok(Self {
            mailing,
            ctx,
            wait,
            server,
            connection,
        })
    }

    /// Upgrades the session to TLS as `starttls` asks.
    fn starttls(&mut self) -> Result<(), Error> {
        let server = &self.server;
        let offered = self
            .connection
            .server_info()
            .supports_feature(Extension::StartTls);
        match self.mailing.starttls {
            StartTls::Off => return Ok(()),
            StartTls::Required if !offered => {
                bail!(r#"mail server {server} does not offer STARTTLS, and starttls is "required""#)
            }
            StartTls::Opportunistic if !offered => {
                tracing::warn!("{server} does not offer STARTTLS: sending without encryption");
                return Ok(());
            }
            StartTls::Opportunistic | StartTls::Required => {}
        }
        check(self.ctx)?;
        // Verifies the certificate for `smtp_host` against the system's CA store (lettre's
        // `rustls-native-certs` feature, which honours SSL_CERT_FILE and SSL_CERT_DIR).
        let tls = TlsParameters::builder(self.mailing.host.clone())
            .build_rustls()
            .context("setting up TLS")?;
        self.connection
            .starttls(&tls, &ClientId::default())
            .map_err(|e| {
                let hint = if is_certificate_error(&e) {
                    " (trusted CAs come from the system's store, or from SSL_CERT_FILE and \
                     SSL_CERT_DIR when set)"
                } else {
                    ""
                };
                Error::msg(format_args!(
                    "STARTTLS with mail server {server} failed: {}{hint}",
                    detail(&e)
                ))
            })?;
        tracing::debug!("the session with {server} is encrypted");
        Ok(())
    }

    fn login(&mut self, username: &str, credentials: &Credentials) -> Result<(), Error> {
        check(self.ctx)?;
        let server = &self.server;
        // "opportunistic" may send a mail in clear, never a password: that takes an explicit
        // "off".
        if self.mailing.starttls == StartTls::Opportunistic && !self.connection.is_encrypted() {
            bail!(
                "mail server {server} does not offer STARTTLS, so the password of `{username}` \
                 would cross the network unencrypted; nothing was sent. Use a server that offers \
                 STARTTLS, or set starttls = \"off\" to log in without encryption anyway"
            );
        }
        let mechanisms = [Mechanism::Plain, Mechanism::Login];
        let offered = self
            .connection
            .server_info()
            .get_auth_mechanism(&mechanisms);
        if offered.is_none() {
            let hint = if self.connection.is_encrypted() {
                ""
            } else {
                " (servers often offer it only after STARTTLS)"
            };
            bail!(
                "mail server {server} does not offer AUTH PLAIN or AUTH LOGIN, so `username` \
                 cannot log in{hint}"
            );
        }
        self.connection
            .auth(&mechanisms, credentials)
            .map_err(|e| self.failed(&format!("the login of `{username}`"), &e))?;
        tracing::debug!("logged in to {server} as {username}");
        Ok(())
    }

    /// Names the sender and each recipient, then hands over the mail; returns the server's
    /// final reply.
    fn send(&mut self, mail: &[u8]) -> Result<Response, Error> {
        check(self.ctx)?;
        let mut parameters = Vec::new();
        let ascii = self
            .mailing
            .addresses()
            .all(|address| address.user().is_ascii() && address.domain().is_ascii());
        if !ascii {
            if !self
                .connection
                .server_info()
                .supports_feature(Extension::SmtpUtfEight)
            {
                bail!(
                    "mail server {} does not accept addresses outside ASCII (SMTPUTF8), which \
                     `from` or `to` holds",
                    self.server
                );
            }
            parameters.push(MailParameter::SmtpUtfEight);
        }
        let sender = &self.mailing.from.email;
        self.connection
            .command(Mail::new(Some(sender.clone()), parameters))
            .map_err(|e| self.failed(&format!("sender <{sender}>"), &e))?;
        for recipient in &self.mailing.to {
            check(self.ctx)?;
            let address = &recipient.email;
            self.connection
                .command(Rcpt::new(address.clone(), Vec::new()))
                .map_err(|e| self.failed(&format!("recipient <{address}>"), &e))?;
        }
        check(self.ctx)?;
        self.connection
            .command(Data)
            .map_err(|e| self.failed("the message (DATA)", &e))?;
        self.connection
            .message(mail)
            .map_err(|e| self.failed("the message", &e))
    }

    fn failed(&self, what: &str, error: &SmtpError) -> Error {
        failure(&self.server, self.wait, what, error)
    }
}

type SmtpError = lettre::transport::smtp::Error;

/// An error at step `what` of a session, in the operator's terms.
fn failure(server: &str, wait: &Wait, what: &str, error: &SmtpError) -> Error {
    match error.status() {
        Some(code) => Error::msg(format_args!(
            "mail server {server} refused {what}: {code} {}",
            detail(error)
        )),
        None if is_timeout(error) => Error::msg(format_args!(
            "no answer from mail server {server} {} to {what}",
            wait.phrase
        )),
        None => Error::msg(format_args!(
            "talking to mail server {server} failed at {what}: {}",
            detail(error)
        )),
    }
}

/// What an SMTP error says beyond its kind: the server's reply text, or the underlying cause
/// (an I/O or TLS error).
fn detail(error: &SmtpError) -> String {
    match std::error::Error::source(error) {
        Some(source) => source.to_string(),
        None => error.to_string(),
    }
}

/// The I/O error under an SMTP error, if that is what it is.
fn io_cause(error: &SmtpError) -> Option<&io::Error> {
    std::error::Error::source(error).and_then(|source| source.downcast_ref::<io::Error>())
}

/// Whether the server did not answer in time. A socket's read timeout shows up on Linux as
/// `WouldBlock` (EAGAIN), which lettre's own `is_timeout` does not count.
fn is_timeout(error: &SmtpError) -> bool {
    error.is_timeout()
        || io_cause(error).is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            )
        })
}

/// Whether the server's certificate did not verify, as opposed to another TLS failure. rustls
/// reports it inside the I/O error of the read or write that did the handshake.
fn is_certificate_error(error: &SmtpError) -> bool {
    io_cause(error)
        .and_then(io::Error::get_ref)
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        .is_some_and(|tls| matches!(tls, rustls::Error::InvalidCertificate(_)))
}

fn check(ctx: &Context) -> Result<(), Error> {
    if ctx.is_cancelled() {
        return Err(Cancelled.into());
    }
    Ok(())
}

fn parse_host(text: &str) -> Result<String, Error> {
    let bare = text.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Ok(bare.to_owned());
    }
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        bail!(
            r#"`smtp_host` must be a host name or IP address such as "mail.example.com", without scheme or port (the port goes in `smtp_port`), not {text:?}"#
        );
    }
    Ok(text.to_owned())
}

fn parse_port(value: &Value) -> Result<u16, Error> {
    let port = value
        .as_u64()
        .and_then(|port| u16::try_from(port).ok())
        .filter(|port| *port > 0)
        .with_context(|| {
            format!(
                "`smtp_port` must be a port number (1-65535) such as 25 or 587, not {}",
                describe(value)
            )
        })?;
    if port == 465 {
        bail!(
            "`smtp_port` 465 expects TLS from the first byte, which this plugin does not speak: \
             use port 587, where STARTTLS encrypts the session"
        );
    }
    Ok(port)
}

fn parse_login(fields: &Fields<'_>) -> Result<Option<Login>, Error> {
    let username = fields.string("username", "a string (the user to log in as)")?;
    let password = fields.string("password", "a string")?;
    let password_file =
        fields.string("password_file", "the path of a file holding the password")?;
    let secret = match (password, password_file) {
        (Some(_), Some(_)) => bail!("give `password` or `password_file`, not both"),
        (Some(password), None) => Some(Secret::Inline(password.to_owned())),
        (None, Some("")) => bail!("`password_file` must not be empty"),
        (None, Some(path)) => Some(Secret::File(PathBuf::from(path))),
        (None, None) => None,
    };
    match (username, secret) {
        (Some(""), _) => bail!("`username` must not be empty"),
        (Some(username), Some(secret)) => Ok(Some(Login {
            username: username.to_owned(),
            secret,
        })),
        (Some(_), None) => bail!("`username` needs `password` or `password_file`"),
        (None, Some(Secret::Inline(_))) => bail!("`password` needs `username`"),
        (None, Some(Secret::File(_))) => bail!("`password_file` needs `username`"),
        (None, None) => Ok(None),
    }
}

fn parse_mailbox(key: &str, text: &str) -> Result<Mailbox, Error> {
    text.trim().parse().map_err(|_| {
        let list_hint = if key == "to" && text.contains(',') {
            r#" (several go in an array, such as ["a@example.com", "b@example.com"])"#
        } else {
            ""
        };
        Error::msg(format_args!(
            "`{key}` must be a mail address {ADDRESS_HINT}, not {text:?}{list_hint}"
        ))
    })
}

fn parse_recipients(value: Option<&Value>) -> Result<Vec<Mailbox>, Error> {
    let none = || Error::msg("`to` must name at least one address");
    let texts: Vec<&Value> = match value {
        None => return Err(none()),
        Some(Value::Array(items)) if items.is_empty() => return Err(none()),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(single) => vec![single],
    };
    texts
        .into_iter()
        .map(|item| match item {
            Value::String(text) => parse_mailbox("to", text),
            other => bail!(
                "`to` must be an address or an array of addresses, {ADDRESS_HINT}, not {}",
                describe(other)
            ),
        })
        .collect()
}

/// `Pacer job NAME` for the job this run belongs to, so that a mail without a subject still
/// says where it comes from.
fn default_subject() -> String {
    match std::env::var("PACER_JOB") {
        Ok(job) if !job.is_empty() => format!("Pacer job {job}"),
        _ => "Pacer".to_owned(),
    }
}

/// How long each step may wait, and how an error says so.
struct Wait {
    step: Duration,
    /// `within 30s`, or `before the job's timeout` when that comes first.
    phrase: String,
}

impl Wait {
    fn new(ctx: &Context) -> Self {
        match ctx.remaining() {
            Some(left) if left < STEP_TIMEOUT => Self {
                // A zero timeout means "none" to sockets.
                step: left.max(Duration::from_millis(1)),
                phrase: "before the job's timeout".to_owned(),
            },
            _ => Self {
                step: STEP_TIMEOUT,
                phrase: format!("within {}s", STEP_TIMEOUT.as_secs()),
            },
        }
    }
}

/// "1 recipient", "3 recipients".
struct Recipients(usize);

impl fmt::Display for Recipients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            1 => f.write_str("1 recipient"),
            n => write!(f, "{n} recipients"),
        }
    }
}

fn reply_text(reply: &Response) -> String {
    let lines: Vec<&str> = reply.message().collect();
    format!("{} {}", reply.code(), lines.join(" "))
}

#[derive(Debug, Default)]
struct MailPlugin;

impl Plugin for MailPlugin {
    const NAME: &'static str = "mail";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    /// Read by [`Mailing::parse`], which words its own errors.
    type Params = Map<String, Value>;

    fn validate(&self, params: &Self::Params) -> Result<(), Error> {
        Mailing::parse(params).map(drop)
    }

    fn run(&self, ctx: &Context, params: Self::Params) -> Result<(), Error> {
        let mailing = Mailing::parse(&params)?;
        let login = match &mailing.login {
            Some(login) => Some((login.username.as_str(), login.credentials()?)),
            None => None,
        };
        let mail = mailing.message()?;
        let recipients = Recipients(mailing.to.len());
        check(ctx)?;
        tracing::info!("sending mail to {recipients} via {}", mailing.server());
        let wait = Wait::new(ctx);
        let mut session = Session::open(&mailing, ctx, &wait)?;
        let sent = session
            .starttls()
            .and_then(|()| match &login {
                Some((username, credentials)) => session.login(username, credentials),
                None => Ok(()),
            })
            .and_then(|()| session.send(&mail));
        let server = &session.server;
        match sent {
            Ok(reply) => {
                // The mail is the server's now; a failed goodbye changes nothing.
                let _ = session.connection.quit();
                tracing::info!("{server} accepted the mail: {}", reply_text(&reply));
                ctx.set_message(&format!("sent to {recipients} via {server}"));
                Ok(())
            }
            Err(error) => {
                session.connection.abort();
                Err(error)
            }
        }
    }
}

export_plugin!(MailPlugin);

#[cfg(test)]
mod tests;
