//! The plugin against a real SMTP server on 127.0.0.1 (see [`smtp`]).

mod smtp;

use std::time::{Duration, Instant, SystemTime};

use pacer_plugin_api::Level;
use pacer_plugin_api::testing::{Outcome, TestHost};
use serde_json::{Value, json};

use self::smtp::{Session, Setup, SmtpServer};
use super::*;
use pacer_test_pki::TestCa;

fn run(params: Value) -> Outcome {
    TestHost::new().params(params).run::<MailPlugin>()
}

fn validate(params: Value) -> Outcome {
    TestHost::new().params(params).validate::<MailPlugin>()
}

fn failure(outcome: Outcome) -> String {
    assert!(!outcome.ok, "expected a failure: {outcome:?}");
    outcome.message.unwrap()
}

/// Params for a mail to `server`, with `extra` keys added or replaced.
fn mail(server: &SmtpServer, extra: Value) -> Value {
    let mut params = json!({
        "smtp_host": "127.0.0.1",
        "smtp_port": server.port(),
        "from": "Pacer <pacer@example.com>",
        "to": "ops@example.com",
        "subject": "backup failed",
        "body": "Run 7 of backup failed.\n.\nSee `pacer show 7`.",
    });
    let Value::Object(extra) = extra else {
        panic!("extra params must be an object: {extra}")
    };
    for (key, value) in extra {
        params[key] = value;
    }
    params
}

fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    let mut found = fields
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name));
    let (_, value) = found
        .next()
        .unwrap_or_else(|| panic!("no {name} in {fields:?}"));
    assert!(found.next().is_none(), "{name} twice in {fields:?}");
    value
}

#[test]
fn a_plain_mail_arrives_with_proper_headers() {
    let server = SmtpServer::start(Setup::default());
    let before = SystemTime::now();
    let outcome = run(mail(&server, json!({ "starttls": "off" })));
    assert!(outcome.ok, "{outcome:?}");
    let at = format!("127.0.0.1:{}", server.port());
    assert_eq!(
        outcome.message,
        Some(format!("sent to 1 recipient via {at}"))
    );
    assert_eq!(
        outcome.logs,
        [
            (Level::Info, format!("sending mail to 1 recipient via {at}")),
            (
                Level::Info,
                format!("{at} accepted the mail: 250 2.0.0 Ok: queued as TEST1")
            ),
        ]
    );

    let session = server.session();
    assert!(!session.tls);
    assert_eq!(session.ehlo.len(), 1);
    assert!(!session.ehlo[0].is_empty());
    assert_eq!(session.login, None);
    assert_eq!(session.mail_from.as_deref(), Some("pacer@example.com"));
    assert_eq!(session.rcpt_to, ["ops@example.com"]);
    let (fields, body) = session.message();
    assert_eq!(field(&fields, "From"), "Pacer <pacer@example.com>");
    assert_eq!(field(&fields, "To"), "ops@example.com");
    assert_eq!(field(&fields, "Subject"), "backup failed");
    assert_eq!(field(&fields, "MIME-Version"), "1.0");
    assert_eq!(field(&fields, "Content-Type"), "text/plain; charset=utf-8");
    assert_eq!(field(&fields, "Content-Transfer-Encoding"), "7bit");
    // The lone dot went out doubled (RFC 5321 transparency) and came back single.
    assert_eq!(
        body,
        "Run 7 of backup failed.\r\n.\r\nSee `pacer show 7`.\r\n"
    );

    let date = field(&fields, "Date");
    let sent = jiff::fmt::rfc2822::parse(date)
        .unwrap_or_else(|e| panic!("Date {date:?} is not RFC 5322: {e}"))
        .timestamp();
    let before = jiff::Timestamp::try_from(before).unwrap();
    assert!(
        sent >= before - jiff::SignedDuration::from_secs(1)
            && sent <= jiff::Timestamp::now() + jiff::SignedDuration::from_secs(1),
        "Date {date} is not now"
    );

    let id = field(&fields, "Message-ID");
    let inner = id
        .strip_prefix('<')
        .and_then(|rest| rest.strip_suffix('>'))
        .unwrap_or_else(|| panic!("Message-ID {id:?} is not in angle brackets"));
    let (left, right) = inner.split_once('@').expect("Message-ID has an @");
    assert!(left.len() >= 16 && !right.is_empty(), "{id}");
    assert!(!inner.contains([' ', '<', '>']), "{id}");

    // Another mail gets another id.
    let outcome = run(mail(&server, json!({ "starttls": "off" })));
    assert!(outcome.ok, "{outcome:?}");
    let (second, _) = server.sessions()[1].message();
    assert_ne!(field(&second, "Message-ID"), id);
}

#[test]
fn every_recipient_gets_the_mail() {
    let server = SmtpServer::start(Setup::default());
    let outcome = run(mail(
        &server,
        json!({ "to": ["ops@example.com", "On Call <oncall@example.com>", "\"Doe, Jane\" <jane@example.org>"] }),
    ));
    assert!(outcome.ok, "{outcome:?}");
    assert_eq!(
        outcome.message,
        Some(format!(
            "sent to 3 recipients via 127.0.0.1:{}",
            server.port()
        ))
    );
    let session = server.session();
    assert_eq!(
        session.rcpt_to,
        ["ops@example.com", "oncall@example.com", "jane@example.org"]
    );
    let (fields, _) = session.message();
    // Display names are quoted or encoded as RFC 2047 asks; the addresses stay as they are.
    let to = field(&fields, "To");
    assert!(
        to.starts_with("ops@example.com, \"On Call\" <oncall@example.com>, ")
            && to.ends_with(" <jane@example.org>"),
        "{to}"
    );
}

#[test]
fn text_beyond_ascii_is_encoded_and_a_subject_stays_one_line() {
    let server = SmtpServer::start(Setup::default());
    let outcome = run(mail(
        &server,
        json!({
            "subject": "Sicherung fehlgeschlagen: Prüfsumme\nfalsch",
            "body": "Die Prüfsumme stimmt nicht.",
        }),
    ));
    assert!(outcome.ok, "{outcome:?}");
    let session = server.session();
    let data = session.data.as_deref().unwrap();
    assert!(data.is_ascii(), "{data}");
    let (fields, body) = session.message();
    assert_eq!(
        field(&fields, "Subject"),
        "Sicherung fehlgeschlagen: =?utf-8?b?UHLDvGZzdW1tZQ==?= falsch"
    );
    assert_eq!(
        field(&fields, "Content-Transfer-Encoding"),
        "quoted-printable"
    );
    assert_eq!(body, "Die Pr=C3=BCfsumme stimmt nicht.\r\n");
}

#[test]
fn an_address_beyond_ascii_needs_smtputf8() {
    let server = SmtpServer::start(Setup::default());
    let outcome = run(mail(&server, json!({ "to": "jörg@bücher.example" })));
    assert_eq!(
        failure(outcome),
        format!(
            "mail server 127.0.0.1:{} does not accept addresses outside ASCII (SMTPUTF8), which \
             `from` or `to` holds",
            server.port()
        )
    );
    assert_eq!(server.session().mail_from, None);
}

#[test]
fn required_starttls_that_is_not_offered_fails_before_sending() {
    let server = SmtpServer::start(Setup::default());
    let outcome = run(mail(&server, json!({ "starttls": "required" })));
    assert_eq!(
        failure(outcome),
        format!(
            r#"mail server 127.0.0.1:{} does not offer STARTTLS, and starttls is "required""#,
            server.port()
        )
    );
    let session = server.session();
    assert_eq!(session.mail_from, None);
    assert_eq!(session.data, None);
}

#[test]
fn opportunistic_starttls_without_an_offer_sends_in_plain_text_and_warns() {
    let server = SmtpServer::start(Setup::default());
    let outcome = run(mail(&server, json!({})));
    assert!(outcome.ok, "{outcome:?}");
    let at = format!("127.0.0.1:{}", server.port());
    assert!(
        outcome.logs.contains(&(
            Level::Warn,
            format!("{at} does not offer STARTTLS: sending without encryption")
        )),
        "{:?}",
        outcome.logs
    );
    assert!(!server.session().tls);
}

#[test]
fn opportunistic_starttls_never_sends_a_password_in_clear() {
    let server = SmtpServer::start(Setup {
        auth: Some(("PLAIN LOGIN", "pacer", "s3cret")),
        ..Setup::default()
    });
    let outcome = run(mail(
        &server,
        json!({ "username": "pacer", "password": "s3cret" }),
    ));
    assert_eq!(
        failure(outcome),
        format!(
            "mail server 127.0.0.1:{} does not offer STARTTLS, so the password of `pacer` would \
             cross the network unencrypted; nothing was sent. Use a server that offers \
             STARTTLS, or set starttls = \"off\" to log in without encryption anyway",
            server.port()
        )
    );
    let session = server.session();
    assert_eq!(session.login, None, "no credentials went out");
    assert_eq!(session.data, None);
}

#[test]
fn a_password_logs_in_with_plain_or_login() {
    for mechanisms in ["PLAIN LOGIN", "LOGIN"] {
        let server = SmtpServer::start(Setup {
            auth: Some((mechanisms, "pacer", "s3cret pass")),
            ..Setup::default()
        });
        let outcome = run(mail(
            &server,
            json!({ "username": "pacer", "password": "s3cret pass", "starttls": "off" }),
        ));
        assert!(outcome.ok, "{mechanisms}: {outcome:?}");
        let session = server.session();
        assert_eq!(
            session.login,
            Some(("pacer".to_owned(), "s3cret pass".to_owned()))
        );
        assert!(session.data.is_some());
        assert!(
            outcome
                .logs
                .iter()
                .all(|(_, line)| !line.contains("s3cret")),
            "{:?}",
            outcome.logs
        );
    }
}

#[test]
fn a_password_file_is_read_without_its_trailing_newline() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("unix", "s3cret\n"),
        ("dos", "s3cret\r\n"),
        ("bare", "s3cret"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let server = SmtpServer::start(Setup {
            auth: Some(("PLAIN", "pacer", "s3cret")),
            ..Setup::default()
        });
        let outcome = run(mail(
            &server,
            json!({ "username": "pacer", "password_file": path, "starttls": "off" }),
        ));
        assert!(outcome.ok, "{name}: {outcome:?}");
        assert_eq!(
            server.session().login,
            Some(("pacer".to_owned(), "s3cret".to_owned()))
        );
    }

    let missing = dir.path().join("missing");
    let server = SmtpServer::start(Setup::default());
    let outcome = run(mail(
        &server,
        json!({ "username": "pacer", "password_file": missing }),
    ));
    assert_eq!(
        failure(outcome),
        format!(
            "cannot read `password_file` {}: No such file or directory (os error 2)",
            missing.display()
        )
    );
    assert!(server.sessions().is_empty(), "nothing was sent");
}

#[test]
fn a_rejected_login_quotes_the_server() {
    let server = SmtpServer::start(Setup {
        auth: Some(("PLAIN LOGIN", "pacer", "right")),
        ..Setup::default()
    });
    let outcome = run(mail(
        &server,
        json!({ "username": "pacer", "password": "wrong", "starttls": "off" }),
    ));
    assert_eq!(
        failure(outcome),
        format!(
            "mail server 127.0.0.1:{} refused the login of `pacer`: 535 5.7.8 Authentication \
             credentials invalid",
            server.port()
        )
    );
    assert_eq!(server.session().data, None);
}

#[test]
fn a_login_without_auth_on_offer_says_so() {
    let server = SmtpServer::start(Setup::default());
    let outcome = run(mail(
        &server,
        json!({ "username": "pacer", "password": "x", "starttls": "off" }),
    ));
    assert_eq!(
        failure(outcome),
        format!(
            "mail server 127.0.0.1:{} does not offer AUTH PLAIN or AUTH LOGIN, so `username` \
             cannot log in (servers often offer it only after STARTTLS)",
            server.port()
        )
    );
}

#[test]
fn a_server_that_wants_a_login_says_so() {
    let server = SmtpServer::start(Setup {
        auth: Some(("PLAIN", "pacer", "x")),
        ..Setup::default()
    });
    assert_eq!(
        failure(run(mail(&server, json!({})))),
        format!(
            "mail server 127.0.0.1:{} refused sender <pacer@example.com>: 530 5.7.0 \
             Authentication required",
            server.port()
        )
    );
}

#[test]
fn a_refused_recipient_stops_the_mail_for_all() {
    let server = SmtpServer::start(Setup {
        refuse: vec!["nobody@example.com"],
        ..Setup::default()
    });
    let outcome = run(mail(
        &server,
        json!({ "to": ["ops@example.com", "nobody@example.com"] }),
    ));
    assert_eq!(
        failure(outcome),
        format!(
            "mail server 127.0.0.1:{} refused recipient <nobody@example.com>: 550 5.1.1 \
             <nobody@example.com>: Recipient address rejected",
            server.port()
        )
    );
    let session = server.session();
    assert_eq!(session.rcpt_to, ["ops@example.com"]);
    assert_eq!(session.data, None);
}

#[test]
fn a_refused_connection_says_so() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let outcome = run(json!({
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "from": "pacer@example.com",
        "to": "ops@example.com",
    }));
    assert_eq!(
        failure(outcome),
        format!("cannot connect to mail server 127.0.0.1:{port}: connection refused")
    );
}

#[test]
fn an_unknown_host_says_so() {
    let outcome = run(json!({
        "smtp_host": "pacer-test.invalid",
        "from": "pacer@example.com",
        "to": "ops@example.com",
    }));
    let message = failure(outcome);
    assert!(
        message.starts_with("cannot resolve mail server host `pacer-test.invalid`: "),
        "{message}"
    );
}

#[test]
fn a_silent_server_times_out_at_the_jobs_deadline() {
    let server = SmtpServer::start(Setup {
        greeting_delay: Duration::from_secs(5),
        ..Setup::default()
    });
    let started = Instant::now();
    let outcome = TestHost::new()
        .params(mail(&server, json!({})))
        .deadline(SystemTime::now() + Duration::from_millis(500))
        .run::<MailPlugin>();
    assert_eq!(
        failure(outcome),
        format!(
            "no answer from mail server 127.0.0.1:{} before the job's timeout",
            server.port()
        )
    );
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn a_cancelled_run_does_not_connect() {
    let server = SmtpServer::start(Setup::default());
    let outcome = TestHost::new()
        .params(mail(&server, json!({})))
        .cancelled()
        .run::<MailPlugin>();
    assert_eq!(failure(outcome), "cancelled");
    assert!(server.sessions().is_empty());
}

/// Runs in two roles: the test process makes a CA and starts itself again, running only this
/// test, with `SSL_CERT_FILE` naming the CA; that child talks to the servers. The environment
/// is process-wide, so this keeps the variable away from the tests running in parallel here.
#[test]
fn starttls_verifies_the_server_against_ssl_cert_file() {
    let Some(ca) = pacer_test_pki::rerun_trusting_new_ca(
        "tests::starttls_verifies_the_server_against_ssl_cert_file",
    ) else {
        return;
    };

    let encrypted = |session: &Session| {
        assert!(session.tls, "{session:?}");
        assert_eq!(session.ehlo.len(), 2, "EHLO again after STARTTLS");
        assert!(session.data.is_some());
    };

    // Opportunistic (the default) takes STARTTLS when offered.
    let server = SmtpServer::start(Setup {
        tls: Some(ca.server_config()),
        ..Setup::default()
    });
    let outcome = run(mail(&server, json!({})));
    assert!(outcome.ok, "{outcome:?}");
    encrypted(&server.session());

    // Required, with a login that the server offers only once the session is encrypted.
    let server = SmtpServer::start(Setup {
        tls: Some(ca.server_config()),
        auth: Some(("PLAIN LOGIN", "pacer", "s3cret")),
        ..Setup::default()
    });
    let outcome = run(mail(
        &server,
        json!({ "starttls": "required", "username": "pacer", "password": "s3cret" }),
    ));
    assert!(outcome.ok, "{outcome:?}");
    let session = server.session();
    encrypted(&session);
    assert_eq!(
        session.login,
        Some(("pacer".to_owned(), "s3cret".to_owned()))
    );

    // A certificate from a CA outside the bundle fails in both modes; nothing goes out.
    for mode in ["opportunistic", "required"] {
        let server = SmtpServer::start(Setup {
            tls: Some(TestCa::stranger().server_config()),
            ..Setup::default()
        });
        let outcome = run(mail(&server, json!({ "starttls": mode })));
        assert_eq!(
            failure(outcome),
            format!(
                "STARTTLS with mail server 127.0.0.1:{} failed: invalid peer certificate: \
                 UnknownIssuer (trusted CAs come from the system's store, or from SSL_CERT_FILE \
                 and SSL_CERT_DIR when set)",
                server.port()
            ),
            "{mode}"
        );
        assert_eq!(server.session().mail_from, None, "{mode}");
    }

    // `off` never tries.
    let server = SmtpServer::start(Setup {
        tls: Some(TestCa::stranger().server_config()),
        ..Setup::default()
    });
    let outcome = run(mail(&server, json!({ "starttls": "off" })));
    assert!(outcome.ok, "{outcome:?}");
    assert!(!server.session().tls);
}

#[test]
fn missing_and_mistyped_params_are_named() {
    let base = json!({
        "smtp_host": "mail.example.com",
        "from": "pacer@example.com",
        "to": "ops@example.com",
    });
    let with = |extra: Value| {
        let mut params = base.clone();
        for (key, value) in extra.as_object().unwrap() {
            if value.is_null() {
                params.as_object_mut().unwrap().remove(key);
            } else {
                params[key] = value.clone();
            }
        }
        params
    };
    let cases = [
        (
            with(json!({ "smtp_host": null })),
            r#"`smtp_host` is missing: give the mail server's host name, such as "mail.example.com""#,
        ),
        (
            with(json!({ "smtp_host": "smtp://mail.example.com" })),
            r#"`smtp_host` must be a host name or IP address such as "mail.example.com", without scheme or port (the port goes in `smtp_port`), not "smtp://mail.example.com""#,
        ),
        (
            with(json!({ "smtp_host": "mail.example.com:587" })),
            r#"`smtp_host` must be a host name or IP address such as "mail.example.com", without scheme or port (the port goes in `smtp_port`), not "mail.example.com:587""#,
        ),
        (
            with(json!({ "smtp_port": "587" })),
            r#"`smtp_port` must be a port number (1-65535) such as 25 or 587, not the string "587""#,
        ),
        (
            with(json!({ "smtp_port": 70000 })),
            "`smtp_port` must be a port number (1-65535) such as 25 or 587, not the number 70000",
        ),
        (
            with(json!({ "smtp_port": 465 })),
            "`smtp_port` 465 expects TLS from the first byte, which this plugin does not speak: use port 587, where STARTTLS encrypts the session",
        ),
        (
            with(json!({ "starttls": "yes" })),
            r#"`starttls` must be "off", "opportunistic" or "required", not "yes""#,
        ),
        (
            with(json!({ "starttls": true })),
            r#"`starttls` must be "off", "opportunistic" or "required", not true"#,
        ),
        (
            with(json!({ "username": "pacer", "password": "a", "password_file": "b" })),
            "give `password` or `password_file`, not both",
        ),
        (
            with(json!({ "username": "pacer" })),
            "`username` needs `password` or `password_file`",
        ),
        (
            with(json!({ "password": "a" })),
            "`password` needs `username`",
        ),
        (
            with(json!({ "password_file": "secret" })),
            "`password_file` needs `username`",
        ),
        (
            with(json!({ "from": null })),
            r#"`from` is missing: give the sender's address, such as "alerts@example.com" or "Pacer <alerts@example.com>""#,
        ),
        (
            with(json!({ "from": "pacer at example.com" })),
            r#"`from` must be a mail address such as "alerts@example.com" or "Pacer <alerts@example.com>", not "pacer at example.com""#,
        ),
        (
            with(json!({ "to": null })),
            "`to` must name at least one address",
        ),
        (
            with(json!({ "to": [] })),
            "`to` must name at least one address",
        ),
        (
            with(json!({ "to": ["ops@example.com", "root"] })),
            r#"`to` must be a mail address such as "alerts@example.com" or "Pacer <alerts@example.com>", not "root""#,
        ),
        (
            with(json!({ "to": "a@example.com, b@example.com" })),
            r#"`to` must be a mail address such as "alerts@example.com" or "Pacer <alerts@example.com>", not "a@example.com, b@example.com" (several go in an array, such as ["a@example.com", "b@example.com"])"#,
        ),
        (
            with(json!({ "to": [7] })),
            r#"`to` must be an address or an array of addresses, such as "alerts@example.com" or "Pacer <alerts@example.com>", not the number 7"#,
        ),
        (
            with(json!({ "subject": ["a"] })),
            "`subject` must be a string (the subject line), not an array",
        ),
        (
            with(json!({ "body": 3 })),
            "`body` must be a string (the text of the mail), not the number 3",
        ),
        (
            with(json!({ "smtp_server": "x" })),
            "unknown key `smtp_server`: the keys are `smtp_host`, `smtp_port`, `starttls`, `username`, `password`, `password_file`, `from`, `to`, `subject`, `body`",
        ),
    ];
    for (params, expected) in cases {
        assert_eq!(failure(validate(params.clone())), expected, "{params}");
    }
}

#[test]
fn valid_params_pass_and_a_chained_run_may_carry_upstream() {
    let outcome = validate(json!({
        "smtp_host": "mail.example.com",
        "smtp_port": 587,
        "starttls": "required",
        "username": "pacer",
        "password_file": "does/not/need/to/exist/yet",
        "from": "Pacer <pacer@example.com>",
        "to": ["ops@example.com"],
        "subject": "backup failed",
        "body": "exit 3",
        "upstream": { "job": "backup", "id": 7, "status": "failed", "error": "exit 3" },
    }));
    assert!(outcome.ok, "{outcome:?}");
    for host in ["127.0.0.1", "::1", "[::1]", "localhost"] {
        let outcome = validate(json!({ "smtp_host": host, "from": "a@b.c", "to": "d@e.f" }));
        assert!(outcome.ok, "{host}: {outcome:?}");
    }
}
