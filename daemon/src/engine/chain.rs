//! Chained runs: a run's end starts the jobs named in its job's `on_success` or `on_failure`,
//! with trigger `chained` and an `upstream` object describing the run that caused them.

use serde_json::{Map, Value, json};

use crate::model::Status;
use crate::store::RunId;

/// The run that caused a chained run.
#[derive(Debug, Clone)]
pub struct Upstream<'a> {
    /// Its job.
    pub job: &'a str,
    /// Its id, if its record could be written.
    pub id: Option<RunId>,
    /// How it ended.
    pub status: Status,
    /// Why it did not succeed.
    pub error: Option<&'a str>,
}

impl Upstream<'_> {
    /// The `upstream` object a chained run's params gain.
    pub fn to_json(&self) -> Value {
        json!({
            "job": self.job,
            "id": self.id,
            "status": self.status,
            "error": self.error,
        })
    }

    fn placeholder(&self, name: &str) -> Option<String> {
        Some(match name {
            "job" => self.job.to_owned(),
            "id" => self.id.map_or_else(String::new, |id| id.to_string()),
            "status" => self.status.to_string(),
            "error" => self.error.unwrap_or_default().to_owned(),
            _ => return None,
        })
    }
}

/// The params of a chained run: `params` with `{upstream.job}`, `{upstream.id}`,
/// `{upstream.status}` and `{upstream.error}` expanded in every string (shell-quoted in
/// `command` when `shell_command` is set, since exec hands it to `/bin/sh -c`), plus `upstream`.
pub fn chained_params(params: &Value, upstream: &Upstream<'_>, shell_command: bool) -> Value {
    let mut expanded = match params {
        Value::Object(map) => Map::from_iter(map.iter().map(|(key, value)| {
            let quote = shell_command && key == "command";
            (key.clone(), expand(value, upstream, quote))
        })),
        _ => Map::new(),
    };
    expanded.insert("upstream".to_owned(), upstream.to_json());
    Value::Object(expanded)
}

fn expand(value: &Value, upstream: &Upstream<'_>, quote: bool) -> Value {
    match value {
        Value::String(text) => Value::String(substitute(text, upstream, quote)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| expand(v, upstream, quote)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), expand(v, upstream, quote)))
                .collect(),
        ),
        other => other.clone(),
    }
}

fn substitute(text: &str, upstream: &Upstream<'_>, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{upstream.") {
        out.push_str(&rest[..start]);
        let after = &rest[start + "{upstream.".len()..];
        match after
            .find('}')
            .and_then(|end| Some((upstream.placeholder(&after[..end])?, end)))
        {
            Some((value, end)) => {
                if quote {
                    out.push_str(&shell_quote(&value));
                } else {
                    out.push_str(&value);
                }
                rest = &after[end + 1..];
            }
            None => {
                out.push_str("{upstream.");
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// `value` as one shell word, whatever it holds.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream() -> Upstream<'static> {
        Upstream {
            job: "backup",
            id: Some(42),
            status: Status::Failed,
            error: Some("disk 'full'; rm -rf /"),
        }
    }

    #[test]
    fn placeholders_expand_in_every_string() {
        let params = json!({
            "subject": "{upstream.job} {upstream.status} (run {upstream.id})",
            "body": ["error: {upstream.error}", {"nested": "{upstream.job}"}],
            "port": 25,
            "unknown": "{upstream.nope} {upstream.job",
        });
        assert_eq!(
            chained_params(&params, &upstream(), false),
            json!({
                "subject": "backup failed (run 42)",
                "body": ["error: disk 'full'; rm -rf /", {"nested": "backup"}],
                "port": 25,
                "unknown": "{upstream.nope} {upstream.job",
                "upstream": {"job": "backup", "id": 42, "status": "failed", "error": "disk 'full'; rm -rf /"},
            })
        );
    }

    #[test]
    fn exec_commands_get_each_value_as_one_shell_word() {
        let params = json!({"command": "notify-send {upstream.job} {upstream.error}", "cwd": "{upstream.job}"});
        let chained = chained_params(&params, &upstream(), true);
        assert_eq!(
            chained["command"],
            r"notify-send 'backup' 'disk '\''full'\''; rm -rf /'"
        );
        assert_eq!(chained["cwd"], "backup", "only `command` goes to a shell");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("printf '%s|' {}", shell_quote("a 'b' $c \"d\"")))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), "a 'b' $c \"d\"|");
    }
}
