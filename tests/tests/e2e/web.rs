//! The web view: served by the real `pacerd` on `web_listen`, over a week of history written by
//! the store's real writer. Plain HTTP for what a browser does not show (methods, headers,
//! errors), and a real headless Chromium for the pages themselves: no console errors, filters
//! and paging by clicking, the timeline's runs, live updates, a phone's width, a screenshot of
//! each page. A node of a cluster, on a real PostgreSQL, shows the whole cluster's runs with
//! their nodes, and the nodes themselves.

use std::collections::BTreeSet;
use std::io::Read as _;
use std::time::Duration;

use pacer_tests::browser::{self, Browser};
use pacer_tests::history::{self, HUGE_OUTPUT_END, Seeded};
use pacer_tests::postgres::Postgres;
use pacer_tests::{Daemon, Sandbox, artifacts, text, wait_for, wait_until};
use serde_json::{Value, json};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon with the web view on a free port (and `/metrics` on the same one) over a seeded
/// week; returns it with its base URL, what was seeded, and the instant the week ends.
fn seeded_daemon(show_output: bool) -> (Sandbox, Daemon, String, Seeded, i64) {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write_config(
        &format!(
            "web_listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{port}\"\n\
             web_show_output = {show_output}\n"
        ),
        history::JOBS,
    );
    let now = jiff::Timestamp::now().as_millisecond();
    let seeded = history::seed(&sandbox.path().join("pacer.db"), now);
    let daemon = sandbox.start();
    (
        sandbox,
        daemon,
        format!("http://127.0.0.1:{port}"),
        seeded,
        now,
    )
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// Status, headers (lowercase name, value) and body of a request.
fn fetch(method: &str, url: &str) -> (u16, Vec<(String, String)>, String) {
    let agent = agent();
    let response = match method {
        "GET" => agent.get(url).call(),
        "HEAD" => agent.head(url).call(),
        "POST" => agent.post(url).send("x=1"),
        "PUT" => agent.put(url).send("x=1"),
        "DELETE" => agent.delete(url).call(),
        other => panic!("no method {other}"),
    };
    let mut response = response.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 << 20)
        .read_to_string()
        .unwrap_or_default();
    (status, headers, body)
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_web_view_is_read_only_and_refuses_bad_requests_clearly() {
    let (_sandbox, _daemon, base, seeded, _) = seeded_daemon(false);

    let (status, headers, body) = fetch("GET", &format!("{base}/"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/html; charset=utf-8")
    );
    let csp = header(&headers, "content-security-policy").unwrap_or_default();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&headers, "x-frame-options"), Some("DENY"));
    assert_eq!(header(&headers, "x-content-type-options"), Some("nosniff"));
    assert!(header(&headers, "referrer-policy").is_some());
    for job in seeded.ids.keys() {
        assert!(
            body.contains(&format!("href=\"/jobs/{job}\"")),
            "{job} listed"
        );
    }
    assert!(
        !body.contains(" style=") && !body.contains("<script>"),
        "no inline styles or scripts"
    );

    let (status, _, body) = fetch("HEAD", &format!("{base}/runs"));
    assert_eq!((status, body.as_str()), (200, ""));

    for (method, path) in [("POST", "/"), ("PUT", "/runs"), ("DELETE", "/runs/1")] {
        let (status, headers, body) = fetch(method, &format!("{base}{path}"));
        assert_eq!(status, 405, "{method} {path}: {body}");
        assert_eq!(header(&headers, "allow"), Some("GET, HEAD"));
        assert!(body.contains("read-only"), "{body}");
    }

    for (path, reason) in [
        (
            "/runs?status=done",
            "unknown status `done`: expected one of",
        ),
        ("/runs?trigger=cron", "unknown trigger `cron`"),
        (
            "/runs?limit=0",
            "parameter `limit` must be a whole number from 1 to 1000, not `0`",
        ),
        (
            "/runs?before=abc",
            "parameter `before` must be a whole number",
        ),
        (
            "/runs?since=yesterday",
            "parameter `since`: `yesterday` is neither",
        ),
        ("/runs?since=1h&until=2h", "`since` must be before `until`"),
        (
            "/runs?jbo=x",
            "unknown parameter `jbo`: this page takes job, status",
        ),
        (
            "/runs?job=a&job=b",
            "parameter `job` is given more than once",
        ),
        (
            "/?window=forever",
            "parameter `window`: `forever` is not a duration",
        ),
        (
            "/timeline?span=2w",
            "parameter `span`: 2w is out of range: from 1h to 7d",
        ),
        ("/timeline?span=10m", "out of range"),
        (
            "/timeline?page=0",
            "parameter `page` must be a whole number",
        ),
        ("/runs/1?x=1", "this page takes no parameters"),
        ("/jobs/healthcheck?window=1y2", "not a duration"),
        (
            "/runs?since=99999999999d",
            "parameter `since`: `99999999999d` is a duration ago that reaches before the year \
             -9999: give a shorter duration, an RFC 3339 instant (2027-01-01T00:00:00Z) or a \
             local date and time (2027-01-05 10:00)",
        ),
        (
            "/runs?until=tomorrow",
            "parameter `until`: `tomorrow` is neither an RFC 3339 instant \
             (2027-01-01T00:00:00Z), a duration ago (30m, 2h, 7d) nor a local date and time \
             (2027-01-05 10:00)",
        ),
        (
            "/runs?job=%FF%FE",
            "the query string is not valid percent-encoded UTF-8 at `%FF`",
        ),
        (
            "/runs?job=%",
            "the query string is not valid percent-encoded UTF-8 at `%`",
        ),
        (
            "/runs?job=%zz",
            "the query string is not valid percent-encoded UTF-8 at `%zz`",
        ),
        (
            "/jobs/%C3%28",
            "the path is not valid percent-encoded UTF-8 at `%C3`",
        ),
    ] {
        let (status, _, body) = fetch("GET", &format!("{base}{path}"));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.contains(&reason.replace('&', "&amp;").replace('\'', "&#39;")),
            "{path}: the reason `{reason}` in:\n{body}"
        );
    }
    // A window's end from 1970 to a year ahead; each refusal names that range.
    for end in [
        "99999999999d",
        "9999-12-31T23:59:59Z",
        "0001-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ] {
        let path = format!("/timeline?end={end}");
        let (status, _, body) = fetch("GET", &format!("{base}{path}"));
        assert_eq!(status, 400, "{path}: {body}");
        assert!(
            body.contains("parameter `end` must be an instant from 1970-01-01 ")
                && body.contains(&format!(", not `{end}`")),
            "{path}:\n{body}"
        );
    }
    let (status, _, body) = fetch("GET", &format!("{base}/timeline?end=1970-01-01T12:00:00Z"));
    assert_eq!(status, 200, "{body}");
    assert!(
        body.contains(" 1969 ") && body.contains(" 1970 "),
        "a window of another year names it:\n{body}"
    );

    for path in [
        "/runs/999999",
        "/runs/abc",
        "/jobs/no-such-job",
        "/nowhere",
        "/static/missing.css",
        "/nodes",
    ] {
        let (status, _, body) = fetch("GET", &format!("{base}{path}"));
        assert_eq!(status, 404, "{path}: {body}");
        assert!(
            !body.contains("pacerd not answering"),
            "an error page says nothing untrue of the daemon: {body}"
        );
    }

    let id = seeded.ids["nightly-backup"][0];
    let (status, _, body) = fetch("GET", &format!("{base}/runs/{id}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("nightly-backup"), "{body}");
    let encoded: String = id
        .to_string()
        .bytes()
        .map(|b| format!("%{b:02X}"))
        .collect();
    let (status, _, body) = fetch("GET", &format!("{base}/runs/{encoded}"));
    assert_eq!(status, 200, "/runs/{encoded} is run {id}: {body}");
    assert!(
        body.contains("web_show_output = true") && !body.contains("backup: done"),
        "output is hidden without web_show_output:\n{body}"
    );

    let (status, headers, metrics) = fetch("GET", &format!("{base}/metrics"));
    assert_eq!(status, 200);
    assert!(
        header(&headers, "content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{headers:?}"
    );
    assert!(metrics.contains("pacer_build_info"), "{metrics}");
    let (status, headers, _) = fetch("GET", &format!("{base}/static/app.css"));
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "content-type"),
        Some("text/css; charset=utf-8")
    );

    // Every response of ours carries the security headers: assets, errors, a 414.
    let long = format!("/runs?job={}", "x".repeat(10_000));
    for (path, expected) in [
        ("/static/app.js", 200),
        ("/static/app.css", 200),
        ("/favicon.ico", 200),
        ("/metrics", 200),
        ("/nowhere", 404),
        ("/runs?limit=0", 400),
        (long.as_str(), 414),
    ] {
        let (status, headers, body) = fetch("GET", &format!("{base}{path}"));
        assert_eq!(status, expected, "{path}: {body}");
        assert_secure(&headers, path);
    }
    let (_, _, body) = fetch("GET", &format!("{base}{long}"));
    assert!(
        body.contains("the request's address is 10010 bytes long; at most 8192 are served"),
        "{body}"
    );

    // Clients that connect and send nothing wait apart: they take no slot from a request.
    let silent: Vec<std::net::TcpStream> = (0..200)
        .map(|_| std::net::TcpStream::connect(base.trim_start_matches("http://")).unwrap())
        .collect();
    let answered = fetch("GET", &format!("{base}/runs?limit=1"));
    assert_eq!(answered.0, 200, "served beside 200 silent connections");
    // Had the silent connections taken the slots, the request would have been served only once
    // the server closed them at their head deadline; they are all still open.
    for stream in &silent {
        stream.set_nonblocking(true).unwrap();
        let mut byte = [0_u8; 1];
        let read = (&*stream).read(&mut byte);
        assert!(
            read.as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
            "a silent connection was closed before the request was served: {read:?}"
        );
    }
    drop(silent);
}

/// The headers every response of ours carries.
fn assert_secure(headers: &[(String, String)], path: &str) {
    let csp = header(headers, "content-security-policy").unwrap_or_default();
    assert!(
        csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"),
        "{path}: {headers:?}"
    );
    assert_eq!(header(headers, "x-frame-options"), Some("DENY"), "{path}");
    assert_eq!(
        header(headers, "x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
    assert_eq!(
        header(headers, "referrer-policy"),
        Some("same-origin"),
        "{path}"
    );
}

/// Console entries that are errors.
fn errors(browser: &Browser) -> Vec<Value> {
    browser
        .console()
        .into_iter()
        .filter(|entry| entry["level"] == "SEVERE" || entry["level"] == "WARNING")
        .collect()
}

/// The texts of the elements matching `selector`, read at once (the page's live parts are
/// replaced as they refresh, so element references do not last).
fn texts(browser: &Browser, selector: &str) -> Vec<String> {
    let found = browser.script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.textContent);",
        &json!([selector]),
    );
    found
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|t| t.as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// The ids the runs table on the page lists, in order.
fn listed_ids(browser: &Browser) -> Vec<i64> {
    texts(browser, "table.runs a.id")
        .iter()
        .map(|id| id.trim_start_matches('#').parse().unwrap())
        .collect()
}

/// The run ids linked from the elements matching `selector`.
fn linked_runs(browser: &Browser, selector: &str) -> BTreeSet<i64> {
    let found = browser.script(
        "return Array.from(document.querySelectorAll(arguments[0])).map(a => a.getAttribute('href'));",
        &json!([selector]),
    );
    found
        .as_array()
        .unwrap()
        .iter()
        .map(|href| {
            href.as_str()
                .unwrap()
                .trim_start_matches("/runs/")
                .parse()
                .unwrap()
        })
        .collect()
}

#[test]
fn the_web_view_works_in_a_real_browser() {
    if let Some(reason) = browser::unavailable() {
        eprintln!("skipped: {reason}");
        return;
    }
    let (sandbox, _daemon, base, seeded, seeded_until) = seeded_daemon(true);
    // The seeded week only: the daemon may fire its own runs while the test goes on.
    let until = rfc3339(seeded_until);
    let history: Vec<Value> = sandbox.history(&["--limit", "100000", "--until", &until]);
    let (width, height) = (1280, 900);
    let browser = Browser::start(width, height);
    let shots = browser::screenshot_dir();
    let upstream = seeded.chain.0;
    let pages = [
        ("jobs", "/".to_owned()),
        ("job", "/jobs/nightly-backup".to_owned()),
        ("runs", "/runs".to_owned()),
        ("runs-failed", "/runs?status=failed".to_owned()),
        ("run", format!("/runs/{upstream}")),
        ("run-huge-output", format!("/runs/{}", seeded.huge_output)),
        ("timeline", "/timeline".to_owned()),
        ("timeline-week", "/timeline?span=7d".to_owned()),
        ("bad-request", "/runs?status=done".to_owned()),
    ];
    for (name, path) in &pages {
        browser.goto(&format!("{base}{path}"));
        browser.find("main");
        let logged = errors(&browser);
        let expected_error = *name == "bad-request";
        assert!(
            logged.iter().all(|e| expected_error
                && e["message"].as_str().is_some_and(|m| m.contains("400"))),
            "{path} logged errors: {logged:?}"
        );
        let file = shots.join(format!("desktop-{name}.png"));
        browser.screenshot(&file, width, height, false);
        println!("screenshot: {}", file.display());
    }
    if std::env::var_os("PACER_DOCS_SCREENSHOTS").is_some() {
        let docs = artifacts().workspace.join("docs/img");
        std::fs::create_dir_all(&docs).unwrap();
        for (name, path) in [("jobs", "/"), ("timeline", "/timeline")] {
            browser.goto(&format!("{base}{path}"));
            browser.find("main");
            browser.screenshot(&docs.join(format!("web-{name}.png")), width, height, false);
        }
    }

    // Filters by choosing and submitting, as a person would.
    browser.goto(&format!("{base}/runs"));
    browser.click_on("select[name=status] option[value=failed]");
    browser.click_on("form.filters button[type=submit]");
    wait_for("the filtered page", || {
        browser.url().contains("status=failed")
    });
    let badges = texts(&browser, "table.runs .badge");
    let failed = history.iter().filter(|r| r["status"] == "failed").count();
    assert_eq!(badges.len(), failed.min(50), "{badges:?}");
    assert!(badges.iter().all(|b| b == "failed"), "{badges:?}");

    // Keyset paging: "Older" lists the next runs down.
    browser.goto(&format!(
        "{base}/runs?limit=20&until={}",
        url_escape(&until)
    ));
    let first = listed_ids(&browser);
    let all_ids: Vec<i64> = history.iter().map(|r| r["id"].as_i64().unwrap()).collect();
    assert_eq!(first, all_ids[..20]);
    browser.click_on("a.older");
    wait_for("the next page", || browser.url().contains("before="));
    assert_eq!(listed_ids(&browser), all_ids[20..40]);

    // The timeline draws exactly the runs of the window.
    let end_ms = seeded_until - 86_400_000;
    let from_ms = end_ms - 3 * 86_400_000;
    browser.goto(&format!(
        "{base}/timeline?job=nightly-backup&span=3d&end={}",
        url_escape(&rfc3339(end_ms))
    ));
    browser.find("svg.gantt");
    let drawn = linked_runs(&browser, "svg.gantt a[href^='/runs/']");
    let expected: BTreeSet<i64> = history
        .iter()
        .filter(|r| r["job"] == "nightly-backup")
        .filter(|r| {
            let due = ms(r["scheduled_at"].as_str().unwrap());
            let end = r["finished_at"].as_str().map_or(due, ms);
            due < end_ms && end >= from_ms
        })
        .map(|r| r["id"].as_i64().unwrap())
        .collect();
    assert!(expected.len() >= 3, "{expected:?}");
    assert_eq!(drawn, expected);
    assert!(
        !browser.find_all("svg.load path.inflight").is_empty(),
        "the load is drawn under the runs"
    );

    // Any run of the last week in two clicks: the job, then the run on its chart.
    let oldest = seeded.ids["nightly-backup"]
        .iter()
        .copied()
        .find(|id| {
            history.iter().any(|r| {
                r["id"] == *id
                    && ms(r["scheduled_at"].as_str().unwrap())
                        > jiff::Timestamp::now().as_millisecond() - 7 * 86_400_000 + 3_600_000
            })
        })
        .unwrap();
    browser.goto(&format!("{base}/"));
    browser.click_on("a.job[href='/jobs/nightly-backup']");
    wait_for("the job's page", || {
        browser.url().ends_with("/jobs/nightly-backup")
    });
    browser.click_on(&format!("svg.chart a[href='/runs/{oldest}']"));
    wait_for("the run's page", || {
        browser.url().ends_with(&format!("/runs/{oldest}"))
    });
    assert_eq!(texts(&browser, "h1"), [format!("Run #{oldest}")]);

    // A chained run links to its upstream, and the upstream to it.
    let (up, down) = seeded.chain;
    browser.goto(&format!("{base}/runs/{down}"));
    browser.find(&format!("ol.chain a[href='/runs/{up}']"));
    browser.goto(&format!("{base}/runs/{up}"));
    browser.find(&format!("ol.chain a[href='/runs/{down}']"));

    // A huge output is cut to its tail, and the page says so.
    browser.goto(&format!("{base}/runs/{}", seeded.huge_output));
    browser.find("pre.output");
    let output = texts(&browser, "pre.output").concat();
    assert!(
        output.trim_end().ends_with(HUGE_OUTPUT_END),
        "the tail is shown"
    );
    assert!(texts(&browser, ".hint.cut").concat().contains("Output cut"));
    let (_, _, page) = fetch("GET", &format!("{base}/runs/{}", seeded.huge_output));
    assert!(
        page.len() < 400_000,
        "the page carries a bounded tail: {} bytes",
        page.len()
    );

    // A run of the seeded week that waited for a slot: its wait is drawn before its bar.
    let waited = history
        .iter()
        .find(|r| r["queue_ms"].as_i64().is_some_and(|q| q >= 60_000))
        .expect("a seeded run waited for a slot");
    let waited_id = waited["id"].as_i64().unwrap();
    browser.goto(&format!(
        "{base}/timeline?job={}&span=1h&end={}",
        text(waited, "job"),
        url_escape(&rfc3339(ms(text(waited, "started_at")) + 1_800_000))
    ));
    browser.find(&format!("svg.gantt a[href='/runs/{waited_id}'] rect.wait"));
    browser.find("svg.load path.waiting");

    // A fire waiting for a slot now (the backups pool runs one at a time, and a long backup
    // holds it) shows as waiting on every page.
    let holder = sandbox.pacer([
        "run",
        "nightly-backup",
        "--params",
        r#"{"command": "sleep 60"}"#,
    ]);
    assert_eq!(holder.code, 0, "{holder}");
    let holder = wait_until("the backup to hold the pool's slot", || {
        sandbox
            .history(&["--job", "nightly-backup", "--status", "running"])
            .first()
            .map(|r| r["id"].as_i64().unwrap())
    });
    let vacuum = sandbox.pacer(["run", "db-vacuum"]);
    assert_eq!(vacuum.code, 0, "{vacuum}");
    let queued = wait_until("the vacuum to wait", || {
        sandbox
            .history(&["--job", "db-vacuum", "--status", "queued"])
            .first()
            .map(|r| r["id"].as_i64().unwrap())
    });
    browser.goto(&format!("{base}/runs?status=queued"));
    assert_eq!(listed_ids(&browser), [queued]);
    assert_eq!(texts(&browser, "table.runs .badge"), ["queued"]);
    let wait = texts(&browser, "table.runs td[data-label='Queue wait']").concat();
    assert!(wait.ends_with("so far"), "{wait}");
    let reason = texts(&browser, "table.runs td.reason").concat();
    assert!(reason.contains("pool `backups`"), "{reason}");
    browser.goto(&format!("{base}/runs/{queued}"));
    let box_text = texts(&browser, ".wait-box").concat();
    assert!(
        box_text.contains("pool `backups`") && box_text.ends_with("so far"),
        "{box_text}"
    );
    browser.find("svg.phases rect.wait");
    assert!(
        texts(&browser, ".error-box").is_empty(),
        "a wait is no error"
    );
    browser.goto(&format!("{base}/jobs/db-vacuum"));
    let rows = texts(&browser, &format!("#why tr:has(a[href='/runs/{queued}'])"));
    assert_eq!(rows.len(), 1, "the waiting fire is listed once: {rows:?}");
    assert!(
        rows[0].contains("queued") && rows[0].contains("so far"),
        "{rows:?}"
    );
    browser.goto(&format!("{base}/?q=db-vacuum"));
    browser.find(&format!(
        "svg.strip a[href='/runs/{queued}'] rect.st-queued"
    ));
    browser.goto(&format!("{base}/timeline?job=db-vacuum&span=1h"));
    browser.find(&format!("svg.gantt a[href='/runs/{queued}'] rect.wait"));
    browser.find("svg.load path.waiting");
    let logged = errors(&browser);
    assert!(logged.is_empty(), "{logged:?}");
    assert_eq!(sandbox.pacer(["cancel", &holder.to_string()]).code, 0);

    // Live: a new run appears on the open page without a reload.
    browser.goto(&format!("{base}/runs"));
    browser.script("window.notReloaded = true;", &json!([]));
    let newest = listed_ids(&browser)[0];
    assert_eq!(sandbox.pacer(["run", "healthcheck", "--wait"]).code, 0);
    wait_until("the new run on the open page", || {
        (listed_ids(&browser).first().copied() > Some(newest)).then_some(())
    });
    assert_eq!(
        browser.script("return window.notReloaded === true;", &json!([])),
        true
    );

    // A phone: nothing wider than the screen.
    let (phone_w, phone_h) = (390, 844);
    browser.viewport(phone_w, phone_h, true);
    for (name, path) in &pages {
        browser.goto(&format!("{base}{path}"));
        browser.find("main");
        let overflow = browser.script(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            &json!([]),
        );
        assert!(
            overflow.as_i64().is_some_and(|o| o <= 0),
            "{path} is wider than a phone by {overflow} px"
        );
        let file = shots.join(format!("phone-{name}.png"));
        browser.screenshot(&file, phone_w, phone_h, true);
        println!("screenshot: {}", file.display());
    }
}

/// `text` as a query value.
fn url_escape(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

/// Unix milliseconds of an RFC 3339 instant.
fn ms(text: &str) -> i64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
}

/// An instant as the contract prints it.
fn rfc3339(ms: i64) -> String {
    format!("{:.3}", jiff::Timestamp::from_millisecond(ms).unwrap())
}

/// A node of a cluster with the web view (`web_listen` on a free port), on the shared database.
fn cluster_node(pg: &Postgres, node: &str) -> (Sandbox, String) {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write_config(
        &format!("web_listen = \"127.0.0.1:{port}\"\n"),
        &format!(
            "[cluster]\ndatabase_url = \"{}\"\nnode_id = \"{node}\"\nlease_ttl = \"5s\"\n\
             heartbeat = \"500ms\"\n\n\
             [pools.solo]\nmax_concurrency = 1\n\n\
             [[jobs]]\nname = \"report\"\nplugin = \"exec\"\npool = \"solo\"\n\
             params = {{ command = \"echo report\" }}\n",
            pg.url()
        ),
    );
    (sandbox, format!("http://127.0.0.1:{port}"))
}

#[test]
fn a_cluster_node_shows_the_whole_cluster_and_its_nodes() {
    let Some(pg) = Postgres::start() else { return };
    let (a, base) = cluster_node(&pg, "node-a");
    let (b, _) = cluster_node(&pg, "node-b");
    let _daemon_a = a.start();
    let _daemon_b = b.start();

    // The nodes page lists every node, as `pacer nodes` does.
    let nodes = wait_until("both nodes alive", || {
        let (status, _, body) = fetch("GET", &format!("{base}/nodes"));
        assert_eq!(status, 200, "{body}");
        (body.contains("id=\"node-node-a\"") && body.contains("id=\"node-node-b\"")).then_some(body)
    });
    assert!(nodes.contains(">this node<"), "{nodes}");
    assert!(
        nodes.contains("href=\"/nodes\""),
        "the navigation offers the nodes"
    );
    let listed: Vec<Value> = match a.pacer_json(&["nodes"]) {
        Value::Array(nodes) => nodes,
        other => panic!("{other}"),
    };
    assert_eq!(listed.len(), 2);
    for node in &listed {
        assert!(nodes.contains(text(node, "host")), "{nodes}");
    }

    // A run started from node b, wherever it ran, is on node a's pages with its node.
    let done = b.pacer(["run", "report", "--wait"]);
    assert_eq!(done.code, 0, "{done}");
    let run = b.history(&["--job", "report"]).remove(0);
    let id = run["id"].as_i64().unwrap();
    let ran_on = text(&run, "node").to_owned();
    let (status, _, runs) = fetch("GET", &format!("{base}/runs"));
    assert_eq!(status, 200, "{runs}");
    assert!(runs.contains("<th>Node</th>"), "{runs}");
    assert!(runs.contains(&format!("href=\"/runs/{id}\"")), "{runs}");
    assert!(
        runs.contains(&format!("href=\"/nodes#node-{ran_on}\">{ran_on}</a>")),
        "{runs}"
    );
    let (status, _, page) = fetch("GET", &format!("{base}/runs/{id}"));
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains(&format!(
            "<dt>node</dt><dd><a href=\"/nodes#node-{ran_on}\">"
        )),
        "{page}"
    );
    let (status, _, jobs) = fetch("GET", &format!("{base}/"));
    assert_eq!(status, 200, "{jobs}");
    assert!(jobs.contains(&format!("href=\"/runs/{id}\"")), "{jobs}");
    assert!(
        jobs.contains("badge st-succeeded"),
        "the cluster's last status: {jobs}"
    );
    for path in ["/jobs/report", "/timeline?span=1h", "/runs?trigger=manual"] {
        let (status, _, page) = fetch("GET", &format!("{base}{path}"));
        assert_eq!(status, 200, "{path}: {page}");
        assert!(
            page.contains(&format!("href=\"/runs/{id}\"")),
            "{path}: {page}"
        );
    }
    let (_, _, scheduled) = fetch("GET", &format!("{base}/runs?trigger=schedule"));
    assert!(
        !scheduled.contains(&format!("href=\"/runs/{id}\"")),
        "{scheduled}"
    );
}

/// The `href`s of a page, unescaped.
fn hrefs(body: &str) -> Vec<String> {
    body.split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.replace("&amp;", "&"))
        .collect()
}

/// The run ids a page links to.
fn run_links(body: &str) -> BTreeSet<i64> {
    hrefs(body)
        .iter()
        .filter_map(|href| href.strip_prefix("/runs/")?.parse().ok())
        .collect()
}

#[test]
fn every_run_of_a_busy_jobs_week_is_two_clicks_from_its_page() {
    let sandbox = Sandbox::new();
    let port = free_port();
    sandbox.write_config(
        &format!("web_listen = \"127.0.0.1:{port}\"\n"),
        "[[jobs]]\nname = \"busy\"\nschedule = \"0 0 1 1 *\"\nplugin = \"exec\"\n\
         params = { command = \"true\" }\n",
    );
    let now = jiff::Timestamp::now().as_millisecond();
    let ids = history::seed_busy(&sandbox.path().join("pacer.db"), "busy", 3_000, now);
    let _daemon = sandbox.start();
    let base = format!("http://127.0.0.1:{port}");

    let (status, _, page) = fetch("GET", &format!("{base}/jobs/busy"));
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("The newest 2000 runs are drawn"),
        "the chart is cut:\n{page}"
    );
    let mut reached = run_links(&page);
    let mut slices = 0;
    for href in hrefs(&page) {
        if href.starts_with("/runs?job=busy&since=") {
            slices += 1;
            assert!(href.ends_with("&limit=1000"), "{href}");
        }
        if href.starts_with('/') && !href.starts_with("/runs/") && !href.starts_with("/static/") {
            let (status, _, linked) = fetch("GET", &format!("{base}{href}"));
            assert_eq!(status, 200, "{href}: {linked}");
            reached.extend(run_links(&linked));
        }
    }
    assert!(slices > 0, "the undrawn part is linked by slice:\n{page}");
    let missed: Vec<&i64> = ids.iter().filter(|id| !reached.contains(id)).collect();
    assert!(
        missed.is_empty(),
        "{} of the week's {} runs are more than two clicks from /jobs/busy, the oldest {:?}",
        missed.len(),
        ids.len(),
        missed.first()
    );
}
