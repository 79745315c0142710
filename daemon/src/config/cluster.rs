//! `[cluster]`: where the shared PostgreSQL is, and how this node takes part.
//!
//! The database URL is parsed here, at load, so a wrong URL is a config error that points at
//! its key, like any other. libpq's TLS options that `tokio-postgres` does not read
//! (`sslmode=verify-ca`/`verify-full`, `sslrootcert`) are taken out of it and kept beside it.

use std::collections::BTreeMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use toml::Spanned;

use super::validate::{Errors, Source, bounded, duration, identifier};
use super::{Pool, defaults, raw, resolve};

/// `[cluster]`, validated.
#[derive(Debug, Clone)]
pub struct ClusterSettings {
    /// The shared database.
    pub database: DatabaseUrl,
    /// This node's name among the live nodes.
    pub node_id: String,
    /// A node whose heartbeat has not moved for this long is dead.
    pub lease_ttl: Duration,
    /// How often this node beats.
    pub heartbeat: Duration,
    /// A node further than this off the database clock stops proposing fires.
    pub max_clock_skew: Duration,
    /// This node's own cap on runs in flight, under the cluster-wide caps.
    pub node_max_concurrency: Option<u32>,
    /// The pools this node takes runs from; `None`: all.
    pub pools: Option<Vec<String>>,
}

/// libpq's `sslmode`, all five that matter to a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Never TLS.
    Disable,
    /// TLS if the server offers it, without checking its certificate (libpq's default).
    Prefer,
    /// TLS, without checking the certificate unless `sslrootcert` names a CA (then as
    /// `verify-ca`, as libpq does).
    Require,
    /// TLS with a certificate signed by a trusted CA, whatever name it holds.
    VerifyCa,
    /// TLS with a certificate signed by a trusted CA for the host connected to.
    VerifyFull,
}

impl SslMode {
    const CHOICES: [(&'static str, SslMode); 5] = [
        ("disable", SslMode::Disable),
        ("prefer", SslMode::Prefer),
        ("require", SslMode::Require),
        ("verify-ca", SslMode::VerifyCa),
        ("verify-full", SslMode::VerifyFull),
    ];
}

/// Where the URL was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// `database_url` in the config file.
    Inline,
    /// The file `database_url_file` names.
    File(PathBuf),
}

/// A parsed database URL. Its `Debug` hides the password (`tokio_postgres::Config` does).
#[derive(Debug, Clone)]
pub struct DatabaseUrl {
    /// Everything `tokio-postgres` reads; its `ssl_mode` is set from [`DatabaseUrl::ssl_mode`].
    pub postgres: tokio_postgres::Config,
    /// How the server is checked.
    pub ssl_mode: SslMode,
    /// `sslrootcert`: a PEM file of trusted CAs (resolved against the config file's
    /// directory); `None`: the system's roots.
    pub root_cert: Option<PathBuf>,
    /// Where it was written.
    pub source: UrlSource,
}

impl DatabaseUrl {
    /// Parses a libpq connection string (`postgresql://...` or `key=value ...`); relative
    /// `sslrootcert` paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path, source: UrlSource) -> Result<DatabaseUrl, String> {
        // Errors may quote the text, and the text may hold a password: never show it.
        Self::parse_unmasked(text, base, source).map_err(|e| mask_secrets(&e))
    }

    fn parse_unmasked(text: &str, base: &Path, source: UrlSource) -> Result<DatabaseUrl, String> {
        if let Some((scheme, _)) = text.split_once("://")
            && !matches!(scheme, "postgres" | "postgresql")
        {
            return Err(format!(
                "the URL starts with `{scheme}://`; it must start with postgresql:// \
                 (postgresql://USER:PASSWORD@HOST:PORT/DATABASE)"
            ));
        }
        let (rest, tls) = if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            split_uri(text)?
        } else {
            split_key_values(text)?
        };
        let mut postgres = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| format!("not a PostgreSQL connection URL: {e}"))?;
        let mut ssl_mode = SslMode::Prefer;
        let mut root_cert = None;
        for (key, value) in tls {
            match key.as_str() {
                "sslmode" => {
                    ssl_mode = SslMode::CHOICES
                        .iter()
                        .find(|(name, _)| *name == value)
                        .map(|(_, mode)| *mode)
                        .ok_or_else(|| {
                            format!(
                                "sslmode `{value}` is not one of disable, prefer, require, \
                                 verify-ca, verify-full"
                            )
                        })?;
                }
                "sslrootcert" if value == "system" => root_cert = None,
                "sslrootcert" => root_cert = Some(resolve(base, &value)),
                other => {
                    return Err(format!(
                        "`{other}` is not supported: pacerd authenticates to PostgreSQL with a \
                         password (put it in database_url_file), not a client certificate"
                    ));
                }
            }
        }
        postgres.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        if postgres.get_hosts().is_empty() {
            return Err(
                "names no host: write it as postgresql://USER@HOST:PORT/DATABASE".to_owned(),
            );
        }
        Ok(DatabaseUrl {
            postgres,
            ssl_mode,
            root_cert,
            source,
        })
    }

    /// Whether the URL holds a password.
    pub fn has_password(&self) -> bool {
        self.postgres.get_password().is_some()
    }
}

/// `user@host:port/database`, without the password: what `pacer status` names.
impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(user) = self.postgres.get_user() {
            write!(f, "{user}@")?;
        }
        let ports = self.postgres.get_ports();
        for (i, host) in self.postgres.get_hosts().iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match host {
                tokio_postgres::config::Host::Tcp(name) => f.write_str(name)?,
                tokio_postgres::config::Host::Unix(path) => write!(f, "{}", path.display())?,
            }
            let port = ports.get(i).or(ports.first());
            if let Some(port) = port {
                write!(f, ":{port}")?;
            }
        }
        if let Some(db) = self.postgres.get_dbname() {
            write!(f, "/{db}")?;
        }
        Ok(())
    }
}

/// `text` with the password of any `scheme://user:password@` and any `password=value`
/// replaced by `***`.
fn mask_secrets(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        let authority_end = tail
            .find(['/', '?', ' ', '`', '\'', '"'])
            .unwrap_or(tail.len());
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..=colon]);
                out.push_str("***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    let mut masked = String::with_capacity(out.len());
    let mut rest = out.as_str();
    while let Some(at) = rest.find("password=") {
        let (head, tail) = rest.split_at(at + "password=".len());
        masked.push_str(head);
        masked.push_str("***");
        let end = tail.find([' ', '&', '`', '\'', '"']).unwrap_or(tail.len());
        rest = &tail[end..];
    }
    masked.push_str(rest);
    masked
}

/// The TLS options `tokio-postgres` does not know, taken out of the connection string.
type TlsOptions = Vec<(String, String)>;

/// The keys taken out: `sslmode` (tokio-postgres knows only three of its five values) and
/// those it does not read at all.
const TLS_KEYS: [&str; 6] = [
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslcrl",
];

/// A `postgresql://` URL without its TLS query parameters, and those parameters decoded.
fn split_uri(text: &str) -> Result<(String, TlsOptions), String> {
    let Some((base, query)) = text.split_once('?') else {
        return Ok((text.to_owned(), Vec::new()));
    };
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key)?;
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, percent_decode(value)?));
        } else {
            kept.push(pair);
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, tls))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|hex| u8::from_str_radix(hex, 16).ok())
                .ok_or_else(|| {
                    format!("`{text}` holds a `%` that is not followed by two hex digits")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("`{text}` does not decode to UTF-8"))
}

/// A `key=value ...` connection string without its TLS keys, and those keys' values.
fn split_key_values(text: &str) -> Result<(String, TlsOptions), String> {
    let mut kept = Vec::new();
    let mut tls = Vec::new();
    let mut chars = text.char_indices().peekable();
    loop {
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(start, _)) = chars.peek() else {
            break;
        };
        let mut key = String::new();
        while let Some((_, c)) = chars.next_if(|(_, c)| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        if chars.next_if(|(_, c)| *c == '=').is_none() {
            return Err(format!("expected `{key}=value` (or a postgresql:// URL)"));
        }
        while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if(|(_, c)| *c == '\'').is_some() {
            loop {
                match chars.next() {
                    Some((_, '\'')) => break,
                    Some((_, '\\')) => value.extend(chars.next().map(|(_, c)| c)),
                    Some((_, c)) => value.push(c),
                    None => return Err(format!("the value of `{key}` lacks its closing quote")),
                }
            }
        } else {
            while let Some((_, c)) = chars.next_if(|(_, c)| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next().map(|(_, c)| c));
                } else {
                    value.push(c);
                }
            }
        }
        let end = chars.peek().map_or(text.len(), |(at, _)| *at);
        if TLS_KEYS.contains(&key.as_str()) {
            tls.push((key, value));
        } else {
            kept.push(&text[start..end]);
        }
    }
    Ok((
        kept.iter()
            .map(|pair| pair.trim())
            .collect::<Vec<_>>()
            .join(" "),
        tls,
    ))
}

/// Validates `[cluster]`; `None` when it is absent or wrong (the errors say why).
pub(super) fn cluster_settings(
    source: &Source<'_>,
    table: Option<Spanned<raw::Cluster>>,
    pools: Option<&BTreeMap<String, Pool>>,
    errors: &mut Errors,
) -> Option<ClusterSettings> {
    let table = table?;
    let table_span = table.span();
    let raw = table.into_inner();
    let before = errors.len();
    let database = match (&raw.database_url, &raw.database_url_file) {
        (Some(url), None) => errors.check(
            source,
            url.span(),
            DatabaseUrl::parse(url.get_ref(), source.dir, UrlSource::Inline)
                .map_err(|e| format!("database_url: {e}")),
        ),
        (None, Some(file)) => errors.check(
            source,
            file.span(),
            read_url_file(&resolve(source.dir, file.get_ref()), source.dir),
        ),
        (Some(_), Some(file)) => {
            errors.push(source.error(
                file.span(),
                "give database_url or database_url_file, not both",
            ));
            None
        }
        (None, None) => {
            errors.push(source.error(
                table_span.clone(),
                "[cluster] needs database_url = \"postgresql://USER@HOST/DATABASE\" or \
                 database_url_file = \"PATH\" (a file holding it, password included)",
            ));
            None
        }
    };
    let node_id = match &raw.node_id {
        Some(id) => errors
            .check(source, id.span(), identifier(id.get_ref(), "node_id"))
            .map(|()| id.get_ref().clone()),
        None => errors.check(source, table_span.clone(), host_name()),
    };
    let mut duration_or = |value: &Option<Spanned<String>>, key: &str, default: Duration| {
        value.as_ref().map_or(Some(default), |v| {
            errors.check(source, v.span(), duration(v.get_ref(), key, true))
        })
    };
    let lease_ttl = duration_or(&raw.lease_ttl, "lease_ttl", defaults::LEASE_TTL);
    let heartbeat = duration_or(&raw.heartbeat, "heartbeat", defaults::HEARTBEAT);
    let max_clock_skew = duration_or(
        &raw.max_clock_skew,
        "max_clock_skew",
        defaults::MAX_CLOCK_SKEW,
    );
    if let (Some(lease), Some(beat)) = (lease_ttl, heartbeat) {
        let span = raw
            .heartbeat
            .as_ref()
            .or(raw.lease_ttl.as_ref())
            .map_or(table_span.clone(), Spanned::span);
        if lease < defaults::MIN_LEASE_TTL {
            errors.push(source.error(
                raw.lease_ttl.as_ref().map_or(span.clone(), Spanned::span),
                format!(
                    "lease_ttl must be at least {:?}: a node's runs are killed (with a {:?} \
                     grace) before its lease runs out",
                    defaults::MIN_LEASE_TTL,
                    defaults::KILL_GRACE
                ),
            ));
        } else if beat * 3 > lease {
            errors.push(source.error(
                span,
                format!(
                    "heartbeat ({beat:?}) must be at most a third of lease_ttl ({lease:?}), so \
                     that a late beat or two does not declare the node dead: lower heartbeat \
                     or raise lease_ttl"
                ),
            ));
        }
    }
    let node_max_concurrency = raw.node_max_concurrency.as_ref().and_then(|v| {
        errors.check(
            source,
            v.span(),
            bounded(*v.get_ref(), "node_max_concurrency", 1),
        )
    });
    if let (Some(list), Some(pools)) = (&raw.pools, pools) {
        for name in list {
            if !pools.contains_key(name.get_ref()) {
                errors.push(source.error(
                    name.span(),
                    format!(
                        "unknown pool `{}` in [cluster] pools: define [pools.{}] or use one of: {}",
                        name.get_ref(),
                        name.get_ref(),
                        pools.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    if errors.len() > before {
        return None;
    }
    Some(ClusterSettings {
        database: database?,
        node_id: node_id?,
        lease_ttl: lease_ttl?,
        heartbeat: heartbeat?,
        max_clock_skew: max_clock_skew?,
        node_max_concurrency,
        pools: raw
            .pools
            .map(|list| list.into_iter().map(Spanned::into_inner).collect()),
    })
}

/// Reads `database_url_file`: its first line, trimmed. A file anyone may read must not hold a
/// password.
fn read_url_file(path: &Path, base: &Path) -> Result<DatabaseUrl, String> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("database_url_file: cannot read {shown}: {e}"))?;
    let url = text.trim();
    if url.is_empty() {
        return Err(format!(
            "database_url_file: {shown} is empty; write the URL into it \
             (postgresql://USER:PASSWORD@HOST/DATABASE)"
        ));
    }
    let parsed = DatabaseUrl::parse(url, base, UrlSource::File(path.to_owned()))
        .map_err(|e| format!("database_url_file: the URL in {shown}: {e}"))?;
    let mode = std::fs::metadata(path)
        .map_err(|e| format!("database_url_file: cannot look at {shown}: {e}"))?
        .permissions()
        .mode();
    if parsed.has_password() && mode & 0o004 != 0 {
        return Err(format!(
            "database_url_file: {shown} holds a password and every user may read it (mode \
             {:04o}); make it readable by pacerd alone: chmod 600 {shown} (or chmod 640 and \
             chgrp it to pacerd's group)",
            mode & 0o7777
        ));
    }
    Ok(parsed)
}

/// The default `node_id`: the host's name.
fn host_name() -> Result<String, String> {
    let name = nix::unistd::gethostname()
        .map_err(|e| format!("cannot read the host name for node_id: {e}; set node_id"))?;
    let name = name.to_string_lossy().into_owned();
    identifier(&name, "node_id")
        .map(|()| name.clone())
        .map_err(|e| format!("the host name cannot be the node_id ({e}); set node_id"))
}
