//! Secret-looking params never reach the database or the screen.

use serde_json::Value;

/// Key fragments that mark a value as secret (compared case-insensitively).
const SECRET_KEYS: [&str; 9] = [
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "authorization",
    "private_key",
    "credential",
];

/// What a masked value shows.
pub const MASK: &str = "********";

/// A copy of `params` with the value of every secret-looking key (at any depth) masked.
///
/// Keys ending in `_file` or `_path` name where a secret is kept, not the secret, and stay.
pub fn mask_secrets(params: &Value) -> Value {
    match params {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, value)| {
                    let lower = key.to_ascii_lowercase();
                    let names_a_secret = SECRET_KEYS.iter().any(|s| lower.contains(s))
                        && !lower.ends_with("_file")
                        && !lower.ends_with("_path");
                    let masked = if names_a_secret && !value.is_null() {
                        Value::String(MASK.to_owned())
                    } else {
                        mask_secrets(value)
                    };
                    (key.clone(), masked)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(mask_secrets).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_masked_at_any_depth() {
        let params = json!({
            "smtp_host": "mail",
            "password": "hunter2",
            "password_file": "/etc/secret",
            "headers": {"Authorization": "Bearer x", "Accept": "text/plain"},
            "list": [{"api_token": "t"}],
            "token": null,
        });
        assert_eq!(
            mask_secrets(&params),
            json!({
                "smtp_host": "mail",
                "password": MASK,
                "password_file": "/etc/secret",
                "headers": {"Authorization": MASK, "Accept": "text/plain"},
                "list": [{"api_token": MASK}],
                "token": null,
            })
        );
    }
}
