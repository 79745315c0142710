//! Reading the database: opened read-only, one statement, row by row.

use std::io::ErrorKind;
use std::path::Path;
use std::time::Duration;

use pacer_plugin_api::{Cancelled, Context, Error, ResultExt, bail};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OpenFlags, Statement};

/// How long a read waits for a writer's lock (a database without WAL that is being written).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Opens `database` so that no statement can change it, whatever the query says.
pub fn open(database: &Path) -> Result<Connection, Error> {
    // Checked first because SQLite's own message, "unable to open database file", names
    // neither the file nor the reason.
    match std::fs::metadata(database) {
        Ok(meta) if meta.is_dir() => {
            bail!(
                "`database` {} is a directory, not a SQLite file",
                database.display()
            )
        }
        Ok(_) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => bail!(
            "`database` {} does not exist (a relative path is taken from the directory of the \
             job's config file)",
            database.display()
        ),
        Err(e) => {
            return Err(e)
                .with_context(|| format!("cannot read `database` {}", database.display()));
        }
    }
    let connection = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| {
        Error::msg(format_args!(
            "cannot open `database` {}: {}",
            database.display(),
            message(&e)
        ))
    })?;
    connection
        .busy_timeout(BUSY_TIMEOUT)
        .map_err(|e| Error::msg(message(&e)))?;
    Ok(connection)
}

/// Prepares `query`, refusing one that would write.
pub fn prepare<'c>(connection: &'c Connection, query: &str) -> Result<Statement<'c>, Error> {
    let statement = connection.prepare(query).map_err(|e| failed(&e))?;
    if !statement.readonly() {
        bail!("`query` would change the database; a report only runs statements that read");
    }
    Ok(statement)
}

/// Runs the statement and hands each row's values to `each`; returns the number of rows.
/// Stops with [`Cancelled`] between two rows once the run is asked to stop.
pub fn for_each_row(
    ctx: &Context,
    statement: &mut Statement<'_>,
    mut each: impl FnMut(&[ValueRef<'_>]) -> Result<(), Error>,
) -> Result<u64, Error> {
    let width = statement.column_count();
    let mut rows = statement.query([]).map_err(|e| failed(&e))?;
    let mut count = 0;
    while let Some(row) = rows.next().map_err(|e| failed(&e))? {
        if ctx.is_cancelled() {
            return Err(Cancelled.into());
        }
        let values = (0..width)
            .map(|column| row.get_ref(column))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| failed(&e))?;
        each(&values)?;
        count += 1;
    }
    Ok(count)
}

/// A failed statement, with SQLite's own message (`no such table: runs`).
fn failed(error: &rusqlite::Error) -> Error {
    Error::msg(format_args!("the query failed: {}", message(error)))
}

/// SQLite's message without rusqlite's additions (the numeric code, the whole query again).
fn message(error: &rusqlite::Error) -> String {
    match error {
        rusqlite::Error::SqliteFailure(_, Some(message)) => message.clone(),
        rusqlite::Error::SqlInputError { msg, .. } => msg.clone(),
        other => other.to_string(),
    }
}
