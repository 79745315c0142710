//! A small HTTP/1.1 server on 127.0.0.1: it records every request it gets and answers each with
//! the same configured status, body and delay, over plain TCP or TLS.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Vec<u8>,
    /// How long to wait after reading a request before answering it.
    pub delay: Duration,
    /// How long to wait between the head of the answer and its body.
    pub body_delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            body: Vec::new(),
            delay: Duration::ZERO,
            body_delay: Duration::ZERO,
        }
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    pub fn body_delay(mut self, delay: Duration) -> Self {
        self.body_delay = delay;
        self
    }
}

/// One request as the server read it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub target: String,
    /// Names in lower case, in the order sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    scheme: &'static str,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Server {
    pub fn start(reply: Reply) -> Self {
        Self::listen(reply, None)
    }

    pub fn start_tls(reply: Reply, tls: Arc<ServerConfig>) -> Self {
        Self::listen(reply, Some(tls))
    }

    fn listen(reply: Reply, tls: Option<Arc<ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let server = Self {
            addr,
            scheme: if tls.is_some() { "https" } else { "http" },
            requests: Arc::clone(&requests),
        };
        // Lives as long as the test process; each connection gets its own thread so that a
        // delayed answer holds up nothing else.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let reply = reply.clone();
                let requests = Arc::clone(&requests);
                let tls = tls.clone();
                std::thread::spawn(move || {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(30)))
                        .unwrap();
                    // The answer goes out in pieces; without this the body would wait for the
                    // client's delayed ACK of the head.
                    stream.set_nodelay(true).unwrap();
                    match tls {
                        Some(config) => {
                            let connection = ServerConnection::new(config).unwrap();
                            serve(StreamOwned::new(connection, stream), &reply, &requests);
                        }
                        None => serve(stream, &reply, &requests),
                    }
                });
            }
        });
        server
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// Serves one request; a client that goes away or fails the TLS handshake just ends it.
fn serve(stream: impl Read + Write, reply: &Reply, requests: &Mutex<Vec<Recorded>>) {
    let mut reader = BufReader::new(stream);
    let Some(request) = read_request(&mut reader) else {
        return;
    };
    requests.lock().unwrap().push(request);
    std::thread::sleep(reply.delay);
    let reason = ureq::http::StatusCode::from_u16(reply.status)
        .ok()
        .and_then(|status| status.canonical_reason())
        .unwrap_or("Whatever");
    let head = format!(
        "HTTP/1.1 {} {reason}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        reply.status,
        reply.body.len()
    );
    let stream = reader.get_mut();
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.flush())
        .and_then(|()| {
            std::thread::sleep(reply.body_delay);
            stream.write_all(&reply.body)
        })
        .and_then(|()| stream.flush());
}

fn read_request(reader: &mut impl BufRead) -> Option<Recorded> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut words = line.split_whitespace();
    let method = words.next()?.to_owned();
    let target = words.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (name, value) = line.split_once(':')?;
        headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
    }
    let length = headers
        .iter()
        .find(|(name, _)| name == "content-length")
        .map_or(0, |(_, value)| value.parse().unwrap());
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method,
        target,
        headers,
        body,
    })
}

/// A port on 127.0.0.1 where nothing listens: bound, then released.
pub fn closed_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}
