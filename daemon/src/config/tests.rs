//! Config loading against real files in temporary directories.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

const ROOT: Environment = Environment {
    can_switch_users: true,
    can_run_as_root: true,
};
const USER: Environment = Environment {
    can_switch_users: false,
    can_run_as_root: false,
};
/// pacerd as the packaged unit runs it: a user of its own with `CAP_SETUID` and `CAP_SETGID`.
const UNIT: Environment = Environment {
    can_switch_users: true,
    can_run_as_root: false,
};

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::tempdir().unwrap())
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

fn errors_of(text: &str) -> Vec<String> {
    let dir = Dir::new();
    let path = dir.write("pacer.toml", text);
    load(&path, ROOT)
        .unwrap_err()
        .0
        .iter()
        .map(|e| {
            e.to_string()
                .strip_prefix(&format!("{}:", path.display()))
                .unwrap()
                .replace(&path.display().to_string(), "PATH")
        })
        .collect()
}

#[test]
fn every_contract_key_is_accepted() {
    let dir = Dir::new();
    let path = dir.write(
        "pacer.toml",
        r#"
[daemon]
plugin_dirs = ["plugins", "/usr/lib/pacer/plugins"]
database = "state/pacer.db"
socket = "run/pacer.sock"
timezone = "Europe/Berlin"
max_concurrency = 4
max_queue = 100
max_catch_up = 10
output_limit = "64K"
max_cpu_pressure = 80
max_memory_pressure = 50.5
max_io_pressure = 90
pressure_dir = "pressure"
history_retention = "7d"
shutdown_grace = "5s"
metrics_listen = "127.0.0.1:9464"
web_listen = "[::1]:9181"
web_show_output = true

[pools.mail]
max_concurrency = 2
max_starts_per_second = 0.5

[[jobs]]
name = "nightly-report"
schedule = "30 2 * * *"
timezone = "America/New_York"
plugin = "exec"
pool = "mail"
overlap = "queue"
timeout = "10m"
retries = 3
retry_backoff = "30s"
retry_backoff_max = "1h"
jitter = "5m"
catch_up = "all"
priority = -2
enabled = false
memory_limit = "512M"
on_failure = ["page-ops"]
on_success = ["page-ops"]
[jobs.params]
command = "make-report --date yesterday"
env = { A = "1" }
when = 2027-01-01T00:00:00Z

[[jobs]]
name = "page-ops"
plugin = "http"
"#,
    );
    let config = load(&path, ROOT).unwrap();
    let d = &config.daemon;
    assert_eq!(
        d.plugin_dirs,
        vec![
            dir.path().join("plugins"),
            PathBuf::from("/usr/lib/pacer/plugins")
        ]
    );
    assert_eq!(d.database, dir.path().join("state/pacer.db"));
    assert_eq!(d.socket, dir.path().join("run/pacer.sock"));
    assert_eq!(d.timezone.name, "Europe/Berlin");
    assert_eq!(
        (d.max_concurrency, d.max_queue, d.max_catch_up),
        (4, 100, 10)
    );
    assert_eq!(d.output_limit, 64 << 10);
    assert_eq!(
        d.pressure,
        PressureLimits {
            cpu: Some(80.0),
            memory: Some(50.5),
            io: Some(90.0),
            dir: dir.path().join("pressure"),
        }
    );
    assert_eq!(d.history_retention, Duration::from_secs(7 * 86_400));
    assert_eq!(d.shutdown_grace, Duration::from_secs(5));
    assert_eq!(d.metrics_listen.unwrap().to_string(), "127.0.0.1:9464");
    assert_eq!(d.web_listen.unwrap().to_string(), "[::1]:9181");
    assert!(d.web_show_output);
    assert_eq!(
        config.pools["mail"],
        Pool {
            max_concurrency: Some(2),
            max_starts_per_second: Some(0.5)
        }
    );
    assert!(config.pools.contains_key("default"));

    let job = config.job("nightly-report").unwrap();
    assert_eq!(job.schedule_text.as_deref(), Some("30 2 * * *"));
    assert_eq!(job.timezone.name, "America/New_York");
    assert_eq!(job.plugin, "exec");
    assert_eq!(job.pool, "mail");
    assert_eq!(job.overlap, Overlap::Queue);
    assert_eq!(job.timeout, Some(Duration::from_secs(600)));
    assert_eq!(job.retries, 3);
    assert_eq!(job.retry_backoff, Duration::from_secs(30));
    assert_eq!(job.retry_backoff_max, Duration::from_secs(3600));
    assert_eq!(job.jitter, Some(Duration::from_secs(300)));
    assert!(job.jitter_offset < Duration::from_secs(300));
    assert_eq!(job.catch_up, CatchUp::All);
    assert_eq!(job.priority, -2);
    assert!(!job.enabled);
    assert_eq!(job.memory_limit, Some(512 << 20));
    assert_eq!(job.on_failure, vec!["page-ops"]);
    assert_eq!(
        *job.params,
        serde_json::json!({
            "command": "make-report --date yesterday",
            "env": {"A": "1"},
            "when": "2027-01-01T00:00:00Z",
        })
    );
    assert_eq!(*job.source, *path);
    assert_eq!(job.line, 25);
    assert_eq!(&*job.workdir, dir.path());

    let manual = config.job("page-ops").unwrap();
    assert!(manual.schedule.is_none());
    assert_eq!(
        manual.timezone.name, "Europe/Berlin",
        "the daemon's zone is the default"
    );
    assert_eq!(manual.pool, "default");
    assert_eq!(manual.overlap, Overlap::Skip);
    assert_eq!(manual.catch_up, CatchUp::Skip);
    assert!(manual.enabled);
}

#[test]
fn defaults_apply_to_an_empty_file() {
    let dir = Dir::new();
    let config = load(&dir.write("pacer.toml", ""), ROOT).unwrap();
    let d = &config.daemon;
    assert_eq!(
        d.plugin_dirs,
        vec![
            PathBuf::from("/usr/lib/pacer/plugins"),
            PathBuf::from("/usr/local/lib/pacer/plugins")
        ]
    );
    assert_eq!(d.database, PathBuf::from("/var/lib/pacer/pacer.db"));
    assert_eq!(d.socket, PathBuf::from("/run/pacer/pacer.sock"));
    assert_eq!(d.timezone.name, "UTC");
    assert_eq!(
        (d.max_concurrency, d.max_queue, d.max_catch_up),
        (8, 10_000, 100)
    );
    assert_eq!(d.output_limit, 1 << 20);
    assert_eq!(d.pressure.dir, PathBuf::from("/proc/pressure"));
    assert_eq!(d.history_retention, Duration::from_secs(30 * 86_400));
    assert_eq!(d.shutdown_grace, Duration::from_secs(30));
    assert!(d.metrics_listen.is_none());
    assert!(d.web_listen.is_none());
    assert!(!d.web_show_output);
    assert!(config.jobs.is_empty());
}

#[test]
fn syntax_errors_name_line_and_column() {
    assert_eq!(
        errors_of("[daemon]\nmax_concurrency = = 3\n"),
        vec!["2:19: extra `=`, expected nothing"]
    );
}

#[test]
fn unknown_keys_are_errors() {
    let errors = errors_of("[daemon]\nmax_concurency = 3\n");
    assert_eq!(
        errors,
        ["2:1: unknown key `max_concurency` in [daemon]: did you mean `max_concurrency`?"]
    );
    let errors = errors_of("[[jobs]]\nname = \"a\"\nplugin = \"exec\"\ncolour = \"blue\"\n");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with(
            "4:1: unknown key `colour` in [[jobs]]: expected one of `name`, `schedule`,"
        ),
        "{errors:?}"
    );
    let errors = errors_of("[pools.mail]\nsize = 3\n\n[jobs]\nname = \"a\"\n");
    assert_eq!(
        errors,
        [
            "2:1: unknown key `size` in [pools.mail]: expected one of `max_concurrency`, `max_starts_per_second`",
            "4:1: jobs must be [[jobs]] tables, one per job",
        ]
    );
    assert_eq!(
        errors_of("daemon = 3\n"),
        ["1:10: [daemon] must be a table, found integer"]
    );
}

/// One pass reports every mistake: an unknown key hides none of the others, a value of the
/// wrong type in one job hides nothing in the next, and a job that cannot be read is still a
/// job that chains may name.
#[test]
fn one_pass_reports_unknown_keys_with_every_other_error() {
    let errors = errors_of(
        r#"
[daemon]
max_queue = "many"

[[jobs]]
name = "backup"
plugin = "exec"
schedule = "61 * * * *"
timout = "30s"
on_failure = ["page"]

[[jobs]]
name = "page"
plugin = "exec"
retries = "three"

[[jobs]]
name = "report"
plugin = "exec"
pool = "nope"
"#,
    );
    assert_eq!(errors.len(), 5, "{errors:?}");
    assert!(
        errors[0].starts_with("3:13: max_queue: invalid type: string \"many\", expected i64"),
        "{errors:?}"
    );
    assert!(
        errors[1].starts_with("8:12: invalid schedule `61 * * * *`"),
        "{errors:?}"
    );
    assert_eq!(
        errors[2],
        "9:1: unknown key `timout` in [[jobs]]: did you mean `timeout`?"
    );
    assert!(
        errors[3].starts_with("15:11: retries: invalid type: string \"three\""),
        "{errors:?}"
    );
    assert!(
        errors[4].starts_with("20:8: unknown pool `nope`"),
        "{errors:?}"
    );
}

#[test]
fn a_job_with_several_bad_values_has_each_reported_in_one_pass() {
    let errors = errors_of(
        r#"
[[jobs]]
name = "a"
plugin = "exec"
schedule = "61 * * * *"
retries = "three"
timeout = 5
overlap = "skipp"

[[jobs]]
name = "b"
plugin = "exec"
schedule = "@dialy"
timezone = "Europe/Berln"
"#,
    );
    let starts = [
        "5:12: invalid schedule `61 * * * *`",
        "6:11: retries: invalid type: string \"three\"",
        "7:11: timeout: invalid type: integer `5`",
        "8:11: overlap `skipp` is not one of",
        "13:12: invalid schedule `@dialy`",
        "14:12: unknown time zone `Europe/Berln`",
    ];
    assert_eq!(errors.len(), starts.len(), "{errors:?}");
    for (error, start) in errors.iter().zip(starts) {
        assert!(
            error.starts_with(start),
            "{error} should start with {start}"
        );
    }
}

#[test]
fn a_file_that_is_not_utf8_names_the_place_of_the_first_bad_byte() {
    let dir = Dir::new();
    let path = dir.path().join("pacer.toml");
    let mut text =
        b"[daemon]\ntimezone = \"Europe/Z\xc3\xbcrich\"\n[[jobs]]\nname = \"caf".to_vec();
    text.extend([0xe9, b'"', b'\n']);
    std::fs::write(&path, text).unwrap();
    let errors = load(&path, ROOT).unwrap_err().to_string();
    assert_eq!(
        errors,
        format!(
            "{}:4:12: byte 0xe9 is not UTF-8: a config file must be UTF-8 text; convert it (for \
             example with iconv -t UTF-8) or remove the byte",
            path.display()
        )
    );
    let settings = load_daemon_settings(&path).unwrap_err().to_string();
    assert!(
        settings.contains("pacer.toml:4:12: byte 0xe9 is not UTF-8"),
        "{settings}"
    );
}

#[test]
fn names_have_a_maximum_length() {
    let long = "n".repeat(65_536);
    let errors = errors_of(&format!(
        "[pools.{long}]\n\n[[jobs]]\nname = \"{long}\"\nplugin = \"exec\"\n"
    ));
    assert_eq!(
        errors,
        [
            "1:8: pool name `nnnnnnnnnnnnnnnnnnnn…` is 65536 characters long; at most 128 are allowed",
            "4:8: job name `nnnnnnnnnnnnnnnnnnnn…` is 65536 characters long; at most 128 are allowed",
        ]
    );
    let longest = "n".repeat(128);
    let (_dir, config) = load_text(&format!(
        "[[jobs]]\nname = \"{longest}\"\nplugin = \"exec\"\n"
    ));
    assert_eq!(config.jobs[0].name, longest);
}

#[test]
fn semantic_errors_point_at_the_value_and_say_what_was_expected() {
    let errors = errors_of(
        r#"
[daemon]
max_concurrency = 0
max_catch_up = 20000

[[jobs]]
name = "a"
plugin = "exec"
schedule = "61 * * * *"

[[jobs]]
name = "b"
plugin = "exec"
timezone = "Mars/Olympus"

[[jobs]]
name = "a"
plugin = "exec"
retries = -1

[[jobs]]
name = "c"
plugin = "exec"
pool = "nope"
timeout = "10 minutes"
overlap = "sometimes"
"#,
    );
    assert_eq!(
        errors,
        [
            "3:19: max_concurrency must be at least 1, not 0",
            "4:16: max_catch_up must be at most 10000, not 20000",
            "9:12: invalid schedule `61 * * * *`: minute field `61`: `61` is out of range; values are 0-59",
            "14:12: unknown time zone `Mars/Olympus`: expected an IANA name such as `Europe/Berlin` or `UTC` from the system's tz database (/usr/share/zoneinfo)",
            "17:8: duplicate job name `a`: first defined at PATH:7:8; job names must be unique",
            "19:11: retries must be at least 0, not -1",
            "24:8: unknown pool `nope`: define [pools.nope] or use one of: default",
            "25:11: timeout: `10 minutes` is not a duration such as 500ms, 30s, 10m, 2h, 7d or 1h30m",
            "26:11: overlap `sometimes` is not one of `skip`, `queue`, `replace`, `allow`",
        ],
        "all errors: {errors:?}"
    );
}

#[test]
fn enum_values_list_the_choices() {
    let errors = errors_of("[[jobs]]\nname = \"a\"\nplugin = \"exec\"\noverlap = \"sometimes\"\n");
    assert_eq!(
        errors,
        vec!["4:11: overlap `sometimes` is not one of `skip`, `queue`, `replace`, `allow`"]
    );
}

#[test]
fn missing_required_keys_point_at_the_table() {
    let errors = errors_of("[[jobs]]\nname = \"a\"\n");
    assert_eq!(errors, vec!["1:1: missing field `plugin`"]);
}

#[test]
fn names_are_checked() {
    let errors = errors_of("[[jobs]]\nname = \"a b\"\nplugin = \"Exec\"\n");
    assert_eq!(
        errors,
        vec![
            "2:8: job name `a b` may only hold letters, digits, `_`, `.` and `-`",
            "3:10: plugin name `Exec` may only hold lowercase letters, digits, `_` and `-`",
        ]
    );
}

#[test]
fn chains_must_name_jobs_and_not_cycle() {
    let errors = errors_of(
        r#"
[[jobs]]
name = "a"
plugin = "exec"
on_success = ["b"]

[[jobs]]
name = "b"
plugin = "exec"
on_failure = ["a", "ghost"]
"#,
    );
    assert_eq!(
        errors,
        vec![
            "5:15: on_success of `a` names `b`, which leads back to `a`: chains must not form a cycle",
            "10:15: on_failure of `b` names `a`, which leads back to `b`: chains must not form a cycle",
            "10:20: on_failure names `ghost`, which is not a job; define it or remove the name",
        ]
    );
}

#[test]
fn run_as_user_needs_root() {
    let dir = Dir::new();
    let path = dir.write(
        "pacer.toml",
        "[[jobs]]\nname = \"a\"\nplugin = \"exec\"\nuser = \"root\"\n",
    );
    assert!(load(&path, ROOT).is_ok());
    let errors = load(&path, USER).unwrap_err().to_string();
    assert!(
        errors.ends_with(
            ":4:8: user = \"root\" needs pacerd to run as root, or with CAP_SETUID and CAP_SETGID \
             as the packaged service does (it switches user before loading the plugin); run pacerd \
             so, or remove `user`"
        ),
        "{errors}"
    );
    let errors = load(&path, UNIT).unwrap_err().to_string();
    assert!(
        errors.ends_with(
            ":4:8: user = \"root\" runs the job as root, which needs pacerd to run as root or to \
             hold CAP_DAC_OVERRIDE, CAP_CHOWN and CAP_FOWNER: without them a run as root could \
             not read, change or chown other users' files. Set `user` to the user that owns the \
             job's files (such as \"www-data\"), or grant pacerd those capabilities with a \
             drop-in (systemctl edit pacer; see \"Jobs as root\" in \
             /usr/share/doc/pacer/operations.md)"
        ),
        "{errors}"
    );
    let granted = Environment {
        can_run_as_root: true,
        ..UNIT
    };
    assert!(load(&path, granted).is_ok());
    let path = dir.write(
        "nobody.toml",
        "[[jobs]]\nname = \"a\"\nplugin = \"exec\"\nuser = \"nobody\"\n",
    );
    assert!(
        load(&path, UNIT).is_ok(),
        "any other user needs only the capabilities to switch"
    );
    let path = dir.write(
        "other.toml",
        "[[jobs]]\nname = \"a\"\nplugin = \"exec\"\nuser = \"no-such-user-here\"\n",
    );
    let errors = load(&path, ROOT).unwrap_err().to_string();
    assert!(errors.contains("no user `no-such-user-here`"), "{errors}");
}

#[test]
fn drop_ins_add_jobs_and_only_jobs() {
    let dir = Dir::new();
    let path = dir.write(
        "pacer.toml",
        "[[jobs]]\nname = \"main\"\nplugin = \"exec\"\n",
    );
    dir.write(
        "jobs.d/b.toml",
        "[[jobs]]\nname = \"b\"\nplugin = \"exec\"\n",
    );
    dir.write(
        "jobs.d/a.toml",
        "[[jobs]]\nname = \"a\"\nplugin = \"exec\"\n",
    );
    dir.write("jobs.d/.a.toml.swp", "garbage");
    dir.write("jobs.d/notes.txt", "garbage");
    let config = load(&path, ROOT).unwrap();
    let names: Vec<&str> = config.jobs.iter().map(|j| j.name.as_str()).collect();
    assert_eq!(names, ["main", "a", "b"]);
    assert_eq!(
        *config.job("a").unwrap().source,
        *dir.path().join("jobs.d/a.toml")
    );
    assert_eq!(
        &*config.job("a").unwrap().workdir,
        dir.path().join("jobs.d"),
        "a drop-in's jobs run in the drop-in's own directory"
    );
    assert_eq!(&*config.job("main").unwrap().workdir, dir.path());

    dir.write("jobs.d/c.toml", "[daemon]\nmax_queue = 1\n");
    let errors = load(&path, ROOT).unwrap_err().to_string();
    assert!(
        errors.contains(
            "c.toml:1:2: a drop-in holds only [[jobs]]; `daemon` belongs in the main config file"
        ),
        "{errors}"
    );

    std::fs::remove_file(dir.path().join("jobs.d/c.toml")).unwrap();
    dir.write(
        "jobs.d/c.toml",
        "[[jobs]]\nname = \"main\"\nplugin = \"exec\"\n",
    );
    let errors = load(&path, ROOT).unwrap_err().to_string();
    assert!(
        errors.contains("c.toml:2:8: duplicate job name `main`: first defined at"),
        "{errors}"
    );
}

#[test]
fn the_cli_reads_only_the_daemon_table() {
    let dir = Dir::new();
    let path = dir.write(
        "pacer.toml",
        "[daemon]\ndatabase = \"h.db\"\n\n[[jobs]]\nname = \"bad name\"\nschedule = \"nope\"\n",
    );
    assert!(load(&path, ROOT).is_err());
    let settings = load_daemon_settings(&path).unwrap();
    assert_eq!(settings.database, dir.path().join("h.db"));
}

#[test]
fn a_missing_file_says_how_to_pick_another() {
    let error = load(Path::new("/nonexistent/pacer.toml"), ROOT)
        .unwrap_err()
        .to_string();
    assert_eq!(
        error,
        "/nonexistent/pacer.toml: cannot read the config file: No such file or directory (os \
         error 2); pass --config PATH or set PACER_CONFIG to use another file"
    );
}

#[test]
fn next_fire_includes_jitter() {
    let dir = Dir::new();
    let path = dir.write(
        "pacer.toml",
        "[[jobs]]\nname = \"j\"\nplugin = \"exec\"\nschedule = \"0 * * * *\"\njitter = \"10m\"\n",
    );
    let config = load(&path, ROOT).unwrap();
    let job = config.job("j").unwrap();
    let offset = jiff::SignedDuration::try_from(job.jitter_offset).unwrap();
    let hour: jiff::Timestamp = "2027-01-01T01:00:00Z".parse().unwrap();
    let expected = hour.checked_add(offset).unwrap();
    let just_before = expected
        .checked_sub(jiff::SignedDuration::from_millis(1))
        .unwrap();
    assert_eq!(job.next_fire_after(just_before), Some(expected));
    assert_eq!(
        job.next_fire_after(expected),
        Some(
            expected
                .checked_add(jiff::SignedDuration::from_hours(1))
                .unwrap()
        )
    );
}

#[test]
fn the_example_configs_are_valid() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut checked = 0;
    for entry in std::fs::read_dir(&examples).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            if let Err(errors) = load(&path, ROOT) {
                panic!("{}:\n{errors}", path.display());
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "examples/*.toml were found");
}

#[test]
fn web_listen_must_be_an_address_and_port() {
    assert_eq!(
        errors_of("[daemon]\nweb_listen = \"localhost\"\n"),
        vec!["2:14: web_listen `localhost` is not an address and port such as 127.0.0.1:9181"]
    );
    assert_eq!(
        errors_of("[daemon]\nweb_show_output = \"yes\"\n"),
        vec!["2:19: web_show_output: invalid type: string \"yes\", expected a boolean"]
    );
}

#[test]
fn the_cluster_table_is_read_with_its_defaults() {
    let dir = Dir::new();
    let path = dir.write(
        "pacer.toml",
        "[cluster]\ndatabase_url = \"postgresql://pacer@db.example:5433/pacer?sslmode=verify-full&sslrootcert=ca.pem&target_session_attrs=read-write\"\nnode_max_concurrency = 4\npools = [\"default\"]\n\n[[jobs]]\nname = \"a\"\nplugin = \"exec\"\nrecover = \"retry\"\n",
    );
    let config = load(&path, ROOT).unwrap();
    let cluster = config.cluster.expect("the [cluster] table");
    assert_eq!(cluster.lease_ttl, Duration::from_secs(30));
    assert_eq!(cluster.heartbeat, Duration::from_secs(2));
    assert_eq!(cluster.max_clock_skew, Duration::from_secs(2));
    assert_eq!(cluster.node_max_concurrency, Some(4));
    assert_eq!(cluster.pools, Some(vec!["default".to_owned()]));
    assert_eq!(
        cluster.node_id,
        nix::unistd::gethostname().unwrap().to_string_lossy(),
        "node_id defaults to the host name"
    );
    assert_eq!(cluster.database.ssl_mode, SslMode::VerifyFull);
    assert_eq!(cluster.database.root_cert, Some(dir.path().join("ca.pem")));
    assert_eq!(cluster.database.to_string(), "pacer@db.example:5433/pacer");
    assert_eq!(config.jobs[0].recover, Recover::Retry);
    assert!(
        load(&dir.write("plain.toml", "[daemon]\n"), ROOT)
            .unwrap()
            .cluster
            .is_none()
    );
    assert_eq!(
        load_cluster_settings(&path)
            .unwrap()
            .unwrap()
            .database
            .ssl_mode,
        SslMode::VerifyFull
    );
}

#[test]
fn a_url_file_holding_a_password_must_not_be_world_readable() {
    use std::os::unix::fs::PermissionsExt;
    let dir = Dir::new();
    let url = dir.write(
        "database-url",
        "  postgresql://pacer:s3cret@127.0.0.1/pacer\n",
    );
    std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o644)).unwrap();
    let path = dir.write(
        "pacer.toml",
        "[cluster]\ndatabase_url_file = \"database-url\"\n",
    );
    let errors = load(&path, ROOT).unwrap_err().to_string();
    assert!(
        errors.contains("pacer.toml:2:21: database_url_file:")
            && errors.contains("holds a password and every user may read it (mode 0644)")
            && errors.contains("chmod 600"),
        "{errors}"
    );
    assert!(
        !errors.contains("s3cret"),
        "the password is never shown: {errors}"
    );
    std::fs::set_permissions(&url, std::fs::Permissions::from_mode(0o640)).unwrap();
    let cluster = load(&path, ROOT).unwrap().cluster.unwrap();
    assert!(cluster.database.has_password());
    assert_eq!(
        cluster.database.source,
        UrlSource::File(dir.path().join("database-url"))
    );
    assert!(!format!("{:?}", cluster.database).contains("s3cret"));
}

#[test]
fn cluster_errors_point_at_the_key() {
    let errors =
        errors_of("[cluster]\ndatabase_url = \"postgresql://h/db\"\ndatabase_url_file = \"f\"\n");
    assert_eq!(
        errors,
        vec!["3:21: give database_url or database_url_file, not both"]
    );
    let errors = errors_of("[cluster]\nnode_id = \"web 1\"\n");
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].starts_with("1:1: [cluster] needs database_url"));
    assert!(errors[1].starts_with("2:11: node_id `web 1` may only hold"));
    let errors = errors_of(
        "[cluster]\ndatabase_url = \"postgresql://h/db\"\nlease_ttl = \"5s\"\nheartbeat = \"2s\"\n",
    );
    assert_eq!(
        errors,
        vec![
            "4:13: heartbeat (2s) must be at most a third of lease_ttl (5s), so that \
             a late beat or two does not declare the node dead: lower heartbeat or raise \
             lease_ttl"
        ]
    );
    let errors = errors_of(
        "[cluster]\ndatabase_url = \"postgresql://h/db?sslmode=maybe\"\npools = [\"mail\"]\n",
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(
        errors[0].contains("sslmode `maybe` is not one of"),
        "{errors:?}"
    );
    assert!(errors[1].starts_with("3:10: unknown pool `mail` in [cluster] pools"));
    let errors = errors_of("[[jobs]]\nname = \"a\"\nplugin = \"exec\"\nrecover = \"rerun\"\n");
    assert_eq!(
        errors,
        vec!["4:11: recover `rerun` is not one of `abandon`, `retry`"]
    );
}

#[test]
fn key_value_connection_strings_keep_their_quoting() {
    let url = DatabaseUrl::parse(
        r"host=db port=5433 user=pacer password='it\'s' sslmode=verify-ca sslrootcert='/etc/ca dir/ca.pem' dbname=pacer",
        Path::new("/"),
        UrlSource::Inline,
    )
    .unwrap();
    assert_eq!(url.ssl_mode, SslMode::VerifyCa);
    assert_eq!(url.root_cert, Some(PathBuf::from("/etc/ca dir/ca.pem")));
    assert_eq!(url.postgres.get_password(), Some(&b"it's"[..]));
    assert_eq!(url.to_string(), "pacer@db:5433/pacer");
    let refused = DatabaseUrl::parse(
        "postgresql://h/db?sslcert=client.pem",
        Path::new("/"),
        UrlSource::Inline,
    )
    .unwrap_err();
    assert!(refused.contains("not a client certificate"), "{refused}");
}

#[test]
fn a_bad_database_url_never_shows_its_password() {
    for url in [
        "postgersql://pacer:s3cret@db.example/pacer",
        "postgresql://pacer:s3cret@db.example:99999/pacer",
        "host=db.example password=s3cret port=x",
        "postgresql://pacer:s3cret@db.example/pacer?sslmode=sometimes",
    ] {
        let errors = errors_of(&format!("[cluster]\ndatabase_url = \"{url}\"\n"));
        assert_eq!(errors.len(), 1, "{url}: {errors:?}");
        assert!(errors[0].starts_with("2:16: database_url: "), "{errors:?}");
        assert!(!errors[0].contains("s3cret"), "{errors:?}");
    }
    let errors = errors_of("[cluster]\ndatabase_url = \"postgersql://pacer:s3cret@h/p\"\n");
    assert!(
        errors[0].contains("starts with `postgersql://`; it must start with postgresql://"),
        "{errors:?}"
    );
}
