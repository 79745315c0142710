//! The HTTP side: bind `metrics_listen` and `web_listen` (one listener when they name the same
//! address), accept connections within a cap, and answer each request read-only: GET and HEAD,
//! anything else 405. hyper parses and writes HTTP/1.1; this module decides what is served where.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::site::Site;
use crate::config::{Config, DaemonSettings};
use crate::control::server::Incoming as ControlRequest;
use crate::store::postgres::PgDatabase;

/// A response with its whole body in memory: every page is rendered before it is sent.
pub(crate) type Reply = Response<Full<Bytes>>;

/// Connections served at once, all listeners together: those that have sent a byte. A browser
/// opens about six, a scraper one: this leaves room for a few people and Prometheus without
/// letting idle clients take the daemon's descriptors.
const MAX_CONNECTIONS: usize = 64;

/// Connections accepted that have no slot yet: those that have not sent a byte (a browser's
/// speculative preconnect, or a client that only holds a socket open) wait apart, so that they
/// never take a slot of [`MAX_CONNECTIONS`] from a client with a request, and those that have
/// spoken wait here for a slot. Further clients wait to be accepted.
const MAX_SILENT: usize = 256;

/// Free slots below which a connection gets [`HEAD_TIMEOUT_BUSY`] to send its head: when slots
/// run short, clients that trickle their heads give them up sooner.
const FEW_SLOTS: usize = MAX_CONNECTIONS / 4;

/// How long a client may take to send a request's head once slots run short.
const HEAD_TIMEOUT_BUSY: Duration = Duration::from_secs(2);

/// The longest path and query answered; a longer one gets a 414 of ours, with the headers
/// every response carries. (Beyond 64 KiB the head does not fit hyper's buffer, and hyper
/// answers by itself, with a bare status.)
const MAX_URI: usize = 8 * 1024;

/// How long a client may take to send its first byte, and then its request's head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// After this long a connection is closed once its current request is answered, so a browser's
/// idle keep-alive connection does not hold a slot forever.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(60);

/// The exposition `/metrics` serves.
pub(crate) trait MetricsSource: Send + Sync + std::fmt::Debug {
    /// The content type and text of a scrape whose `Accept` header is `accept`.
    fn scrape(&self, accept: Option<&str>) -> (&'static str, String);
}

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Serves {
    metrics: bool,
    web: bool,
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot listen on {key} = \"{address}\": {cause}; free the port or set another {key} in [daemon]"
)]
pub(crate) struct BindError {
    key: &'static str,
    address: SocketAddr,
    cause: std::io::Error,
}

/// The bound listeners of `metrics_listen` and `web_listen`.
#[derive(Debug)]
pub(crate) struct Listeners {
    bound: Vec<(TcpListener, Serves)>,
}

impl Listeners {
    /// Binds what `[daemon]` asks for; nothing when neither key is set.
    pub(crate) async fn bind(daemon: &DaemonSettings) -> Result<Listeners, BindError> {
        let mut wanted: Vec<(&'static str, SocketAddr, Serves)> = Vec::new();
        if let Some(address) = daemon.metrics_listen {
            wanted.push((
                "metrics_listen",
                address,
                Serves {
                    metrics: true,
                    web: false,
                },
            ));
        }
        if let Some(address) = daemon.web_listen {
            match wanted.iter_mut().find(|(_, at, _)| *at == address) {
                Some((_, _, serves)) => serves.web = true,
                None => wanted.push((
                    "web_listen",
                    address,
                    Serves {
                        metrics: false,
                        web: true,
                    },
                )),
            }
        }
        let mut bound = Vec::new();
        for (key, address, serves) in wanted {
            let listener = TcpListener::bind(address)
                .await
                .map_err(|cause| BindError {
                    key,
                    address,
                    cause,
                })?;
            if serves.metrics {
                tracing::info!(%address, "serving Prometheus metrics at /metrics");
            }
            if serves.web {
                tracing::info!(%address, "serving the web view at http://{address}/");
            }
            bound.push((listener, serves));
        }
        Ok(Listeners { bound })
    }

    /// Serves until the task is aborted. The web view reads the history in `config`'s
    /// database, or in `cluster`, the database a cluster's nodes share, and asks the engine,
    /// through `engine`, what only it knows.
    pub(crate) async fn serve(
        self,
        config: Arc<Config>,
        engine: mpsc::Sender<ControlRequest>,
        metrics: Arc<dyn MetricsSource>,
        cluster: Option<PgDatabase>,
    ) {
        let site = self
            .bound
            .iter()
            .any(|(_, serves)| serves.web)
            .then(|| Arc::new(Site::new(&config, engine, cluster)));
        let handler = Arc::new(Handler { site, metrics });
        let limits = Arc::new(Limits {
            silent: Arc::new(Semaphore::new(MAX_SILENT)),
            slots: Arc::new(Semaphore::new(MAX_CONNECTIONS)),
        });
        let loops = self.bound.into_iter().map(|(listener, serves)| {
            accept_loop(listener, serves, Arc::clone(&handler), Arc::clone(&limits))
        });
        run_all(loops).await;
    }
}

/// Runs the accept loops as tasks of one set, which aborts them all when it is dropped: when
/// the task serving them is aborted.
async fn run_all(loops: impl Iterator<Item = impl Future<Output = ()> + Send + 'static>) {
    let mut set = tokio::task::JoinSet::new();
    for accept in loops {
        set.spawn(accept);
    }
    while set.join_next().await.is_some() {}
}

/// The caps on connections, shared by every listener.
#[derive(Debug)]
struct Limits {
    /// Connections accepted that have not sent a byte yet.
    silent: Arc<Semaphore>,
    /// Connections being served.
    slots: Arc<Semaphore>,
}

async fn accept_loop(
    listener: TcpListener,
    serves: Serves,
    handler: Arc<Handler>,
    limits: Arc<Limits>,
) {
    loop {
        let Ok(silent) = Arc::clone(&limits.silent).acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, _)) => {
                let handler = Arc::clone(&handler);
                let limits = Arc::clone(&limits);
                tokio::spawn(async move {
                    if !first_byte(&stream).await {
                        return;
                    }
                    // Still counted among the silent until it has a slot, so that clients
                    // waiting for one stay bounded too.
                    let Ok(_slot) = limits.slots.acquire().await else {
                        return;
                    };
                    drop(silent);
                    let head_timeout = if limits.slots.available_permits() < FEW_SLOTS {
                        HEAD_TIMEOUT_BUSY
                    } else {
                        HEAD_TIMEOUT
                    };
                    connection(stream, serves, handler, head_timeout).await;
                });
            }
            Err(e) => {
                tracing::warn!("HTTP accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether the client sent a byte within [`HEAD_TIMEOUT`] (and did not just close).
async fn first_byte(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut byte)).await,
        Ok(Ok(1..))
    )
}

async fn connection(
    stream: TcpStream,
    serves: Serves,
    handler: Arc<Handler>,
    head_timeout: Duration,
) {
    let service = service_fn(move |request: Request<Incoming>| {
        let handler = Arc::clone(&handler);
        async move { Ok::<_, Infallible>(handler.answer(&request, serves).await) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .title_case_headers(true)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(head_timeout, connection).await;
        }
    }
}

/// Answers requests for every listener.
#[derive(Debug)]
struct Handler {
    site: Option<Arc<Site>>,
    metrics: Arc<dyn MetricsSource>,
}

impl Handler {
    async fn answer(&self, request: &Request<Incoming>, serves: Serves) -> Reply {
        let method = request.method();
        let uri_len = request
            .uri()
            .path_and_query()
            .map_or(0, |target| target.as_str().len());
        let mut reply = if uri_len > MAX_URI {
            plain(
                StatusCode::URI_TOO_LONG,
                format!(
                    "the request's address is {uri_len} bytes long; at most {MAX_URI} are \
                     served\n"
                ),
            )
        } else if method != Method::GET && method != Method::HEAD {
            let mut reply = plain(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not served here: this server is read-only (GET and HEAD)\n"),
            );
            reply
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            reply
        } else if serves.metrics && request.uri().path() == "/metrics" {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|value| value.to_str().ok());
            let (content_type, text) = self.metrics.scrape(accept);
            let mut reply = Response::new(Full::new(Bytes::from(text)));
            reply
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
            reply
        } else if let Some(site) = self.site.as_ref().filter(|_| serves.web) {
            super::pages::route(site, request.uri()).await
        } else {
            plain(
                StatusCode::NOT_FOUND,
                "only GET /metrics is served here\n".to_owned(),
            )
        };
        secure(reply.headers_mut());
        reply
    }
}

/// A plain-text response.
pub(crate) fn plain(status: StatusCode, text: String) -> Reply {
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    reply
}

/// Headers every response carries: scripts, styles and images only from this origin (no
/// inline ones), never framed, never sniffed into another type, and no referrer leaked to
/// other sites.
fn secure(headers: &mut hyper::HeaderMap) {
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
             frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}
