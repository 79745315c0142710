//! A small SMTP server on 127.0.0.1 that speaks what the plugin needs (EHLO, STARTTLS, AUTH
//! PLAIN and LOGIN, MAIL, RCPT, DATA) and records each session.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// How the server behaves.
#[derive(Clone, Default)]
pub struct Setup {
    /// Offers STARTTLS with this config.
    pub tls: Option<Arc<ServerConfig>>,
    /// Offers AUTH with these mechanisms (`PLAIN`, `LOGIN`) and accepts this user and password.
    pub auth: Option<(&'static str, &'static str, &'static str)>,
    /// Recipients refused with 550.
    pub refuse: Vec<&'static str>,
    /// How long to wait before the greeting.
    pub greeting_delay: Duration,
}

/// What one client did in one connection.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Every EHLO argument, in order (a second one follows STARTTLS).
    pub ehlo: Vec<String>,
    pub tls: bool,
    /// The user and password of a successful login.
    pub login: Option<(String, String)>,
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
    /// The message as received, dot-stuffing undone, lines ending in CRLF.
    pub data: Option<String>,
}

impl Session {
    /// The message's header fields (unfolded) and its body.
    pub fn message(&self) -> (Vec<(String, String)>, String) {
        let data = self.data.as_deref().expect("a message was sent");
        let (head, body) = data.split_once("\r\n\r\n").expect("headers end");
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                fields.last_mut().expect("a field to continue").1 += line;
            } else {
                let (name, value) = line.split_once(':').expect("a header field");
                fields.push((name.to_owned(), value.trim_start().to_owned()));
            }
        }
        (fields, body.to_owned())
    }
}

#[derive(Debug)]
pub struct SmtpServer {
    addr: SocketAddr,
    sessions: Arc<Mutex<Vec<Arc<Mutex<Session>>>>>,
}

impl SmtpServer {
    pub fn start(setup: Setup) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let sessions: Arc<Mutex<Vec<Arc<Mutex<Session>>>>> = Arc::default();
        let recorded = Arc::clone(&sessions);
        // Lives as long as the test process, one thread per connection.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let session = Arc::new(Mutex::new(Session::default()));
                recorded.lock().unwrap().push(Arc::clone(&session));
                let setup = setup.clone();
                std::thread::spawn(move || {
                    // A client that goes away or fails the TLS handshake just ends the session.
                    let _ = serve(stream, &setup, &session);
                });
            }
        });
        Self { addr, sessions }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn sessions(&self) -> Vec<Session> {
        self.sessions
            .lock()
            .unwrap()
            .iter()
            .map(|session| session.lock().unwrap().clone())
            .collect()
    }

    /// The one session there was.
    pub fn session(&self) -> Session {
        let sessions = self.sessions();
        assert_eq!(sessions.len(), 1, "{sessions:#?}");
        sessions.into_iter().next().unwrap()
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.read(buf),
            Self::Tls(stream) => stream.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(stream) => stream.write(buf),
            Self::Tls(stream) => stream.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(stream) => stream.flush(),
            Self::Tls(stream) => stream.flush(),
        }
    }
}

fn serve(stream: TcpStream, setup: &Setup, session: &Mutex<Session>) -> io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    // Replies go out in pieces; without this each would wait for the client's delayed ACK.
    stream.set_nodelay(true)?;
    std::thread::sleep(setup.greeting_delay);
    let mut conn = BufReader::new(Stream::Plain(stream));
    let record = |change: &dyn Fn(&mut Session)| change(&mut session.lock().unwrap());
    reply(&mut conn, "220 test.example ESMTP ready")?;
    let mut logged_in = false;
    loop {
        let line = read_line(&mut conn)?;
        let (verb, argument) = line.split_once(' ').unwrap_or((&line, ""));
        match verb.to_ascii_uppercase().as_str() {
            "EHLO" => {
                record(&|s| s.ehlo.push(argument.to_owned()));
                let tls = matches!(conn.get_ref(), Stream::Tls(_));
                let mut lines = vec!["test.example greets you".to_owned()];
                if setup.tls.is_some() && !tls {
                    lines.push("STARTTLS".to_owned());
                }
                if let Some((mechanisms, _, _)) = setup.auth {
                    lines.push(format!("AUTH {mechanisms}"));
                }
                lines.push("8BITMIME".to_owned());
                let last = lines.len() - 1;
                for (i, text) in lines.iter().enumerate() {
                    let sep = if i == last { ' ' } else { '-' };
                    reply(&mut conn, &format!("250{sep}{text}"))?;
                }
            }
            "STARTTLS" => {
                let Some(config) = &setup.tls else {
                    reply(&mut conn, "502 5.5.1 STARTTLS not offered")?;
                    continue;
                };
                reply(&mut conn, "220 2.0.0 Ready to start TLS")?;
                assert!(
                    conn.buffer().is_empty(),
                    "the client sent more after STARTTLS"
                );
                let Stream::Plain(tcp) = conn.into_inner() else {
                    unreachable!("STARTTLS is offered only before TLS")
                };
                let tls = ServerConnection::new(Arc::clone(config)).unwrap();
                conn = BufReader::new(Stream::Tls(Box::new(StreamOwned::new(tls, tcp))));
                record(&|s| s.tls = true);
            }
            "AUTH" => {
                let Some((_, user, password)) = setup.auth else {
                    reply(&mut conn, "502 5.5.1 AUTH not offered")?;
                    continue;
                };
                let (mechanism, initial) = argument.split_once(' ').unwrap_or((argument, ""));
                let given = match mechanism.to_ascii_uppercase().as_str() {
                    "PLAIN" => {
                        let encoded = if initial.is_empty() {
                            reply(&mut conn, "334 ")?;
                            read_line(&mut conn)?
                        } else {
                            initial.to_owned()
                        };
                        let decoded = decode_base64(&encoded);
                        let mut parts = decoded.split('\0').skip(1);
                        let user = parts.next().unwrap_or_default().to_owned();
                        (user, parts.next().unwrap_or_default().to_owned())
                    }
                    "LOGIN" => {
                        reply(&mut conn, "334 VXNlcm5hbWU6")?;
                        let user = decode_base64(&read_line(&mut conn)?);
                        reply(&mut conn, "334 UGFzc3dvcmQ6")?;
                        (user, decode_base64(&read_line(&mut conn)?))
                    }
                    _ => {
                        reply(&mut conn, "504 5.5.4 Unrecognized authentication type")?;
                        continue;
                    }
                };
                if given.0 == user && given.1 == password {
                    logged_in = true;
                    record(&|s| s.login = Some(given.clone()));
                    reply(&mut conn, "235 2.7.0 Authentication successful")?;
                } else {
                    reply(&mut conn, "535 5.7.8 Authentication credentials invalid")?;
                }
            }
            "MAIL" => {
                if setup.auth.is_some() && !logged_in {
                    reply(&mut conn, "530 5.7.0 Authentication required")?;
                    continue;
                }
                let address = angle_address(argument);
                record(&|s| s.mail_from = Some(address.clone()));
                reply(&mut conn, "250 2.1.0 Ok")?;
            }
            "RCPT" => {
                let address = angle_address(argument);
                if setup.refuse.contains(&address.as_str()) {
                    reply(
                        &mut conn,
                        &format!("550 5.1.1 <{address}>: Recipient address rejected"),
                    )?;
                } else {
                    record(&|s| s.rcpt_to.push(address.clone()));
                    reply(&mut conn, "250 2.1.5 Ok")?;
                }
            }
            "DATA" => {
                reply(&mut conn, "354 End data with <CR><LF>.<CR><LF>")?;
                let mut data = String::new();
                loop {
                    let line = read_line(&mut conn)?;
                    if line == "." {
                        break;
                    }
                    data.push_str(line.strip_prefix('.').unwrap_or(&line));
                    data.push_str("\r\n");
                }
                record(&|s| s.data = Some(data.clone()));
                reply(&mut conn, "250 2.0.0 Ok: queued as TEST1")?;
            }
            "RSET" | "NOOP" => reply(&mut conn, "250 2.0.0 Ok")?,
            "QUIT" => return reply(&mut conn, "221 2.0.0 Bye"),
            _ => reply(&mut conn, "502 5.5.2 Command not recognized")?,
        }
    }
}

fn reply(conn: &mut BufReader<Stream>, line: &str) -> io::Result<()> {
    let stream = conn.get_mut();
    stream.write_all(format!("{line}\r\n").as_bytes())?;
    stream.flush()
}

/// One line without its CRLF; the end of the stream is an error that ends the session.
fn read_line(conn: &mut BufReader<Stream>) -> io::Result<String> {
    let mut line = String::new();
    if conn.read_line(&mut line)? == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

/// `FROM:<a@example.com> BODY=8BITMIME` -> `a@example.com`.
fn angle_address(argument: &str) -> String {
    let start = argument.find('<').map_or(0, |i| i + 1);
    let end = argument.find('>').unwrap_or(argument.len());
    argument[start..end].to_owned()
}

fn decode_base64(text: &str) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut bits: u32 = 0;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes().filter(|b| *b != b'=') {
        let value = ALPHABET.iter().position(|a| *a == byte).expect("base64") as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
        }
    }
    String::from_utf8(out).unwrap()
}
