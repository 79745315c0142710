//! The plugin against real servers on 127.0.0.1 (see [`server`]).

mod server;

use std::time::{Duration, Instant, SystemTime};

use pacer_plugin_api::Level;
use pacer_plugin_api::testing::{Outcome, TestHost};
use serde_json::{Value, json};

use self::server::{Reply, Server, closed_port};
use super::*;
use pacer_test_pki::TestCa;

fn run(params: Value) -> Outcome {
    TestHost::new().params(params).run::<Http>()
}

fn validate(params: Value) -> Outcome {
    TestHost::new().params(params).validate::<Http>()
}

fn failure(outcome: Outcome) -> String {
    assert!(!outcome.ok, "expected a failure: {outcome:?}");
    outcome.message.unwrap()
}

fn params(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        other => panic!("params must be an object: {other}"),
    }
}

/// Sends the request the params describe and returns the run's output and result.
fn exchange(value: Value) -> (String, Result<StatusCode, Error>) {
    let request = Request::parse(&params(value)).unwrap();
    let mut out = Vec::new();
    let result = request.send(&Wait::of(&request), &mut out);
    (String::from_utf8(out).unwrap(), result)
}

#[test]
fn a_2xx_answer_succeeds_and_the_log_names_method_and_url() {
    let server = Server::start(Reply::status(200).body("all good"));
    let url = server.url("/health?verbose=1");
    let outcome = run(json!({ "url": url }));
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.message.as_deref(), Some("200 OK"));
    assert_eq!(outcome.logs, [(Level::Info, format!("GET {url}"))]);

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.method, "GET");
    assert_eq!(request.target, "/health?verbose=1");
    assert_eq!(request.header("user-agent"), Some(USER_AGENT));
    assert_eq!(request.header("content-length"), None);
    assert!(request.body.is_empty());
}

#[test]
fn method_headers_and_body_reach_the_server() {
    let server = Server::start(Reply::status(201));
    let outcome = run(json!({
        "url": server.url("/hooks/deploy"),
        "method": "post",
        "headers": { "Authorization": "Bearer s3cret", "Content-Type": "application/json" },
        "body": r#"{"job": "backup", "status": "failed"}"#,
    }));
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.message.as_deref(), Some("201 Created"));
    // The log names the request, never its headers.
    assert_eq!(
        outcome.logs,
        [(Level::Info, format!("POST {}", server.url("/hooks/deploy")))]
    );

    let request = &server.requests()[0];
    assert_eq!(request.method, "POST");
    assert_eq!(request.target, "/hooks/deploy");
    assert_eq!(request.header("authorization"), Some("Bearer s3cret"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.body, br#"{"job": "backup", "status": "failed"}"#);
}

#[test]
fn a_failing_status_is_named_in_the_error() {
    let server = Server::start(Reply::status(503).body("down for maintenance"));
    let url = server.url("/");
    assert_eq!(
        failure(run(json!({ "url": url }))),
        format!("unexpected status 503 Service Unavailable from {url} (expected 2xx)")
    );

    let server = Server::start(Reply::status(404));
    let url = server.url("/missing");
    assert_eq!(
        failure(run(json!({ "url": url, "method": "DELETE" }))),
        format!("unexpected status 404 Not Found from {url} (expected 2xx)")
    );
    assert_eq!(server.requests()[0].method, "DELETE");
}

#[test]
fn expect_status_picks_the_statuses_that_succeed() {
    let server = Server::start(Reply::status(204));
    let url = server.url("/");
    let outcome = run(json!({ "url": url, "expect_status": [200, 204] }));
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(outcome.message.as_deref(), Some("204 No Content"));
    assert_eq!(
        failure(run(json!({ "url": url, "expect_status": 200 }))),
        format!("unexpected status 204 No Content from {url} (expected 200)")
    );
    assert_eq!(
        failure(run(json!({ "url": url, "expect_status": [200, 201, 202] }))),
        format!("unexpected status 204 No Content from {url} (expected 200, 201 or 202)")
    );

    // A failure status can be what a job expects.
    let server = Server::start(Reply::status(410));
    let outcome = run(json!({ "url": server.url("/gone"), "expect_status": 410 }));
    assert!(outcome.ok, "{outcome:?}");
}

#[test]
fn redirects_are_answers_not_followed() {
    let server = Server::start(Reply::status(301));
    let url = server.url("/old");
    assert_eq!(
        failure(run(json!({ "url": url }))),
        format!("unexpected status 301 Moved Permanently from {url} (expected 2xx)")
    );
    assert_eq!(server.requests().len(), 1);
}

#[test]
fn a_slow_answer_times_out() {
    let server = Server::start(Reply::status(200).delay(Duration::from_secs(5)));
    let url = server.url("/slow");
    let started = Instant::now();
    assert_eq!(
        failure(run(json!({ "url": url, "timeout": "300ms" }))),
        format!("no response from {url} within 300ms")
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "it waited for the answer"
    );
    assert_eq!(server.requests().len(), 1, "the request was sent");
}

#[test]
fn a_body_that_stalls_times_out() {
    let server = Server::start(
        Reply::status(200)
            .body("late")
            .body_delay(Duration::from_secs(5)),
    );
    let url = server.url("/stalls");
    assert_eq!(
        failure(run(json!({ "url": url, "timeout": "500ms" }))),
        format!("the response from {url} did not finish within 500ms")
    );
}

#[test]
fn the_jobs_deadline_cuts_the_wait_short() {
    let server = Server::start(Reply::status(200).delay(Duration::from_secs(5)));
    let url = server.url("/slow");
    let started = Instant::now();
    let outcome = TestHost::new()
        .params(json!({ "url": url }))
        .deadline(SystemTime::now() + Duration::from_millis(300))
        .run::<Http>();
    assert_eq!(
        failure(outcome),
        format!("no response from {url} before the job's timeout")
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_refused_connection_says_so() {
    let port = closed_port();
    assert_eq!(
        failure(run(json!({ "url": format!("http://127.0.0.1:{port}") }))),
        format!("cannot connect to http://127.0.0.1:{port}/: connection refused")
    );
}

#[test]
fn an_unknown_host_says_so() {
    let message = failure(run(json!({ "url": "http://pacer-test.invalid/ping" })));
    assert!(
        message.starts_with(
            "cannot resolve host `pacer-test.invalid` of http://pacer-test.invalid/ping: "
        ),
        "{message}"
    );
}

#[test]
fn a_cancelled_run_sends_nothing() {
    let server = Server::start(Reply::status(200));
    let outcome = TestHost::new()
        .params(json!({ "url": server.url("/") }))
        .cancelled()
        .run::<Http>();
    assert_eq!(failure(outcome), "cancelled");
    assert!(server.requests().is_empty());
}

#[test]
fn the_output_shows_the_status_and_the_body() {
    let server = Server::start(Reply::status(500).body("{\"error\": \"disk full\"}"));
    let (output, result) = exchange(json!({ "url": server.url("/") }));
    assert_eq!(
        output,
        "HTTP 500 Internal Server Error\n{\"error\": \"disk full\"}\n"
    );
    assert!(result.is_err());

    let server = Server::start(Reply::status(204));
    let (output, result) = exchange(json!({ "url": server.url("/") }));
    assert_eq!(output, "HTTP 204 No Content\n");
    assert_eq!(result.unwrap(), StatusCode::NO_CONTENT);
}

#[test]
fn a_long_body_is_cut_in_the_output() {
    let mut body = vec![b'a'; BODY_LIMIT];
    body.extend_from_slice(b"this part is not shown");
    let server = Server::start(Reply::status(200).body(body));
    let (output, result) = exchange(json!({ "url": server.url("/big") }));
    assert_eq!(result.unwrap(), StatusCode::OK);
    let expected = format!(
        "HTTP 200 OK\n{}\n[response body cut after 65536 bytes]\n",
        "a".repeat(BODY_LIMIT)
    );
    assert!(output == expected, "the output is {} bytes", output.len());

    // Exactly the limit is not cut.
    let server = Server::start(Reply::status(200).body(vec![b'b'; BODY_LIMIT]));
    let (output, _) = exchange(json!({ "url": server.url("/") }));
    assert!(!output.contains("cut after"));
}

/// Runs in two roles: the test process makes a CA and starts itself again, running only this
/// test, with `SSL_CERT_FILE` naming the CA; that child does the requests. The environment is
/// process-wide, so this keeps the variable away from the tests running in parallel here.
#[test]
fn https_trusts_the_cas_that_ssl_cert_file_names() {
    let Some(ca) = pacer_test_pki::rerun_trusting_new_ca(
        "tests::https_trusts_the_cas_that_ssl_cert_file_names",
    ) else {
        return;
    };

    let server = Server::start_tls(Reply::status(200).body("secure"), ca.server_config());
    let outcome = run(json!({ "url": server.url("/tls"), "headers": { "X-Check": "1" } }));
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(server.requests()[0].header("x-check"), Some("1"));

    // A server whose certificate comes from a CA outside the bundle is refused.
    let stranger = Server::start_tls(Reply::status(200), TestCa::stranger().server_config());
    let url = stranger.url("/");
    let port = url.rsplit(':').next().unwrap().trim_end_matches('/');
    let message = failure(run(json!({ "url": url })));
    assert_eq!(
        message,
        format!(
            "TLS with 127.0.0.1:{port} failed: invalid peer certificate: UnknownIssuer \
             (trusted CAs come from the system's store, or from SSL_CERT_FILE and SSL_CERT_DIR \
             when set)"
        )
    );
    assert!(stranger.requests().is_empty());
}

#[test]
fn missing_and_mistyped_params_are_named() {
    let cases = [
        (
            json!({}),
            r#"`url` is missing: give a URL such as "https://example.com/health""#,
        ),
        (
            json!({ "url": 80 }),
            r#"`url` must be a URL such as "https://example.com/health", not the number 80"#,
        ),
        (
            json!({ "url": "ftp://example.com/file" }),
            "`url` must start with http:// or https://, not ftp://",
        ),
        (
            json!({ "url": "example.com/health" }),
            r#"`url` must start with http:// or https://: "example.com/health""#,
        ),
        (
            json!({ "url": "http://exa mple.com/" }),
            r#"`url` "http://exa mple.com/" is not a valid URL: invalid uri character"#,
        ),
        (
            json!({ "url": "https://user:pw@example.com/" }),
            r#"`url` must not hold credentials (user:password@); send them in `headers`, such as Authorization = "Basic ...""#,
        ),
        (
            json!({ "url": "https://example.com", "method": "GET /" }),
            r#"`method` must be an HTTP method such as GET or POST, not "GET /""#,
        ),
        (
            json!({ "url": "https://example.com", "method": ["GET"] }),
            r#"`method` must be an HTTP method such as "POST", not an array"#,
        ),
        (
            json!({ "url": "https://example.com", "headers": "X-A: 1" }),
            r#"`headers` must be a table of header names and values, such as { Authorization = "Bearer ..." }, not the string "X-A: 1""#,
        ),
        (
            json!({ "url": "https://example.com", "headers": { "X A": "1" } }),
            r#"`headers` has an invalid header name "X A""#,
        ),
        (
            json!({ "url": "https://example.com", "headers": { "X-Retries": 3 } }),
            "header `X-Retries` in `headers` must be a string, not the number 3",
        ),
        (
            json!({ "url": "https://example.com", "headers": { "X-A": "1\n2" } }),
            "header `X-A` in `headers` holds a line break or another control character",
        ),
        (
            json!({ "url": "https://example.com", "body": { "a": 1 } }),
            "`body` must be a string (the request body), not a table",
        ),
        (
            json!({ "url": "https://example.com", "timeout": "30" }),
            r#"`timeout` must be a duration such as "30s", "1m30s" or "500ms" (units ms, s, m, h), not "30""#,
        ),
        (
            json!({ "url": "https://example.com", "timeout": 30 }),
            r#"`timeout` must be a duration such as "30s", "1m30s" or "500ms" (units ms, s, m, h), not the number 30"#,
        ),
        (
            json!({ "url": "https://example.com", "timeout": "0s" }),
            "`timeout` must be longer than 0s",
        ),
        (
            json!({ "url": "https://example.com", "urll": "x" }),
            "unknown key `urll`: the keys are `url`, `method`, `headers`, `body`, `expect_status`, `timeout`",
        ),
    ];
    for (params, expected) in cases {
        assert_eq!(failure(validate(params.clone())), expected, "{params}");
    }
}

#[test]
fn expect_status_must_hold_statuses() {
    let hint = "`expect_status` must be an HTTP status (100-599) or a list of them, such as 200 \
                or [200, 204]";
    for (value, shown) in [
        (json!(999), "the number 999"),
        (json!(20), "the number 20"),
        (json!("200"), r#"the string "200""#),
        (json!(200.5), "the number 200.5"),
        (json!([]), "an array"),
        (json!([200, "204"]), r#"the string "204""#),
        (json!({ "code": 200 }), "a table"),
    ] {
        assert_eq!(
            failure(validate(
                json!({ "url": "https://example.com", "expect_status": value })
            )),
            format!("{hint}, not {shown}"),
            "{value}"
        );
    }
}

#[test]
fn valid_params_pass_and_a_chained_run_may_carry_upstream() {
    let outcome = validate(json!({
        "url": "https://example.com/hook",
        "method": "PUT",
        "headers": { "X-A": "1" },
        "body": "",
        "expect_status": [200, 202],
        "timeout": "1m30s",
        "upstream": { "job": "backup", "id": 7, "status": "failed", "error": "exit 3" },
    }));
    assert!(outcome.ok, "{outcome:?}");
    // Validation sends nothing and logs nothing.
    assert!(outcome.logs.is_empty());
}

#[test]
fn durations() {
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("1m30s"), Some(Duration::from_secs(90)));
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("2h"), Some(Duration::from_secs(7200)));
    for bad in [
        "",
        "30",
        "s",
        "1.5s",
        "-1s",
        "1d",
        "1m 30s",
        "99999999999999999999h",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad}");
    }
}

#[test]
fn expected_statuses_read_as_a_list() {
    assert_eq!(Expect::Success.to_string(), "2xx");
    assert_eq!(Expect::Listed(vec![200]).to_string(), "200");
    assert_eq!(Expect::Listed(vec![200, 204]).to_string(), "200 or 204");
    assert_eq!(
        Expect::Listed(vec![200, 201, 204]).to_string(),
        "200, 201 or 204"
    );
}

#[test]
fn characters_a_url_cannot_hold_are_percent_encoded() {
    assert_eq!(
        encode_path("https://example.com/a b?error=exit 3|ä#x y"),
        "https://example.com/a%20b?error=exit%203%7C%C3%A4#x%20y"
    );
    assert_eq!(
        encode_path("http://example.com/alerts/{upstream.job}"),
        "http://example.com/alerts/%7Bupstream.job%7D"
    );
    assert!(matches!(
        encode_path("https://example.com/ok?a=1&b=%20"),
        Cow::Borrowed(_)
    ));
    assert!(matches!(
        encode_path("https://example.com"),
        Cow::Borrowed(_)
    ));

    // As a chained run's expanded `{upstream.error}` would put it.
    let server = Server::start(Reply::status(200));
    let outcome = run(json!({ "url": server.url("/alert?error=command exited with code 3") }));
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(
        server.requests()[0].target,
        "/alert?error=command%20exited%20with%20code%203"
    );
}
