//! The `http` plugin through the real daemon, against an HTTP server this test runs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pacer_tests::{Sandbox, text, wait_until};
use serde_json::Value;

/// One request as the server read it.
#[derive(Debug, Clone)]
struct Request {
    head: String,
    body: String,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// An HTTP server on 127.0.0.1 answering every request alike and recording them.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl Server {
    fn start(status: &'static str, body: &'static str, delay: Duration) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests: Arc<Mutex<Vec<Request>>> = Arc::default();
        let recorded = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                // `write!` sends the answer in pieces; without this each would wait for the
                // client's delayed ACK.
                stream.set_nodelay(true).unwrap();
                let recorded = Arc::clone(&recorded);
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut head = String::new();
                    loop {
                        let mut line = String::new();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        head.push_str(line.trim_end());
                        head.push('\n');
                    }
                    let mut request = Request {
                        head,
                        body: String::new(),
                    };
                    let length = request
                        .header("content-length")
                        .map_or(0, |n| n.parse().unwrap());
                    let mut content = vec![0; length];
                    reader.read_exact(&mut content).unwrap();
                    request.body = String::from_utf8(content).unwrap();
                    recorded.lock().unwrap().push(request);
                    std::thread::sleep(delay);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        Server { addr, requests }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
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

#[test]
fn a_scheduled_request_reaches_the_server_and_succeeds() {
    let server = Server::start("200 OK", "{\"healthy\": true}", Duration::ZERO);
    let sandbox = Sandbox::new();
    sandbox.install_bundled("http");
    sandbox.write_config(
        "",
        &format!(
            r#"
[[jobs]]
name = "ping"
schedule = "* * * * * *"
plugin = "http"
[jobs.params]
url = "{}"
method = "POST"
headers = {{ Authorization = "Bearer e2e-token", Content-Type = "text/plain" }}
body = "ping from {{upstream.job}}"
"#,
            server.url("/ping?from=pacer")
        ),
    );
    let _daemon = sandbox.start();
    let run = wait_for_run(&sandbox, "ping", "succeeded");
    assert_eq!(run["plugin"], "http");
    assert_eq!(run["error"], Value::Null);

    let request = &server.requests()[0];
    assert!(
        request.head.starts_with("POST /ping?from=pacer HTTP/1.1\n"),
        "{request:?}"
    );
    assert_eq!(request.header("authorization"), Some("Bearer e2e-token"));
    assert_eq!(request.header("content-type"), Some("text/plain"));
    // Not a chained run, so the placeholder is left as written.
    assert_eq!(request.body, "ping from {upstream.job}");

    let id = run["id"].as_i64().unwrap().to_string();
    let detail = sandbox.pacer_json(&["show", &id]);
    let output = text(&detail, "output");
    assert!(
        output.contains(&format!("POST {}", server.url("/ping?from=pacer"))),
        "{output}"
    );
    assert!(
        output.contains("HTTP 200 OK\n{\"healthy\": true}"),
        "{output}"
    );
    assert!(
        !output.contains("e2e-token"),
        "the header's value is not logged: {output}"
    );
}

#[test]
fn an_unexpected_status_or_a_slow_answer_fails_the_run() {
    let failing = Server::start("503 Service Unavailable", "maintenance", Duration::ZERO);
    let slow = Server::start("200 OK", "", Duration::from_secs(10));
    let sandbox = Sandbox::new();
    sandbox.install_bundled("http");
    sandbox.write_config(
        "",
        &format!(
            r#"
[[jobs]]
name = "health"
schedule = "* * * * * *"
plugin = "http"
params = {{ url = "{}", expect_status = [200, 204] }}

[[jobs]]
name = "slow"
schedule = "* * * * * *"
plugin = "http"
params = {{ url = "{}", timeout = "500ms" }}
"#,
            failing.url("/health"),
            slow.url("/slow")
        ),
    );
    let _daemon = sandbox.start();

    let run = wait_for_run(&sandbox, "health", "failed");
    assert_eq!(
        text(&run, "error"),
        format!(
            "unexpected status 503 Service Unavailable from {} (expected 200 or 204)",
            failing.url("/health")
        )
    );
    let id = run["id"].as_i64().unwrap().to_string();
    let output = text(&sandbox.pacer_json(&["show", &id]), "output").to_owned();
    assert!(
        output.contains("HTTP 503 Service Unavailable\nmaintenance"),
        "{output}"
    );

    let run = wait_for_run(&sandbox, "slow", "failed");
    assert_eq!(
        text(&run, "error"),
        format!("no response from {} within 500ms", slow.url("/slow"))
    );
}

#[test]
fn a_chained_request_reports_the_failed_run() {
    let server = Server::start("204 No Content", "", Duration::ZERO);
    let sandbox = Sandbox::new();
    sandbox.install_bundled("http");
    sandbox.write_config(
        "",
        &format!(
            r#"
[[jobs]]
name = "backup"
plugin = "exec"
on_failure = ["alert"]
params = {{ command = "exit 3" }}

[[jobs]]
name = "alert"
plugin = "http"
[jobs.params]
url = "{}"
method = "POST"
body = "{{upstream.job}} run {{upstream.id}} {{upstream.status}}: {{upstream.error}}"
"#,
            server.url("/alerts/{upstream.job}?error={upstream.error}")
        ),
    );
    let _daemon = sandbox.start();
    let started = sandbox.pacer(["run", "backup"]);
    assert_eq!(started.code, 0, "{started}");
    let backup = wait_for_run(&sandbox, "backup", "failed");
    let alert = wait_for_run(&sandbox, "alert", "succeeded");
    assert_eq!(alert["trigger"], "chained");

    let request = &server.requests()[0];
    // Spaces from the expanded error are percent-encoded in the URL.
    assert!(
        request
            .head
            .starts_with("POST /alerts/backup?error=command%20exited%20with%20code%203 HTTP/1.1\n"),
        "{request:?}"
    );
    assert_eq!(
        request.body,
        format!(
            "backup run {} failed: command exited with code 3",
            backup["id"]
        )
    );
}

#[test]
fn check_names_the_job_and_the_key() {
    let sandbox = Sandbox::new();
    sandbox.install_bundled("http");
    sandbox.write_config(
        "",
        r#"
[[jobs]]
name = "good"
schedule = "@hourly"
plugin = "http"
params = { url = "https://example.com/health" }

[[jobs]]
name = "bad"
schedule = "@hourly"
plugin = "http"
params = { url = "https://example.com/health", expect_status = 999 }
"#,
    );
    let check = sandbox.pacer(["check", "--json"]);
    assert_eq!(check.code, 1, "{check}");
    let verdicts = check.json();
    let verdict = |job: &str| {
        verdicts
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["job"] == job)
            .unwrap_or_else(|| panic!("no verdict for {job}: {verdicts}"))
            .clone()
    };
    assert_eq!(verdict("good")["error"], Value::Null);
    let error = verdict("bad")["error"].as_str().unwrap().to_owned();
    assert!(
        error.ends_with(
            "params of `bad`: `expect_status` must be an HTTP status (100-599) or a list of \
             them, such as 200 or [200, 204], not the number 999"
        ),
        "{error}"
    );
}
