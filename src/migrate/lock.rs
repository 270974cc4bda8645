//! The migration lock: a session advisory lock on node-pg-migrate's key, so
//! this tool and node-pg-migrate never run beside each other.
//!
//! It is taken with `pg_try_advisory_lock`, polled until a deadline; never
//! with a blocking `pg_advisory_lock` (a blocked waiter can deadlock another
//! session's `CREATE INDEX CONCURRENTLY`).

use std::time::Duration;

use tokio::time::Instant;

use serde::Serialize;
use tokio_postgres::{Client, SimpleQueryMessage};

/// node-pg-migrate's advisory lock key.
pub const KEY: i64 = 7_241_865_325_823_964;

/// The expression that tries to take the lock (no wait).
pub fn try_lock_expr() -> String {
    format!("pg_try_advisory_lock({KEY})")
}

/// Releases the lock.
pub fn unlock_sql() -> String {
    format!("SELECT pg_advisory_unlock({KEY})")
}

/// Who holds the lock, as far as `pg_stat_activity` shows it (a role that is
/// not a superuser or `pg_read_all_stats` member sees only the pid).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    /// Backend process id (`SELECT pg_terminate_backend(pid)` ends a stuck one).
    pub pid: i32,
    /// The role it connected as.
    pub user: Option<String>,
    /// Its `application_name` (`node-pg-migrate`, `db-setup`, `psql`, ...).
    pub application_name: Option<String>,
    /// Its client address.
    pub client_addr: Option<String>,
    /// When its session started.
    pub backend_start: Option<String>,
    /// `active`, `idle`, `idle in transaction`, ...
    pub state: Option<String>,
}

impl std::fmt::Display for LockHolder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "backend pid {}", self.pid)?;
        let details: Vec<String> = [
            self.application_name
                .as_ref()
                .map(|a| format!("application '{a}'")),
            self.user.as_ref().map(|u| format!("user {u}")),
            self.client_addr.as_ref().map(|c| format!("from {c}")),
            self.backend_start
                .as_ref()
                .map(|s| format!("connected since {s}")),
            self.state.as_ref().map(|s| format!("state {s}")),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !details.is_empty() {
            write!(f, " ({})", details.join(", "))?;
        }
        Ok(())
    }
}

/// Finds who holds the lock `key`. The query text of that session is deliberately
/// not read: it could hold anything, secrets included.
pub async fn holder(
    client: &Client,
    key: i64,
) -> Result<Option<LockHolder>, tokio_postgres::Error> {
    let sql = format!(
        "SELECT l.pid, a.usename, nullif(a.application_name, ''), host(a.client_addr), \
         date_trunc('second', a.backend_start)::text, a.state \
         FROM pg_catalog.pg_locks l LEFT JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 \
         AND l.classid::bigint = ({key}::bigint >> 32) AND l.objid::bigint = ({key}::bigint & 4294967295) \
         AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = current_database()) \
         LIMIT 1"
    );
    let messages = client.simple_query(&sql).await?;
    Ok(messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(row) => {
            let text = |i: usize| row.get(i).map(str::to_string);
            Some(LockHolder {
                pid: row.get(0)?.parse().ok()?,
                user: text(1),
                application_name: text(2),
                client_addr: text(3),
                backend_start: text(4),
                state: text(5),
            })
        }
        _ => None,
    }))
}

/// The advisory lock key of the users step (role DDL is serialized apart
/// from migrations, which keep node-pg-migrate's key).
pub const ROLE_KEY: i64 = KEY + 1;

/// The outcome of polling for a lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Polled<T> {
    /// Taken after waiting this long; `T` is what the winning try returned.
    Taken(T, Duration),
    /// Not taken within the wait.
    TimedOut(Duration),
}

/// Calls `attempt` (one `pg_try_advisory_lock` round trip: `Some` when the
/// lock was taken) until it succeeds or `wait` has passed, pausing between
/// tries as [`next_pause`] says. Never blocks in the server.
pub async fn poll<T, E, F, Fut>(wait: Duration, mut attempt: F) -> Result<Polled<T>, E>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>, E>>,
{
    let started = Instant::now();
    let deadline = started + wait;
    let mut pause = Duration::ZERO;
    loop {
        if let Some(value) = attempt().await? {
            return Ok(Polled::Taken(value, started.elapsed()));
        }
        match next_pause(pause, Instant::now(), deadline) {
            Some(p) => {
                tokio::time::sleep(p).await;
                pause = p;
            }
            None => return Ok(Polled::TimedOut(started.elapsed())),
        }
    }
}

/// Takes the lock `key` for this session, polling up to `wait`.
pub async fn acquire(
    client: &Client,
    key: i64,
    wait: Duration,
) -> Result<Polled<()>, tokio_postgres::Error> {
    let sql = format!("SELECT pg_try_advisory_lock({key})");
    poll(wait, || async {
        let messages = client.simple_query(&sql).await?;
        Ok(messages
            .iter()
            .any(|m| matches!(m, SimpleQueryMessage::Row(r) if r.get(0) == Some("t")))
            .then_some(()))
    })
    .await
}

/// Releases the lock `key`.
pub async fn release(client: &Client, key: i64) -> Result<(), tokio_postgres::Error> {
    client
        .simple_query(&format!("SELECT pg_advisory_unlock({key})"))
        .await
        .map(|_| ())
}

/// The next pause between two tries: starts at 50 ms, grows by half, caps at 1 s,
/// and never sleeps past the deadline.
pub fn next_pause(previous: Duration, now: Instant, deadline: Instant) -> Option<Duration> {
    let remaining = deadline.checked_duration_since(now)?;
    if remaining.is_zero() {
        return None;
    }
    let next = if previous.is_zero() {
        Duration::from_millis(50)
    } else {
        (previous * 3 / 2).min(Duration::from_secs(1))
    };
    Some(next.min(remaining))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_node_pg_migrates() {
        assert_eq!(try_lock_expr(), "pg_try_advisory_lock(7241865325823964)");
        assert_eq!(unlock_sql(), "SELECT pg_advisory_unlock(7241865325823964)");
    }

    #[test]
    fn pauses_grow_and_stop_at_the_deadline() {
        let now = Instant::now();
        let deadline = now + Duration::from_millis(3000);
        let mut pause = Duration::ZERO;
        let mut total = Duration::ZERO;
        let mut pauses = Vec::new();
        while let Some(p) = next_pause(pause, now + total, deadline) {
            pauses.push(p);
            total += p;
            pause = p;
        }
        assert_eq!(pauses[0], Duration::from_millis(50));
        assert_eq!(pauses[1], Duration::from_millis(75));
        assert!(pauses.iter().all(|p| *p <= Duration::from_secs(1)));
        assert_eq!(total, Duration::from_millis(3000));
        assert_eq!(next_pause(pause, deadline, deadline), None);
    }

    #[tokio::test(start_paused = true)]
    async fn polling_stops_at_the_first_success_or_at_the_wait() {
        let mut tries = 0;
        let got: Result<Polled<u8>, ()> = poll(Duration::from_secs(5), || {
            tries += 1;
            let n = tries;
            async move { Ok((n == 3).then_some(7)) }
        })
        .await;
        assert!(matches!(got, Ok(Polled::Taken(7, _))));
        assert_eq!(tries, 3);
        let never: Result<Polled<u8>, ()> =
            poll(Duration::from_millis(500), || async { Ok(None) }).await;
        assert_eq!(never, Ok(Polled::TimedOut(Duration::from_millis(500))));
        let failed: Result<Polled<u8>, &str> =
            poll(Duration::from_secs(1), || async { Err("down") }).await;
        assert_eq!(failed, Err("down"));
    }

    #[test]
    fn holder_is_described_with_what_is_visible() {
        let h = LockHolder {
            pid: 42,
            user: Some("postgres".into()),
            application_name: Some("node-pg-migrate".into()),
            client_addr: None,
            backend_start: None,
            state: Some("idle".into()),
        };
        assert_eq!(
            h.to_string(),
            "backend pid 42 (application 'node-pg-migrate', user postgres, state idle)"
        );
    }
}
