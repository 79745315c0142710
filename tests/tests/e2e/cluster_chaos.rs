//! Chaos on a cluster: three `pacerd` nodes on one real PostgreSQL, each through a TCP proxy
//! the test can cut, under a seeded schedule of faults (kill -9 and restart, SIGSTOP for twice
//! the lease, cuts shorter and longer than the lease, PostgreSQL crashing, a pause, manual runs
//! and a cancel). Then every promise is checked against the database and against a ledger the
//! runs themselves wrote (a probe plugin appending start and end lines on CLOCK_MONOTONIC).
//!
//! `PACER_CHAOS_SEEDS=1,2,3` runs several seeds; by default one, which CI runs.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use pacer_tests::postgres::Postgres;
use pacer_tests::proxy::Proxy;
use pacer_tests::{Daemon, Sandbox, processes_of_run, wait_for, wait_until};

const NODES: [&str; 3] = ["a", "b", "c"];
/// `lease_ttl`, `heartbeat`: short, so the test is, but long enough that a crash of PostgreSQL
/// on a loaded machine stays shorter than a lease.
const LEASE: Duration = Duration::from_secs(8);
const HEARTBEAT: Duration = Duration::from_secs(1);
/// The global cap, and the pool `narrow`'s cap and start rate.
const MAX_CONCURRENCY: usize = 6;
const NARROW_CAP: usize = 2;
const NARROW_RATE: f64 = 2.0;
/// Each node's own cap: below the global one, so that runs spread over the nodes.
const NODE_CAP: usize = 3;

fn config(node: &str, ledger: &str) -> String {
    let lease = LEASE.as_secs();
    let beat = HEARTBEAT.as_secs();
    format!(
        r#"[daemon]
plugin_dirs = ["plugins"]
database = "{node}.db"
socket = "{node}.sock"
max_concurrency = {MAX_CONCURRENCY}

[cluster]
database_url_file = "{node}.url"
node_id = "{node}"
lease_ttl = "{lease}s"
heartbeat = "{beat}s"
node_max_concurrency = {NODE_CAP}

[pools.narrow]
max_concurrency = {NARROW_CAP}
max_starts_per_second = {NARROW_RATE}

[[jobs]]
name = "every"
schedule = "* * * * * *"
plugin = "testkit"
overlap = "allow"
params = {{ action = "probe", ledger = "{ledger}", ms = 300 }}

[[jobs]]
name = "single"
schedule = "*/2 * * * * *"
plugin = "testkit"
overlap = "skip"
params = {{ action = "probe", ledger = "{ledger}", ms = 3000 }}

[[jobs]]
name = "queued"
schedule = "*/2 * * * * *"
plugin = "testkit"
overlap = "queue"
pool = "narrow"
params = {{ action = "probe", ledger = "{ledger}", ms = 1500 }}

[[jobs]]
name = "durable"
schedule = "*/3 * * * * *"
plugin = "testkit"
overlap = "allow"
recover = "retry"
params = {{ action = "probe", ledger = "{ledger}", ms = 5000 }}

[[jobs]]
name = "manual"
plugin = "testkit"
overlap = "allow"
params = {{ action = "probe", ledger = "{ledger}", ms = 4000 }}
"#
    )
}

/// A small deterministic generator (SplitMix64), so a seed replays the same chaos.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn node(&mut self) -> &'static str {
        NODES[usize::try_from(self.below(3)).unwrap()]
    }

    fn pause(&mut self) -> Duration {
        Duration::from_millis(2_000 + self.below(3_000))
    }
}

fn monotonic_ns() -> i128 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    i128::from(now.tv_sec()) * 1_000_000_000 + i128::from(now.tv_nsec())
}

/// The cluster under test: the server, the nodes' proxies and daemons, and what the chaos did.
struct Cluster {
    pg: Postgres,
    sandbox: Sandbox,
    proxies: BTreeMap<&'static str, Proxy>,
    daemons: BTreeMap<&'static str, Daemon>,
    /// When each run's processes were seen gone after a fault took its node (monotonic ns):
    /// the end of a run that could not write its `end` line.
    gone: HashMap<i64, i128>,
    /// When `every` was paused (wall-clock ms, widened by a second each side).
    paused: Vec<(i64, i64)>,
    log: Vec<String>,
}

impl Cluster {
    fn sql(&self, query: &str) -> Vec<Vec<String>> {
        self.pg
            .psql(query)
            .lines()
            .filter(|line| !line.is_empty())
            .map(|line| line.split('|').map(str::to_owned).collect())
            .collect()
    }

    fn config(node: &str) -> String {
        format!("{node}.toml")
    }

    fn pacer(&self, node: &str, args: &[&str]) -> pacer_tests::CommandOutput {
        self.sandbox.pacer_on(&Self::config(node), args)
    }

    fn start(&mut self, node: &'static str) {
        let daemon = self.sandbox.start_on(&Self::config(node));
        self.daemons.insert(node, daemon);
    }

    fn incarnations(&self) -> BTreeMap<String, (String, String)> {
        self.sql("SELECT id, incarnation, state FROM nodes")
            .into_iter()
            .map(|row| (row[0].clone(), (row[1].clone(), row[2].clone())))
            .collect()
    }

    fn abandoned(&self) -> usize {
        self.sql("SELECT count(*) FROM runs WHERE status = 'abandoned'")[0][0]
            .parse()
            .unwrap()
    }

    /// A node that runs something now (the faults that take a node are aimed at one), picked
    /// with `rng` among those.
    fn busy_node(&self, rng: &mut Rng) -> &'static str {
        let busy = wait_until("a node with runs in flight", || {
            let busy: Vec<&'static str> = NODES
                .into_iter()
                .filter(|node| self.daemons.contains_key(node))
                .filter(|node| !self.running_on(node).is_empty())
                .collect();
            (!busy.is_empty()).then_some(busy)
        });
        busy[usize::try_from(rng.below(busy.len() as u64)).unwrap()]
    }

    fn running_on(&self, node: &str) -> Vec<i64> {
        self.sql(&format!(
            "SELECT id FROM runs WHERE node = '{node}' AND status = 'running'"
        ))
        .into_iter()
        .map(|row| row[0].parse().unwrap())
        .collect()
    }

    /// The live processes of run `id` (run ids repeat across the tests' databases: the
    /// sandbox's directory, every run's working directory, tells them apart).
    fn processes(&self, id: i64) -> Vec<u32> {
        processes_of_run(id)
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/cwd"))
                    .is_ok_and(|cwd| cwd == self.sandbox.path())
            })
            .collect()
    }

    /// After a fault took `node` at `since` (monotonic ns): each of `runs` is recorded
    /// `abandoned` by a peer within lease + heartbeat + 1 s, and its processes were gone by
    /// then.
    fn expect_taken_over(&mut self, node: &str, runs: &[i64], since: i128) {
        let bound = LEASE + HEARTBEAT + Duration::from_secs(1);
        let mut open: BTreeSet<i64> = runs.iter().copied().collect();
        let deadline = Instant::now() + bound + Duration::from_secs(20);
        while !open.is_empty() {
            assert!(
                Instant::now() < deadline,
                "runs {open:?} of {node} were never taken over"
            );
            for id in open.clone() {
                if self.processes(id).is_empty() {
                    self.gone.entry(id).or_insert_with(monotonic_ns);
                }
                let status = &self.sql(&format!("SELECT status FROM runs WHERE id = {id}"))[0][0];
                if status == "running" {
                    continue;
                }
                let after = Duration::from_nanos(u64::try_from(monotonic_ns() - since).unwrap());
                assert_eq!(status, "abandoned", "run {id} of {node}");
                assert!(
                    self.gone.contains_key(&id),
                    "run {id} of {node} was abandoned while its processes {:?} still ran",
                    self.processes(id)
                );
                assert!(
                    after <= bound + Duration::from_millis(500),
                    "run {id} of {node} was abandoned {after:?} after the fault (bound {bound:?})"
                );
                open.remove(&id);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A fault that must abandon nothing: every node stays the same live incarnation through
    /// it and a lease after it.
    fn expect_nothing_abandoned(
        &self,
        before: usize,
        incarnations: &BTreeMap<String, (String, String)>,
    ) {
        std::thread::sleep(LEASE + HEARTBEAT);
        assert_eq!(
            self.abandoned(),
            before,
            "a blip shorter than the lease abandoned runs"
        );
        assert_eq!(
            &self.incarnations(),
            incarnations,
            "a node was declared dead"
        );
    }
}

#[test]
fn three_nodes_keep_every_promise_under_chaos() {
    let seeds: Vec<u64> = std::env::var("PACER_CHAOS_SEEDS")
        .ok()
        .map(|seeds| {
            seeds
                .split(',')
                .map(|s| s.trim().parse().unwrap())
                .collect()
        })
        .unwrap_or_else(|| vec![1]);
    for seed in seeds {
        chaos(seed);
    }
}

fn chaos(seed: u64) {
    let Some(pg) = Postgres::start() else {
        return;
    };
    let sandbox = Sandbox::new();
    let ledger = sandbox.path().join("ledger");
    let ledger = ledger.to_str().unwrap().to_owned();
    let mut proxies = BTreeMap::new();
    for node in NODES {
        let proxy = Proxy::to_port(pg.port());
        let url = sandbox.write(&format!("{node}.url"), &pg.url_via(proxy.port(), ""));
        std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o600)).unwrap();
        sandbox.write(&Cluster::config(node), &config(node, &ledger));
        proxies.insert(node, proxy);
    }
    let mut cluster = Cluster {
        pg,
        sandbox,
        proxies,
        daemons: BTreeMap::new(),
        gone: HashMap::new(),
        paused: Vec::new(),
        log: Vec::new(),
    };
    let began = jiff::Timestamp::now();
    for node in NODES {
        cluster.start(node);
    }
    let mut rng = Rng(seed);
    let pause = |rng: &mut Rng| std::thread::sleep(rng.pause());
    pause(&mut rng);

    // kill -9, and a restart after a while.
    let victim = cluster.busy_node(&mut rng);
    let killed_at = monotonic_ns();
    let daemon = cluster.daemons.get_mut(victim).unwrap();
    daemon.signal("KILL");
    daemon.wait();
    let runs = cluster.running_on(victim);
    cluster
        .log
        .push(format!("kill -9 {victim} (its runs {runs:?})"));
    cluster.expect_taken_over(victim, &runs, killed_at);
    cluster.start(victim);
    pause(&mut rng);

    // A cut shorter than the lease.
    let victim = cluster.busy_node(&mut rng);
    let (before, incarnations) = (cluster.abandoned(), cluster.incarnations());
    cluster.log.push(format!("cut {victim} for 2 s"));
    cluster.proxies[victim].cut();
    std::thread::sleep(Duration::from_secs(2));
    cluster.proxies[victim].restore();
    cluster.expect_nothing_abandoned(before, &incarnations);
    pause(&mut rng);

    // SIGSTOP for twice the lease: its runs stop themselves; woken, it stops with its reason.
    let victim = cluster.busy_node(&mut rng);
    let stopped_at = monotonic_ns();
    cluster.daemons[victim].signal("STOP");
    let runs = cluster.running_on(victim);
    cluster
        .log
        .push(format!("SIGSTOP {victim} (its runs {runs:?})"));
    cluster.expect_taken_over(victim, &runs, stopped_at);
    std::thread::sleep((LEASE * 2).saturating_sub(Duration::from_nanos(
        u64::try_from(monotonic_ns() - stopped_at).unwrap(),
    )));
    let daemon = cluster.daemons.get_mut(victim).unwrap();
    daemon.signal("CONT");
    assert_eq!(daemon.wait(), Some(1), "a fenced node exits with an error");
    cluster.start(victim);
    pause(&mut rng);

    // A cut longer than the lease: the node stops its runs and itself before peers take over.
    let victim = cluster.busy_node(&mut rng);
    let cut_at = monotonic_ns();
    let runs = cluster.running_on(victim);
    cluster.log.push(format!(
        "cut {victim} for a lease and more (its runs {runs:?})"
    ));
    cluster.proxies[victim].cut();
    cluster.expect_taken_over(victim, &runs, cut_at);
    let daemon = cluster.daemons.get_mut(victim).unwrap();
    assert_eq!(
        daemon.wait(),
        Some(1),
        "a node cut off for a lease fences itself"
    );
    cluster.proxies[victim].restore();
    cluster.start(victim);
    pause(&mut rng);

    // PostgreSQL crashes and comes back: nothing is abandoned, nobody is declared dead.
    let (before, incarnations) = (cluster.abandoned(), cluster.incarnations());
    cluster
        .log
        .push("PostgreSQL restart -m immediate".to_owned());
    cluster.pg.restart_immediate();
    cluster.expect_nothing_abandoned(before, &incarnations);
    pause(&mut rng);

    // A pause of `every` from one node, a resume from another.
    let (by, then) = (rng.node(), rng.node());
    let paused_from = jiff::Timestamp::now().as_millisecond() - 1_000;
    let out = cluster.pacer(by, &["pause", "every"]);
    assert_eq!(out.code, 0, "{out}");
    std::thread::sleep(Duration::from_secs(4));
    let out = cluster.pacer(then, &["resume", "every"]);
    assert_eq!(out.code, 0, "{out}");
    cluster
        .paused
        .push((paused_from, jiff::Timestamp::now().as_millisecond() + 1_000));
    cluster
        .log
        .push(format!("pause every on {by}, resume on {then}"));

    // Manual runs from every node; one is cancelled from another node while it runs.
    let mut manual = Vec::new();
    for node in NODES {
        let out = cluster.pacer(node, &["run", "manual", "--json"]);
        assert_eq!(out.code, 0, "{out}");
        let first: serde_json::Value =
            serde_json::from_str(out.stdout.lines().next().unwrap()).unwrap();
        manual.push(first["id"].as_i64().unwrap());
    }
    let cancelled = manual[usize::try_from(rng.below(3)).unwrap()];
    wait_for(&format!("manual run {cancelled} to start"), || {
        cluster.sql(&format!("SELECT status FROM runs WHERE id = {cancelled}"))[0][0] == "running"
    });
    let out = cluster.pacer(rng.node(), &["cancel", &cancelled.to_string()]);
    assert_eq!(out.code, 0, "{out}");
    wait_for(&format!("run {cancelled} cancelled"), || {
        cluster.sql(&format!("SELECT status FROM runs WHERE id = {cancelled}"))[0][0] == "cancelled"
    });
    for id in &manual {
        wait_for(&format!("manual run {id} over"), || {
            !matches!(
                cluster.sql(&format!("SELECT status FROM runs WHERE id = {id}"))[0][0].as_str(),
                "queued" | "running"
            )
        });
    }
    cluster
        .log
        .push(format!("manual runs {manual:?}, {cancelled} cancelled"));

    let ended = jiff::Timestamp::now();
    let daemons = std::mem::take(&mut cluster.daemons);
    for (node, mut daemon) in daemons {
        assert_eq!(daemon.stop(), Some(0), "{node} stops cleanly");
    }
    eprintln!("seed {seed}: {}", cluster.log.join("; "));
    check(&cluster, began, ended);
}

/// One run as the ledger saw it.
#[derive(Debug, Default, Clone)]
struct Seen {
    job: String,
    trigger: String,
    scheduled_at: String,
    starts: usize,
    start: i128,
    end: Option<i128>,
}

fn check(cluster: &Cluster, began: jiff::Timestamp, ended: jiff::Timestamp) {
    // 1. No fire recorded twice, no fire started twice.
    let twice = cluster.sql(
        "SELECT job, scheduled_at, count(*) FROM runs WHERE trigger IN ('schedule', 'catch_up')
         GROUP BY job, scheduled_at HAVING count(*) > 1",
    );
    assert!(twice.is_empty(), "fires recorded twice: {twice:?}");
    let ledger = std::fs::read_to_string(cluster.sandbox.path().join("ledger")).unwrap();
    let mut seen: BTreeMap<i64, Seen> = BTreeMap::new();
    for line in ledger.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let id: i64 = fields[1].parse().unwrap();
        let entry = seen.entry(id).or_default();
        match fields[0] {
            "start" => {
                entry.starts += 1;
                entry.job = fields[2].to_owned();
                entry.trigger = fields[3].to_owned();
                entry.scheduled_at = fields[4].to_owned();
                entry.start = fields[5].parse().unwrap();
            }
            "end" => entry.end = Some(fields[2].parse().unwrap()),
            other => panic!("unexpected ledger line {other}"),
        }
    }
    let restarted: Vec<_> = seen.iter().filter(|(_, s)| s.starts > 1).collect();
    assert!(restarted.is_empty(), "runs started twice: {restarted:?}");
    let mut by_fire: HashMap<(&str, &str), usize> = HashMap::new();
    for run in seen
        .values()
        .filter(|s| matches!(s.trigger.as_str(), "schedule" | "catch_up"))
    {
        *by_fire.entry((&run.job, &run.scheduled_at)).or_default() += 1;
    }
    let doubled: Vec<_> = by_fire.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "fires that ran twice: {doubled:?}");

    // 2. No fire lost: every instant `pacer check` lists for the window is a record.
    let from = began.as_millisecond() + 2_000;
    let until = ended.as_millisecond() - 3_000;
    let recorded: BTreeSet<(String, i64)> = cluster
        .sql("SELECT job, scheduled_at FROM runs WHERE trigger IN ('schedule', 'catch_up')")
        .into_iter()
        .map(|row| (row[0].clone(), row[1].parse().unwrap()))
        .collect();
    let span_s = (until - from) / 1_000 + 2;
    let check = cluster.pacer(
        "a",
        &[
            "check",
            "--json",
            "--next",
            &span_s.to_string(),
            "--from",
            &jiff::Timestamp::from_millisecond(from).unwrap().to_string(),
        ],
    );
    assert_eq!(check.code, 0, "{check}");
    let mut lost = Vec::new();
    let mut expected = 0;
    for job in check.json().as_array().unwrap() {
        let name = job["job"].as_str().unwrap();
        for next in job["next"].as_array().unwrap() {
            let at = next
                .as_str()
                .unwrap()
                .parse::<jiff::Timestamp>()
                .unwrap()
                .as_millisecond();
            let paused =
                name == "every" && cluster.paused.iter().any(|(a, b)| (*a..=*b).contains(&at));
            if at >= until || paused {
                continue;
            }
            expected += 1;
            if !recorded.contains(&(name.to_owned(), at)) {
                lost.push(format!("{name} at {}", next.as_str().unwrap()));
            }
        }
    }
    assert!(expected > 100, "the window held {expected} fires");
    assert!(lost.is_empty(), "fires without a record: {lost:?}");

    // 3. Caps and start rates, swept over when the runs really ran.
    let pools: HashMap<i64, String> = cluster
        .sql("SELECT id, pool FROM runs")
        .into_iter()
        .map(|row| (row[0].parse().unwrap(), row[1].clone()))
        .collect();
    let now = monotonic_ns();
    let spans: Vec<(i64, &Seen, i128, i128)> = seen
        .iter()
        .filter(|(_, s)| s.starts == 1)
        .map(|(id, s)| {
            let end = s
                .end
                .or_else(|| cluster.gone.get(id).copied())
                .unwrap_or(now);
            (*id, s, s.start, end)
        })
        .collect();
    for &(id, _, start, _) in &spans {
        let going: Vec<_> = spans
            .iter()
            .filter(|(_, _, s, e)| *s <= start && start < *e)
            .collect();
        assert!(
            going.len() <= MAX_CONCURRENCY,
            "{} runs at once when run {id} started: {going:?}",
            going.len()
        );
        let narrow = going
            .iter()
            .filter(|(other, ..)| pools.get(other).is_some_and(|p| p == "narrow"))
            .count();
        assert!(
            narrow <= NARROW_CAP,
            "{narrow} runs of pool narrow at once at run {id}"
        );
    }
    let narrow_starts: Vec<i128> = spans
        .iter()
        .filter(|(id, ..)| pools.get(id).is_some_and(|p| p == "narrow"))
        .map(|(_, _, start, _)| *start)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    for (i, first) in narrow_starts.iter().enumerate() {
        for (j, last) in narrow_starts.iter().enumerate().skip(i + 1) {
            let seconds = (last - first) as f64 / 1e9;
            let allowed = NARROW_RATE.max(1.0) + NARROW_RATE * seconds + 1.0;
            assert!(
                (j - i + 1) as f64 <= allowed,
                "{} starts in pool narrow within {seconds:.3} s",
                j - i + 1
            );
        }
    }

    // 4. No two runs of a `skip` or `queue` job overlap.
    for job in ["single", "queued"] {
        let mut runs: Vec<_> = spans.iter().filter(|(_, s, ..)| s.job == job).collect();
        runs.sort_by_key(|(_, _, start, _)| *start);
        for pair in runs.windows(2) {
            assert!(
                pair[0].3 <= pair[1].2,
                "runs {} and {} of {job} overlap",
                pair[0].0,
                pair[1].0
            );
        }
    }

    // 7. Each abandoned run of a `recover = "retry"` job has exactly one successor.
    let successors = cluster.sql(
        "SELECT r.id, (SELECT count(*) FROM runs s WHERE s.fire_key = 'r:' || r.id)
         FROM runs r WHERE r.job = 'durable' AND r.status = 'abandoned'",
    );
    for row in &successors {
        assert_eq!(
            row[1], "1",
            "abandoned run {} has {} successors",
            row[0], row[1]
        );
    }
    eprintln!(
        "checked: {expected} scheduled fires, {} runs in the ledger, {} abandoned, {} retried",
        seen.len(),
        cluster.abandoned(),
        successors.len()
    );
}
