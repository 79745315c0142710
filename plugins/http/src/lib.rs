//! The `http` plugin: makes one HTTP request and checks the answer's status, for health checks,
//! webhooks and API calls on a schedule.
//!
//! # Params
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `url` | string | required | `http://` or `https://` URL to request; characters a URL cannot hold, such as spaces, are percent-encoded |
//! | `method` | string | `"GET"` | the HTTP method, in any case (`post` is sent as `POST`) |
//! | `headers` | table of strings | none | request headers, such as `Authorization` |
//! | `body` | string | none | the request body, sent as is (set `Content-Type` in `headers`) |
//! | `expect_status` | integer or array of integers | any 2xx | the statuses that count as success |
//! | `timeout` | string | `"30s"` | how long the whole exchange may take: `500ms`, `30s`, `2m`, `1m30s`, `1h` |
//!
//! Any other key is an error, so `pacer check` reports a misspelled one. A chained run's
//! `upstream` table is accepted and ignored: `pacerd` has already expanded `{upstream.job}`,
//! `{upstream.id}`, `{upstream.status}` and `{upstream.error}` in the string params.
//!
//! # Output
//!
//! The log names the method and URL (never the headers). The response's status line and the
//! first 64 KiB of its body go to stdout, which is the run's output; a longer body is cut there,
//! with a note saying so. The body is shown for unexpected statuses too, since it often says what
//! went wrong. The run succeeds when the status is expected, and its message is the status.
//!
//! ```text
//! [info] POST https://hc.example.com/ping/backup-server
//! HTTP 200 OK
//! {"ok": true}
//! ```
//!
//! Redirects are not followed: a 3xx answer is the response, so a moved URL shows up as an
//! unexpected status instead of being silently followed (`expect_status = 301` can require one).
//! The first of `ALL_PROXY`, `HTTPS_PROXY` and `HTTP_PROXY` set in the environment names a proxy
//! for every request; `NO_PROXY` lists the hosts reached directly.
//!
//! # Errors
//!
//! - `cannot connect to http://127.0.0.1:9/: connection refused`
//! - ``cannot resolve host `example.invalid` of https://example.invalid/: Name or service not
//!   known``
//! - `no response from https://example.com/slow within 2s`; when the job's own `timeout` is
//!   shorter, the run ends `timed_out` at it, as any run that outlasts its timeout
//! - `unexpected status 503 Service Unavailable from https://example.com/ (expected 2xx)`, or
//!   `(expected 200 or 204)` with `expect_status = [200, 204]`
//! - `TLS with example.com:443 failed: invalid peer certificate: UnknownIssuer (...)`
//!
//! # TLS
//!
//! `https://` URLs are verified against the system's CA store, found as OpenSSL finds it
//! (`/etc/ssl/certs` and the like). `SSL_CERT_FILE` (a PEM bundle) and `SSL_CERT_DIR` in the
//! daemon's environment replace it, for example to trust an internal CA.
//!
//! # Example
//!
//! ```toml
//! [[jobs]]
//! name = "ping-healthcheck"
//! schedule = "*/5 * * * *"
//! plugin = "http"
//! [jobs.params]
//! url = "https://hc.example.com/ping/backup-server"
//! method = "POST"
//! headers = { Authorization = "Bearer 3f1c..." }
//! body = "backup server alive"
//! expect_status = [200, 204]
//! timeout = "10s"
//! ```

use std::borrow::Cow;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::Duration;

use pacer_plugin_api::{Cancelled, Context, Error, Plugin, ResultExt, bail, export_plugin};
use serde_json::{Map, Value};
use ureq::Agent;
use ureq::http::uri::Scheme;
use ureq::http::{HeaderName, HeaderValue, Method, Request as HttpRequest, StatusCode, Uri};
use ureq::tls::{Certificate, RootCerts, TlsConfig};

use pacer_plugin_api::fields::{Fields, describe};

/// How much of the response body goes to the run's output. Enough for any error page or API
/// answer worth reading, small enough that a large download does not push the rest of the
/// output out of the daemon's `output_limit`.
const BODY_LIMIT: usize = 64 * 1024;

const KEYS: [&str; 6] = [
    "url",
    "method",
    "headers",
    "body",
    "expect_status",
    "timeout",
];

const DEFAULT_TIMEOUT: &str = "30s";

const USER_AGENT: &str = concat!("pacer-http/", env!("CARGO_PKG_VERSION"));

const EXPECT_STATUS_HINT: &str =
    "an HTTP status (100-599) or a list of them, such as 200 or [200, 204]";

const TIMEOUT_HINT: &str = r#"a duration such as "30s", "1m30s" or "500ms" (units ms, s, m, h)"#;

/// A request as the params describe it, checked. (No `Debug`: its headers may hold secrets.)
struct Request {
    method: Method,
    url: Uri,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: Option<String>,
    expect: Expect,
    timeout: Duration,
    /// `timeout` as the job wrote it, for messages.
    timeout_text: String,
}

impl Request {
    fn parse(params: &Map<String, Value>) -> Result<Self, Error> {
        let fields = Fields::new(params, &KEYS)?;
        let url = parse_url(
            fields.required_string("url", r#"a URL such as "https://example.com/health""#)?,
        )?;
        let method = match fields.string("method", r#"an HTTP method such as "POST""#)? {
            Some(text) => Method::from_bytes(text.to_ascii_uppercase().as_bytes())
                .ok()
                .with_context(|| {
                    format!("`method` must be an HTTP method such as GET or POST, not {text:?}")
                })?,
            None => Method::GET,
        };
        let headers = match fields.get("headers") {
            Some(value) => parse_headers(value)?,
            None => Vec::new(),
        };
        let body = fields
            .string("body", "a string (the request body)")?
            .map(str::to_owned);
        let expect = match fields.get("expect_status") {
            Some(value) => Expect::parse(value)?,
            None => Expect::Success,
        };
        let timeout_text = fields
            .string("timeout", TIMEOUT_HINT)?
            .unwrap_or(DEFAULT_TIMEOUT);
        let timeout = parse_duration(timeout_text)
            .with_context(|| format!("`timeout` must be {TIMEOUT_HINT}, not {timeout_text:?}"))?;
        if timeout.is_zero() {
            bail!("`timeout` must be longer than 0s");
        }
        Ok(Self {
            method,
            url,
            headers,
            body,
            expect,
            timeout,
            timeout_text: timeout_text.to_owned(),
        })
    }

    /// Sends the request, writes the status and the start of the body to `out`, and checks
    /// the status.
    fn send(&self, wait: &Wait, out: &mut dyn Write) -> Result<StatusCode, Error> {
        let agent = self.agent(wait.duration)?;
        let mut builder = HttpRequest::builder()
            .method(self.method.clone())
            .uri(self.url.clone());
        for (name, value) in &self.headers {
            builder = builder.header(name, value);
        }
        // Two calls because the body's type decides whether ureq sends one at all.
        let result = match &self.body {
            Some(body) => agent.run(builder.body(body.as_bytes())?),
            None => agent.run(builder.body(())?),
        };
        let response = result.map_err(|e| self.failure(e, wait))?;
        let status = response.status();
        let mut reader = response.into_body().into_reader();
        let mut body = Vec::new();
        let read = (&mut reader)
            .take(BODY_LIMIT as u64)
            .read_to_end(&mut body)
            .and_then(|_| {
                // One byte more tells whether the body was cut.
                let mut probe = [0; 1];
                reader.read(&mut probe)
            });
        let truncated = match read {
            Ok(more) => more > 0,
            // ureq hands its own errors through `Read` wrapped in I/O errors; this unwraps them.
            Err(e) => match ureq::Error::from(e) {
                ureq::Error::Timeout(_) => bail!(
                    "the response from {} did not finish {}",
                    self.url,
                    wait.phrase
                ),
                ureq::Error::Io(e) => bail!("reading the response from {}: {e}", self.url),
                other => bail!("reading the response from {}: {other}", self.url),
            },
        };
        show(out, status, &body, truncated).context("writing the response to the output")?;
        if !self.expect.accepts(status) {
            bail!(
                "unexpected status {} from {} (expected {})",
                status_text(status),
                self.url,
                self.expect
            );
        }
        Ok(status)
    }

    fn agent(&self, timeout: Duration) -> Result<Agent, Error> {
        let mut config = Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .allow_non_standard_methods(true)
            .user_agent(USER_AGENT)
            .timeout_global(Some(timeout));
        if self.url.scheme() == Some(&Scheme::HTTPS) {
            config = config.tls_config(TlsConfig::builder().root_certs(system_roots()?).build());
        }
        Ok(config.build().new_agent())
    }

    /// Says what went wrong with the exchange in the operator's terms.
    fn failure(&self, error: ureq::Error, wait: &Wait) -> Error {
        let url = &self.url;
        match error {
            ureq::Error::Timeout(_) => {
                Error::msg(format_args!("no response from {url} {}", wait.phrase))
            }
            ureq::Error::HostNotFound => Error::msg(format_args!(
                "cannot resolve host `{}` of {url}: it has no address",
                self.host()
            )),
            ureq::Error::Io(e) => self.io_failure(&e, wait),
            ureq::Error::Rustls(e) => self.tls_failure(&e),
            other => Error::msg(format_args!("request to {url} failed: {other}")),
        }
    }

    fn io_failure(&self, error: &io::Error, wait: &Wait) -> Error {
        let url = &self.url;
        let connect = |why: &str| Error::msg(format_args!("cannot connect to {url}: {why}"));
        match error.kind() {
            io::ErrorKind::ConnectionRefused => connect("connection refused"),
            io::ErrorKind::HostUnreachable => connect("host unreachable"),
            io::ErrorKind::NetworkUnreachable => connect("network unreachable"),
            io::ErrorKind::TimedOut => {
                Error::msg(format_args!("no response from {url} {}", wait.phrase))
            }
            _ => {
                if let Some(tls) = error
                    .get_ref()
                    .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                {
                    return self.tls_failure(tls);
                }
                // std reports a failed name lookup (getaddrinfo) with this wording and no
                // stable error kind; it is the only failure that happens before connecting.
                let text = error.to_string();
                if let Some(why) = text.strip_prefix("failed to lookup address information: ") {
                    return Error::msg(format_args!(
                        "cannot resolve host `{}` of {url}: {why}",
                        self.host()
                    ));
                }
                Error::msg(format_args!("request to {url} failed: {text}"))
            }
        }
    }

    fn tls_failure(&self, error: &rustls::Error) -> Error {
        let port = self.url.port_u16().unwrap_or(443);
        let hint = if matches!(error, rustls::Error::InvalidCertificate(_)) {
            " (trusted CAs come from the system's store, or from SSL_CERT_FILE and SSL_CERT_DIR \
             when set)"
        } else {
            ""
        };
        Error::msg(format_args!(
            "TLS with {}:{port} failed: {error}{hint}",
            self.host()
        ))
    }

    fn host(&self) -> &str {
        self.url.host().unwrap_or_default()
    }
}

fn parse_url(text: &str) -> Result<Uri, Error> {
    match text.split_once("://") {
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => {}
        Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => {}
        Some((scheme, _)) => bail!("`url` must start with http:// or https://, not {scheme}://"),
        None => bail!("`url` must start with http:// or https://: {text:?}"),
    }
    let url: Uri = encode_path(text)
        .parse()
        .map_err(|e| Error::msg(format_args!("`url` {text:?} is not a valid URL: {e}")))?;
    let Some(authority) = url.authority() else {
        bail!("`url` {text:?} names no host");
    };
    if authority.as_str().contains('@') {
        // Sent as is they would not authenticate anything, and they would show up in the log.
        bail!(
            "`url` must not hold credentials (user:password@); send them in `headers`, \
             such as Authorization = \"Basic ...\""
        );
    }
    if authority.host().is_empty() {
        bail!("`url` {text:?} names no host");
    }
    Ok(url)
}

/// Percent-encodes the characters that may not appear in a URL's path, query or fragment,
/// such as the spaces that an expanded `{upstream.error}` brings, and leaves the scheme and host
/// as written (a space there is a mistake to report).
fn encode_path(url: &str) -> Cow<'_, str> {
    let authority = url.find("://").map_or(0, |i| i + 3);
    let start = url[authority..]
        .find(['/', '?', '#'])
        .map_or(url.len(), |i| authority + i);
    let allowed = |c: char| {
        c.is_ascii_graphic() && !matches!(c, '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}')
    };
    if url[start..].chars().all(allowed) {
        return Cow::Borrowed(url);
    }
    let mut encoded = String::with_capacity(url.len() + 16);
    encoded.push_str(&url[..start]);
    for c in url[start..].chars() {
        if allowed(c) {
            encoded.push(c);
        } else {
            let mut bytes = [0; 4];
            for byte in c.encode_utf8(&mut bytes).bytes() {
                encoded.push_str(&format!("%{byte:02X}"));
            }
        }
    }
    Cow::Owned(encoded)
}

fn parse_headers(value: &Value) -> Result<Vec<(HeaderName, HeaderValue)>, Error> {
    let Value::Object(table) = value else {
        bail!(
            r#"`headers` must be a table of header names and values, such as {{ Authorization = "Bearer ..." }}, not {}"#,
            describe(value)
        );
    };
    let mut headers = Vec::with_capacity(table.len());
    for (name, value) in table {
        let header = HeaderName::from_bytes(name.as_bytes())
            .ok()
            .with_context(|| format!("`headers` has an invalid header name {name:?}"))?;
        let Value::String(text) = value else {
            bail!(
                "header `{name}` in `headers` must be a string, not {}",
                describe(value)
            );
        };
        let value = HeaderValue::from_str(text).ok().with_context(|| {
            format!("header `{name}` in `headers` holds a line break or another control character")
        })?;
        headers.push((header, value));
    }
    Ok(headers)
}

/// The statuses that make a run succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// Any 2xx.
    Success,
    /// One of these.
    Listed(Vec<u16>),
}

impl Expect {
    fn parse(value: &Value) -> Result<Self, Error> {
        let invalid = |value: &Value| {
            Error::msg(format_args!(
                "`expect_status` must be {EXPECT_STATUS_HINT}, not {}",
                describe(value)
            ))
        };
        let status = |value: &Value| {
            value
                .as_u64()
                .filter(|code| (100..=599).contains(code))
                .and_then(|code| u16::try_from(code).ok())
                .ok_or_else(|| invalid(value))
        };
        match value {
            Value::Array(items) if items.is_empty() => Err(invalid(value)),
            Value::Array(items) => Ok(Self::Listed(
                items.iter().map(status).collect::<Result<_, _>>()?,
            )),
            _ => Ok(Self::Listed(vec![status(value)?])),
        }
    }

    fn accepts(&self, status: StatusCode) -> bool {
        match self {
            Self::Success => status.is_success(),
            Self::Listed(codes) => codes.contains(&status.as_u16()),
        }
    }
}

impl fmt::Display for Expect {
    /// `2xx`, `200`, `200 or 204`, `200, 201 or 204`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let codes = match self {
            Self::Success => return f.write_str("2xx"),
            Self::Listed(codes) => codes,
        };
        for (i, code) in codes.iter().enumerate() {
            if i > 0 {
                f.write_str(if i + 1 == codes.len() { " or " } else { ", " })?;
            }
            write!(f, "{code}")?;
        }
        Ok(())
    }
}

/// `503 Service Unavailable`, or the bare number for a status without a standard reason.
fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

/// Parses `<integer><unit>` parts such as `1m30s`, with units `ms`, `s`, `m` and `h`, as the
/// daemon's own config does.
fn parse_duration(text: &str) -> Option<Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let value: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let millis: u64 = match &rest[..unit] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            _ => return None,
        };
        rest = &rest[unit..];
        total = total.checked_add(Duration::from_millis(value.checked_mul(millis)?))?;
    }
    Some(total)
}

/// How long the exchange may take, and how an error says so.
#[derive(Debug)]
struct Wait {
    duration: Duration,
    /// `within 30s`, or `before the job's timeout` when that comes first.
    phrase: String,
}

impl Wait {
    fn new(request: &Request, ctx: &Context) -> Self {
        match ctx.remaining() {
            Some(left) if left < request.timeout => Self {
                duration: left,
                phrase: "before the job's timeout".to_owned(),
            },
            _ => Self::of(request),
        }
    }

    fn of(request: &Request) -> Self {
        Self {
            duration: request.timeout,
            phrase: format!("within {}", request.timeout_text),
        }
    }
}

/// The roots that `https://` URLs are verified against: the system's CA store, or what
/// `SSL_CERT_FILE` and `SSL_CERT_DIR` name, as OpenSSL-based tools read them.
fn system_roots() -> Result<RootCerts, Error> {
    let found = rustls_native_certs::load_native_certs();
    if found.certs.is_empty() {
        let why: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        bail!(
            "no trusted CA certificates found for https{}: install the system's CA bundle \
             (ca-certificates) or point SSL_CERT_FILE at one",
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join("; "))
            }
        );
    }
    for error in &found.errors {
        tracing::debug!("skipped part of the CA store: {error}");
    }
    Ok(RootCerts::new_with_certs(
        &found
            .certs
            .iter()
            .map(|der| Certificate::from_der(der).to_owned())
            .collect::<Vec<_>>(),
    ))
}

/// Writes the status line and the body (cut at [`BODY_LIMIT`]) as the run's output.
fn show(out: &mut dyn Write, status: StatusCode, body: &[u8], truncated: bool) -> io::Result<()> {
    writeln!(out, "HTTP {}", status_text(status))?;
    if !body.is_empty() {
        out.write_all(String::from_utf8_lossy(body).as_bytes())?;
        if !body.ends_with(b"\n") {
            writeln!(out)?;
        }
    }
    if truncated {
        writeln!(out, "[response body cut after {BODY_LIMIT} bytes]")?;
    }
    out.flush()
}

#[derive(Debug, Default)]
struct Http;

impl Plugin for Http {
    const NAME: &'static str = "http";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    /// Read by [`Request::parse`], which words its own errors.
    type Params = Map<String, Value>;

    fn validate(&self, params: &Self::Params) -> Result<(), Error> {
        Request::parse(params).map(drop)
    }

    fn run(&self, ctx: &Context, params: Self::Params) -> Result<(), Error> {
        let request = Request::parse(&params)?;
        if ctx.is_cancelled() {
            return Err(Cancelled.into());
        }
        tracing::info!("{} {}", request.method, request.url);
        let status = request.send(&Wait::new(&request, ctx), &mut io::stdout().lock())?;
        ctx.set_message(&status_text(status));
        Ok(())
    }
}

export_plugin!(Http);

#[cfg(test)]
mod tests;
