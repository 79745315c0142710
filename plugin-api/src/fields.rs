//! Reading a params table key by key, for plugins that want every mistake reported in words that
//! name the key and say what it should hold, rather than as a deserializer's message.
//!
//! Declare `type Params = serde_json::Map<String, serde_json::Value>` and read it with
//! [`Fields`]:
//!
//! ```
//! use pacer_plugin_api::fields::{Fields, describe};
//! use pacer_plugin_api::{Error, bail};
//! use serde_json::{Map, Value, json};
//!
//! fn port(params: &Map<String, Value>) -> Result<u16, Error> {
//!     let fields = Fields::new(params, &["host", "port"])?;
//!     match fields.get("port") {
//!         None => Ok(25),
//!         Some(Value::Number(n)) if n.as_u64().is_some_and(|p| p <= 65535) => Ok(n.as_u64().unwrap_or(25) as u16),
//!         Some(other) => bail!("`port` must be a port number, not {}", describe(other)),
//!     }
//! }
//!
//! let Value::Object(params) = json!({"host": "mail", "port": "twenty-five"}) else { unreachable!() };
//! assert_eq!(
//!     port(&params).unwrap_err().to_string(),
//!     "`port` must be a port number, not the string \"twenty-five\""
//! );
//! let Value::Object(params) = json!({"hots": "mail"}) else { unreachable!() };
//! assert_eq!(
//!     port(&params).unwrap_err().to_string(),
//!     "unknown key `hots`: the keys are `host`, `port`"
//! );
//! ```

use serde_json::{Map, Value};

use crate::{Error, ResultExt, bail};

/// A job's params, checked against the keys a plugin knows.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    map: &'a Map<String, Value>,
}

impl<'a> Fields<'a> {
    /// Refuses any key outside `known`, so that `pacer check` reports a misspelled one.
    ///
    /// `upstream` is always accepted: `pacerd` adds it to the params of a chained run, after it
    /// has expanded the `{upstream.*}` placeholders in the string params.
    pub fn new(map: &'a Map<String, Value>, known: &[&str]) -> Result<Self, Error> {
        if let Some(key) = map
            .keys()
            .find(|key| *key != "upstream" && !known.contains(&key.as_str()))
        {
            let names: Vec<String> = known.iter().map(|name| format!("`{name}`")).collect();
            bail!("unknown key `{key}`: the keys are {}", names.join(", "));
        }
        Ok(Self { map })
    }

    /// The value of `key`, of any type.
    pub fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// The string under `key`, if there is one; `what` says what a valid value looks like, for
    /// the error message.
    pub fn string(&self, key: &str, what: &str) -> Result<Option<&'a str>, Error> {
        match self.map.get(key) {
            None => Ok(None),
            Some(Value::String(text)) => Ok(Some(text)),
            Some(other) => bail!("`{key}` must be {what}, not {}", describe(other)),
        }
    }

    /// Like [`string`](Self::string), for a key without a default.
    pub fn required_string(&self, key: &str, what: &str) -> Result<&'a str, Error> {
        self.string(key, what)?
            .with_context(|| format!("`{key}` is missing: give {what}"))
    }
}

/// A value as the job's TOML config shows it, for error messages.
pub fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_owned(),
        Value::Bool(flag) => flag.to_string(),
        Value::Number(number) => format!("the number {number}"),
        Value::String(text) => format!("the string {text:?}"),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "a table".to_owned(),
    }
}
