//! The control socket under abuse (garbage, huge lines, thousands of idle connections, slow
//! clients, many clients at once) while a job fires every second: the abusers are refused or
//! cut off with a reason, the daemon's memory stays small, and every fire keeps its run.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use pacer_tests::{Daemon, Sandbox, wait_for, wait_until};
use serde_json::Value;

const TICK_EVERY_SECOND: &str = r#"
[[jobs]]
name = "tick"
schedule = "* * * * * *"
plugin = "exec"
params = { command = "true" }
"#;

/// Starts pacerd with its descriptor limit (soft and hard) set to `limit`, as a unit with a
/// small `LimitNOFILE` would.
fn start_with_descriptor_limit(sandbox: &Sandbox, soft: u32, hard: u32) -> Daemon {
    let script = format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\"");
    sandbox.start_wrapped(&["sh", "-c", &script])
}

/// Raises this test process's own soft descriptor limit, to hold thousands of connections.
fn hold_many_descriptors(count: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    assert!(
        hard >= count,
        "the hard descriptor limit ({hard}) is below {count}"
    );
    setrlimit(Resource::RLIMIT_NOFILE, soft.max(count), hard).unwrap();
}

fn connect(sandbox: &Sandbox) -> UnixStream {
    UnixStream::connect(sandbox.path().join("pacer.sock")).unwrap()
}

/// The daemon's one answer on `stream` after sending `request`.
fn answer(stream: &mut UnixStream, request: &[u8]) -> Value {
    stream
        .set_read_timeout(Some(pacer_tests::DEADLINE))
        .unwrap();
    let _ = stream.write_all(request);
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"))
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|kib| kib.trim().trim_end_matches(" kB").parse().ok())
        .unwrap()
}

/// Every second from `since` until after now has exactly one record of `tick`, and each ran
/// (or, on a machine so loaded that a run of `true` outlasted a second, was skipped for
/// overlap): no fire was lost to the abuse, none failed for want of a descriptor.
fn assert_every_fire_ran(sandbox: &Sandbox, since: jiff::Timestamp) {
    let until = jiff::Timestamp::now().as_second() + 1;
    let runs = wait_until("a run after the abuse", || {
        let runs = sandbox.history(&["--job", "tick", "--limit", "1000"]);
        runs.iter()
            .any(|run| second_of(run) >= until)
            .then_some(runs)
    });
    let mut seconds: Vec<i64> = runs
        .iter()
        .map(|run| {
            let overlapped = run["status"] == "skipped"
                && run["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("still running"));
            // The newest may still be waiting for its start or going when the history is read.
            let going = run["status"] == "running" || run["status"] == "queued";
            assert!(run["status"] == "succeeded" || overlapped || going, "{run}");
            second_of(run)
        })
        .filter(|second| (since.as_second()..=until).contains(second))
        .collect();
    seconds.sort_unstable();
    let expected: Vec<i64> = (since.as_second() + 1..=until).collect();
    assert!(
        seconds.ends_with(&expected),
        "one run for each second from {since} on: {seconds:?}"
    );
}

fn second_of(run: &Value) -> i64 {
    let at: jiff::Timestamp = run["scheduled_at"].as_str().unwrap().parse().unwrap();
    at.as_second()
}

#[test]
fn garbage_and_huge_lines_are_refused_and_memory_stays_small() {
    let sandbox = Sandbox::new();
    sandbox.write_config("", TICK_EVERY_SECOND);
    let daemon = sandbox.start();
    wait_until("a first run", || sandbox.history(&[]).into_iter().next());
    let since = jiff::Timestamp::now();

    let refusal = answer(&mut connect(&sandbox), b"\xff\xfe garbage {{{\n");
    assert_eq!(refusal["kind"], "error", "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .starts_with("unreadable request: "),
        "{refusal}"
    );
    let refusal = answer(&mut connect(&sandbox), b"{\"verb\":\"explode\"}\n");
    assert_eq!(refusal["kind"], "error", "{refusal}");

    // A line far longer than any request, never ended: the daemon stops reading at 64 KiB.
    let mut stream = connect(&sandbox);
    let huge = vec![b'x'; 2 << 20];
    let refusal = answer(&mut stream, &huge);
    assert_eq!(
        refusal["message"],
        "the request is longer than 64 KiB, the most pacerd reads"
    );

    // Over the limit, from just over to more than the socket's buffer holds, each written whole:
    // the write completes and the client reads the refusal (not a broken pipe or a reset),
    // because the daemon reads the rest before it closes.
    for extra in [1, 5_000, 200_000, 500_000, 2_000_000] {
        let mut stream = connect(&sandbox);
        stream
            .set_read_timeout(Some(pacer_tests::DEADLINE))
            .unwrap();
        stream.write_all(&vec![b'x'; (64 << 10) + extra]).unwrap();
        let mut line = String::new();
        BufReader::new(&stream)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("64 KiB + {extra} bytes: {e}"));
        let refusal: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(
            refusal["message"], "the request is longer than 64 KiB, the most pacerd reads",
            "64 KiB + {extra} bytes"
        );
    }

    // Three hundred clients each sending a mebibyte at once: what the daemon holds is bounded
    // by the number it serves at once and the longest request, and given back.
    let before = rss_kib(daemon.pid());
    let path = sandbox.path().join("pacer.sock");
    let senders: Vec<_> = (0..300)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                if let Ok(mut stream) = UnixStream::connect(&path) {
                    let _ = stream.write_all(&vec![b'{'; 1 << 20]);
                    let mut sink = Vec::new();
                    let _ = stream.read_to_end(&mut sink);
                }
            })
        })
        .collect();
    let mut peak = before;
    for sender in senders {
        peak = peak.max(rss_kib(daemon.pid()));
        sender.join().unwrap();
    }
    assert!(
        peak < before + 32 * 1024,
        "RSS went from {before} KiB to {peak} KiB"
    );
    assert_eq!(sandbox.pacer(["status"]).code, 0);
    assert_every_fire_ran(&sandbox, since);
}

#[test]
fn two_thousand_idle_connections_leave_every_run_its_descriptors() {
    const CLIENTS: usize = 2_000;
    hold_many_descriptors(CLIENTS as u64 + 200);
    let sandbox = Sandbox::new();
    sandbox.write_config("", TICK_EVERY_SECOND);
    // As under systemd's default: a hard limit the daemon cannot raise past.
    let _daemon = start_with_descriptor_limit(&sandbox, 1024, 1024);
    wait_until("a first run", || sandbox.history(&[]).into_iter().next());
    let since = jiff::Timestamp::now();
    let streams: Vec<UnixStream> = (0..CLIENTS).map(|_| connect(&sandbox)).collect();
    // Each connection gets one line: a refusal at once beyond the ones served, and for each
    // served one, silent, an error once it has been idle too long.
    let (mut busy, mut cut) = (0, 0);
    for mut stream in streams {
        stream
            .set_read_timeout(Some(pacer_tests::DEADLINE))
            .unwrap();
        let mut line = String::new();
        BufReader::new(&mut stream).read_line(&mut line).unwrap();
        if line.contains("pacerd is busy: it serves 64 connections at once") {
            busy += 1;
        } else if line.contains("no byte of the request came for 3s") {
            cut += 1;
        } else {
            panic!("{line:?}");
        }
    }
    assert_eq!(busy + cut, CLIENTS);
    assert!(cut <= 64, "{cut} served at once");
    wait_for("pacer status to be served again", || {
        sandbox.pacer(["status"]).code == 0
    });
    assert_every_fire_ran(&sandbox, since);
}

#[test]
fn the_daemon_raises_its_descriptor_limit_and_runs_keep_the_one_it_had() {
    let sandbox = Sandbox::new();
    sandbox.write_config(
        "",
        "[[jobs]]\nname = \"limit\"\nplugin = \"exec\"\nparams = { command = \"ulimit -Sn\" }\n",
    );
    let daemon = start_with_descriptor_limit(&sandbox, 1024, 4096);
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", daemon.pid())).unwrap();
    let open_files = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        open_files.split_whitespace().collect::<Vec<_>>()[3..5],
        ["4096", "4096"],
        "{open_files}"
    );
    let out = sandbox.pacer(["run", "limit", "--wait"]);
    assert_eq!(out.code, 0, "{out}");
    let id = sandbox.history(&[])[0]["id"].to_string();
    let detail = sandbox.pacer_json(&["show", &id]);
    let output = detail["output"].as_str().unwrap();
    assert!(output.ends_with("\n1024\n"), "{output}");
}

#[test]
fn slow_clients_are_cut_off_and_many_at_once_are_served() {
    let sandbox = Sandbox::new();
    let mut jobs = String::from(TICK_EVERY_SECOND);
    // Enough jobs that the answer to `jobs` outgrows the socket's buffers.
    for i in 0..3_000 {
        jobs += &format!(
            "[[jobs]]\nname = \"idle-{i}\"\nplugin = \"exec\"\nparams = {{ command = \"true\" }}\n"
        );
    }
    sandbox.write_config("", &jobs);
    let _daemon = sandbox.start();
    wait_until("a first run", || sandbox.history(&[]).into_iter().next());
    let since = jiff::Timestamp::now();

    // A byte now and then: within the idle deadline each time, but the whole request is late.
    let mut trickle = connect(&sandbox);
    let began = Instant::now();
    let mut cut = false;
    for byte in br#"{"verb":"status"}"#.iter().cycle().take(40) {
        if trickle.write_all(&[*byte]).is_err() {
            cut = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(900));
    }
    assert!(cut, "still reading after {:?}", began.elapsed());
    let mut refusal = String::new();
    let _ = BufReader::new(&mut trickle).read_line(&mut refusal);

    // A client that asks for much and never reads is dropped, the daemon goes on.
    let mut hoarder = connect(&sandbox);
    hoarder.write_all(b"{\"verb\":\"jobs\"}\n").unwrap();
    std::thread::sleep(Duration::from_millis(100));

    let path = sandbox.path().join("pacer.sock");
    let clients: Vec<_> = (0..40)
        .map(|_| {
            let path = path.clone();
            std::thread::spawn(move || {
                for _ in 0..25 {
                    let mut stream = UnixStream::connect(&path).unwrap();
                    let status = answer(&mut stream, b"{\"verb\":\"status\"}\n");
                    assert_eq!(status["kind"], "status", "{status}");
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
    hoarder
        .set_read_timeout(Some(pacer_tests::DEADLINE))
        .unwrap();
    let mut sink = Vec::new();
    let ended = hoarder.read_to_end(&mut sink);
    assert!(
        ended.is_ok() || ended.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the hoarder's connection ends"
    );
    assert_every_fire_ran(&sandbox, since);
}
