//! Wake-ups when fires are queued: a connection of its own `LISTEN`s on the channel that
//! claims `NOTIFY` when they commit, so a node with free slots admits at once rather than at
//! its next periodic look.

use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use super::{ClusterError, PgDatabase, db, tls};

/// The first pause before listening again after the connection failed; it doubles up to
/// [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// How often the listener checks whether anyone still holds its handle.
const CHECK: Duration = Duration::from_secs(1);

impl PgDatabase {
    /// A handle woken whenever some node queued fires (once its claim committed), and once
    /// each time the listener (re)connects, since a notification may have been missed while
    /// it was away. The listening task ends once every clone of the handle is dropped. Call
    /// within a tokio runtime.
    pub fn listen(&self) -> Arc<Notify> {
        let notify = Arc::new(Notify::new());
        let weak = Arc::downgrade(&notify);
        let database = self.clone();
        tokio::spawn(async move {
            let mut delay = FIRST_RETRY;
            while weak.strong_count() > 0 {
                match listen_once(&database, &weak).await {
                    Ok(()) => delay = FIRST_RETRY,
                    Err(e) => {
                        tracing::debug!("listening for queued fires: {e}; trying again");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(MAX_RETRY);
                    }
                }
            }
        });
        notify
    }
}

fn closed() -> ClusterError {
    ClusterError::Database("the server closed the listening connection".to_owned())
}

fn wake(notify: &Weak<Notify>) {
    if let Some(notify) = notify.upgrade() {
        notify.notify_one();
    }
}

/// Listens until the connection ends or nobody holds the handle.
async fn listen_once(database: &PgDatabase, notify: &Weak<Notify>) -> Result<(), ClusterError> {
    let mut config = database.url().postgres.clone();
    // A link that died without a word is noticed by keepalives.
    config
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .keepalives_interval(Duration::from_secs(2))
        .keepalives_retries(3);
    let (client, mut connection) = config
        .connect(tls::connector(database.url())?)
        .await
        .map_err(db)?;
    {
        let mut listening = pin!(client.batch_execute("LISTEN pacer_queue"));
        loop {
            tokio::select! {
                done = &mut listening => {
                    done.map_err(db)?;
                    break;
                }
                message = poll_fn(|cx| connection.poll_message(cx)) => match message {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(db(e)),
                    None => return Err(closed()),
                },
            }
        }
    }
    wake(notify);
    while notify.strong_count() > 0 {
        match tokio::time::timeout(CHECK, poll_fn(|cx| connection.poll_message(cx))).await {
            Ok(Some(Ok(AsyncMessage::Notification(_)))) => wake(notify),
            Err(_) | Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => return Err(db(e)),
            Ok(None) => return Err(closed()),
        }
    }
    drop(client);
    Ok(())
}
