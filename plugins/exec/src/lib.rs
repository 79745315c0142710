//! The `exec` plugin: runs a command, as cron does.
//!
//! # Params
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `command` | string | a shell command line, run by `/bin/sh -c` |
//! | `argv` | array of strings | a program and its arguments, run without a shell; a program without a `/` is found on `PATH`, a relative one with a `/` (`./build.sh`) is taken from `cwd` |
//! | `env` | table of strings | variables added to the command's environment |
//! | `cwd` | string | the command's working directory; a relative path is taken from the directory of the job's config file |
//!
//! Exactly one of `command` and `argv` is required. Any other key is an error, so
//! `pacer check` reports a misspelled one.
//!
//! The command inherits the run's stdout and stderr, which become the run's output, and its
//! stdin (`/dev/null`). Exit status 0 is success; any other makes the run fail with
//! `command exited with code N`, and death by a signal with
//! `command killed by signal N (SIGNAME)`. A cancelled or timed-out run needs nothing from this
//! plugin: the command is in the run's process group, which `pacerd` signals as a whole.
//!
//! # Example
//!
//! ```toml
//! [[jobs]]
//! name = "backup"
//! schedule = "15 3 * * *"
//! plugin = "exec"
//! timeout = "2h"
//! [jobs.params]
//! command = "tar -czf /var/backups/etc-$(date +%F).tar.gz /etc"
//!
//! [[jobs]]
//! name = "vacuum"
//! schedule = "@weekly"
//! plugin = "exec"
//! [jobs.params]
//! argv = ["vacuumdb", "--all", "--analyze"]
//! cwd = "/var/lib/postgresql"
//! env = { PGUSER = "postgres" }
//! ```

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, ExitStatus};

use pacer_plugin_api::{Context, Error, Level, Plugin, ResultExt, bail, export_plugin};
use serde::Deserialize;
use serde::de::IgnoredAny;

/// The job's params; see the crate docs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    command: Option<String>,
    argv: Option<Vec<String>>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<PathBuf>,
    /// Added by `pacerd` to a chained run's params. Accepted so that chaining works; the
    /// command sees the upstream run through its `PACER_UPSTREAM_*` environment variables.
    #[serde(default, rename = "upstream")]
    _upstream: Option<IgnoredAny>,
}

/// What to start, as checked by [`Params::program`].
enum Program<'a> {
    Shell(&'a str),
    Argv(&'a str, &'a [String]),
}

impl Params {
    fn program(&self) -> Result<Program<'_>, Error> {
        match (&self.command, &self.argv) {
            (Some(command), None) => Ok(Program::Shell(command)),
            (None, Some(argv)) => match argv.split_first() {
                Some((program, _)) if program.is_empty() => {
                    bail!("the first element of `argv` must name a program")
                }
                Some((program, args)) => Ok(Program::Argv(program, args)),
                None => bail!("`argv` must not be empty"),
            },
            (Some(_), Some(_)) => bail!("give either `command` or `argv`, not both"),
            (None, None) => bail!("give `command` (a shell command line) or `argv` (an array)"),
        }
    }
}

#[derive(Debug, Default)]
struct Exec;

impl Plugin for Exec {
    const NAME: &'static str = "exec";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Params = Params;

    fn validate(&self, params: &Params) -> Result<(), Error> {
        params.program()?;
        if params
            .cwd
            .as_ref()
            .is_some_and(|cwd| cwd.as_os_str().is_empty())
        {
            bail!("`cwd` must not be empty");
        }
        for name in params.env.keys() {
            if name.is_empty() || name.contains(['=', '\0']) {
                bail!("`env` has an invalid variable name {name:?}");
            }
        }
        Ok(())
    }

    fn run(&self, ctx: &Context, params: Params) -> Result<(), Error> {
        let (mut command, line) = match params.program()? {
            Program::Shell(script) => {
                let mut command = Command::new("/bin/sh");
                command.arg("-c").arg(script);
                (command, format!("/bin/sh -c {}", shell_quote(script)))
            }
            Program::Argv(program, args) => {
                // Explicit because std leaves it unspecified whether a relative program path
                // is taken from the old or the new working directory.
                let path = match &params.cwd {
                    Some(cwd) if program.contains('/') => cwd.join(program),
                    _ => PathBuf::from(program),
                };
                let mut command = Command::new(path);
                command.args(args);
                let words: Vec<String> = std::iter::once(program)
                    .chain(args.iter().map(String::as_str))
                    .map(shell_quote)
                    .collect();
                (command, words.join(" "))
            }
        };
        command.envs(&params.env);
        match &params.cwd {
            Some(cwd) => {
                // Checked here because a spawn error would not say which path was missing.
                if !cwd.is_dir() {
                    bail!("`cwd` {} is not a directory", cwd.display());
                }
                command.current_dir(cwd);
                ctx.log(Level::Info, &format!("running {line} in {}", cwd.display()));
            }
            None => ctx.log(Level::Info, &format!("running {line}")),
        }
        // Blocks until the command exits, also when the run is cancelled: pacerd signals the
        // run's whole process group, the command included, and waits for this process.
        let status = command
            .status()
            .with_context(|| format!("cannot start {line}"))?;
        check(status)
    }
}

export_plugin!(Exec);

fn check(status: ExitStatus) -> Result<(), Error> {
    if let Some(code) = status.code() {
        if code == 0 {
            return Ok(());
        }
        bail!("command exited with code {code}");
    }
    match status.signal() {
        Some(signal) => match signal_name(signal) {
            Some(name) => bail!("command killed by signal {signal} ({name})"),
            None => bail!("command killed by signal {signal}"),
        },
        None => bail!("command ended with {status}"),
    }
}

/// Names of the signals whose numbers are the same on every Linux architecture (others, such
/// as SIGBUS or SIGUSR1, differ between x86 and MIPS, say, and are shown by number only).
fn signal_name(signal: i32) -> Option<&'static str> {
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        _ => return None,
    })
}

/// `word` as the shell would need it, so the logged command line can be pasted into one.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-+=/.,:@%".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use pacer_plugin_api::testing::{Outcome, TestHost};

    use super::*;

    fn run(params: &str) -> Outcome {
        TestHost::new().params_json(params).run::<Exec>()
    }

    fn failure(outcome: Outcome) -> String {
        assert!(!outcome.ok, "expected a failure: {outcome:?}");
        outcome.message.unwrap()
    }

    #[test]
    fn exit_zero_succeeds_and_logs_the_command() {
        let outcome = run(r#"{"command": "test \"it's\" = \"it's\""}"#);
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(outcome.message, None);
        assert_eq!(
            outcome.logs,
            [(
                Level::Info,
                r#"running /bin/sh -c 'test "it'\''s" = "it'\''s"'"#.to_owned()
            )]
        );
    }

    #[test]
    fn exit_code_is_in_the_message() {
        let outcome = run(r#"{"command": "exit 3"}"#);
        assert_eq!(failure(outcome), "command exited with code 3");
    }

    #[test]
    fn argv_runs_a_program_from_path_without_a_shell() {
        // Through a shell, `$HOME` would expand and the test would fail.
        let outcome = run(r#"{"argv": ["test", "$HOME", "=", "$HOME"]}"#);
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(
            outcome.logs,
            [(Level::Info, "running test '$HOME' = '$HOME'".to_owned())]
        );

        let outcome = run(r#"{"argv": ["false"]}"#);
        assert_eq!(failure(outcome), "command exited with code 1");
    }

    #[test]
    fn a_missing_program_says_so() {
        let outcome = run(r#"{"argv": ["pacer-no-such-program", "x"]}"#);
        assert_eq!(
            failure(outcome),
            "cannot start pacer-no-such-program x: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn env_is_added_to_the_inherited_environment() {
        let outcome = run(
            r#"{"command": "test \"$GREETING\" = 'hello world' && test -n \"$PATH\"",
                "env": {"GREETING": "hello world"}}"#,
        );
        assert!(outcome.ok, "{outcome:?}");
    }

    #[test]
    fn cwd_sets_the_directory_and_resolves_relative_paths() {
        let outcome = run(r#"{"command": "test \"$(pwd -P)\" = /", "cwd": "/"}"#);
        assert!(outcome.ok, "{outcome:?}");
        assert_eq!(
            outcome.logs,
            [(
                Level::Info,
                r#"running /bin/sh -c 'test "$(pwd -P)" = /' in /"#.to_owned()
            )]
        );

        // Tests run in the package's directory, as runs do in their config file's directory.
        let outcome = run(r#"{"argv": ["test", "-f", "lib.rs"], "cwd": "src"}"#);
        assert!(outcome.ok, "{outcome:?}");

        // A relative program path is taken from `cwd`.
        let outcome = run(r#"{"argv": ["./true"], "cwd": "/bin"}"#);
        assert!(outcome.ok, "{outcome:?}");

        let outcome = run(r#"{"command": "true", "cwd": "no/such/dir"}"#);
        assert_eq!(failure(outcome), "`cwd` no/such/dir is not a directory");
    }

    #[test]
    fn a_signal_is_named() {
        let outcome = run(r#"{"command": "kill -KILL $$"}"#);
        assert_eq!(failure(outcome), "command killed by signal 9 (SIGKILL)");

        let outcome = run(r#"{"command": "kill -USR1 $$"}"#);
        assert!(failure(outcome).starts_with("command killed by signal "));
    }

    #[test]
    fn exactly_one_of_command_and_argv() {
        let both = TestHost::new()
            .params_json(r#"{"command": "true", "argv": ["true"]}"#)
            .validate::<Exec>();
        assert_eq!(failure(both), "give either `command` or `argv`, not both");

        let neither = TestHost::new()
            .params_json(r#"{"cwd": "/"}"#)
            .validate::<Exec>();
        assert_eq!(
            failure(neither),
            "give `command` (a shell command line) or `argv` (an array)"
        );

        let empty = TestHost::new()
            .params_json(r#"{"argv": []}"#)
            .validate::<Exec>();
        assert_eq!(failure(empty), "`argv` must not be empty");

        // `run` validates too, so nothing is started.
        assert_eq!(
            failure(run(r#"{"command": "true", "argv": ["true"]}"#)),
            "give either `command` or `argv`, not both"
        );
    }

    #[test]
    fn invalid_cwd_and_env_names_are_refused() {
        let outcome = TestHost::new()
            .params_json(r#"{"command": "true", "cwd": ""}"#)
            .validate::<Exec>();
        assert_eq!(failure(outcome), "`cwd` must not be empty");

        let outcome = TestHost::new()
            .params_json(r#"{"command": "true", "env": {"A=B": "c"}}"#)
            .validate::<Exec>();
        assert_eq!(
            failure(outcome),
            r#"`env` has an invalid variable name "A=B""#
        );
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_params_errors() {
        let outcome = TestHost::new()
            .params_json(r#"{"comand": "true"}"#)
            .validate::<Exec>();
        let message = failure(outcome);
        assert!(
            message.starts_with("invalid params: unknown field `comand`, expected one of"),
            "{message}"
        );

        let outcome = TestHost::new()
            .params_json(r#"{"command": "true", "env": {"N": 1}}"#)
            .validate::<Exec>();
        let message = failure(outcome);
        assert!(
            message.starts_with("invalid params: invalid type: integer `1`, expected a string"),
            "{message}"
        );
    }

    #[test]
    fn a_chained_run_may_carry_upstream() {
        let outcome = TestHost::new()
            .params_json(
                r#"{"command": "true",
                    "upstream": {"job": "backup", "id": 7, "status": "failed", "error": "x"}}"#,
            )
            .validate::<Exec>();
        assert!(outcome.ok, "{outcome:?}");
    }
}
