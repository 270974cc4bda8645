//! `db-setup-cli`: the migration engine from a shell, for local work,
//! troubleshooting and benchmarks. The Lambda is `db-setup`.
//!
//! ```text
//! db-setup-cli <migrate|status|plan> [--database-url URL] [--dir DIR]
//!              [--mode batch|each] [--to MIGRATION] [--lock-wait 60s]
//!              [--lock-timeout 5s] [--statement-timeout 5min] [--ca-file PEM]
//! db-setup-cli insight [--database-url URL] [--ca-file PEM] [--top N] [--long-running 1min]
//! db-setup-cli verify [--database-url URL] [--prefix P]   (declared items + drift)
//! db-setup-cli catalog --database-url URL-OF-AN-EMPTY-DATABASE --prefix P   (make catalog)
//! ```
//! The URL defaults to `$DATABASE_URL`; `sslmode=disable` in it means
//! plaintext, anything else verified TLS. Without `--dir` the migrations
//! embedded in the binary are used. The report goes to stdout as JSON,
//! logs to stderr.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use db_setup::db::{self, ConnectOptions, Target, Tls, TlsMode};
use db_setup::defaults;
use db_setup::duration::parse_duration;
use db_setup::insight::{InsightOptions, MAX_TOP};
use db_setup::migrate::{MigrateError, MigrationSet, Migrator, RunOptions};
use db_setup::pg::ServerError;
use db_setup::redacted::SecretString;
use tokio_postgres::config::{Host, SslMode};

struct Args {
    command: String,
    url: Option<String>,
    dir: Option<PathBuf>,
    ca_file: Option<PathBuf>,
    options: RunOptions,
}

fn usage() -> String {
    "usage: db-setup-cli <migrate|status|plan> [--database-url URL] [--dir DIR] [--mode batch|each] \
     [--to MIGRATION] [--lock-wait DUR] [--lock-timeout DUR] [--statement-timeout DUR] [--ca-file PEM]"
        .into()
}

fn parse_args(mut raw: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = raw.next().ok_or_else(usage)?;
    if !matches!(command.as_str(), "migrate" | "status" | "plan") {
        return Err(format!("unknown command `{command}`\n{}", usage()));
    }
    let mut args = Args {
        command,
        url: std::env::var("DATABASE_URL").ok(),
        dir: None,
        ca_file: None,
        options: RunOptions::default(),
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--database-url" => args.url = Some(value()?),
            "--dir" => args.dir = Some(PathBuf::from(value()?)),
            "--ca-file" => args.ca_file = Some(PathBuf::from(value()?)),
            "--mode" => args.options.mode = value()?.parse()?,
            "--to" => args.options.up_to = Some(value()?),
            "--lock-wait" => args.options.lock_wait = parse_duration(&value()?)?,
            "--lock-timeout" => args.options.lock_timeout = parse_duration(&value()?)?,
            "--statement-timeout" => args.options.statement_timeout = parse_duration(&value()?)?,
            other => return Err(format!("unknown option `{other}`\n{}", usage())),
        }
    }
    Ok(args)
}

/// Reads a `postgresql://` URL (or key=value string) into a target and a TLS mode.
fn target_from_url(url: &str) -> Result<(Target, TlsMode), String> {
    let config = tokio_postgres::Config::from_str(url)
        .map_err(|e| format!("DATABASE_URL cannot be read: {e}"))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(_) => {
            return Err("DATABASE_URL: a Unix socket host is not supported, use a TCP host".into());
        }
        None => "localhost".into(),
    };
    let password = config
        .get_password()
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_default();
    let tls = if config.get_ssl_mode() == SslMode::Disable {
        TlsMode::Disable
    } else {
        TlsMode::VerifyFull
    };
    Ok((
        Target {
            host,
            port: config
                .get_ports()
                .first()
                .copied()
                .unwrap_or(defaults::PORT),
            dbname: config
                .get_dbname()
                .unwrap_or(defaults::DATABASE)
                .to_string(),
            user: config.get_user().unwrap_or(defaults::USER).to_string(),
            password: SecretString::new(password),
        },
        tls,
    ))
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    let url = args
        .url
        .ok_or("no database: pass --database-url or set DATABASE_URL")?;
    let (target, mode) = target_from_url(&url)?;
    let ca = match &args.ca_file {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => None,
    };
    let tls = Tls::new(mode, ca.as_ref().map(|(n, p)| (n.as_str(), p.as_str())))
        .map_err(|e| e.to_string())?;
    let set = match &args.dir {
        Some(dir) => MigrationSet::from_dir(dir),
        None => MigrationSet::embedded(),
    }
    .map_err(|e| e.to_string())?;
    let connection = db::connect(&target, &tls, &ConnectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let migrator = Migrator::new(connection.client(), args.options);
    // The operator of a shell has the database: PostgreSQL's DETAIL (left out
    // of the message, it can hold row values) is shown here.
    let failed = |e: MigrateError| match e.server_error().and_then(|s| s.detail.as_deref()) {
        Some(detail) => format!("{e}\nDETAIL: {detail}"),
        None => e.to_string(),
    };
    let report = match args.command.as_str() {
        "migrate" => serde_json::to_value(migrator.migrate(&set).await.map_err(failed)?),
        _ => serde_json::to_value(migrator.status(&set).await.map_err(failed)?),
    };
    report.map_err(|e| e.to_string())
}

/// `insight`'s arguments.
struct InsightArgs {
    url: Option<String>,
    ca_file: Option<PathBuf>,
    options: InsightOptions,
}

fn parse_insight(mut raw: impl Iterator<Item = String>) -> Result<InsightArgs, String> {
    let usage = "usage: db-setup-cli insight [--database-url URL] [--ca-file PEM] [--top N] [--long-running DUR]";
    let mut args = InsightArgs {
        url: std::env::var("DATABASE_URL").ok(),
        ca_file: None,
        options: InsightOptions::default(),
    };
    while let Some(flag) = raw.next() {
        let mut value = || raw.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--database-url" => args.url = Some(value()?),
            "--ca-file" => args.ca_file = Some(PathBuf::from(value()?)),
            "--top" => {
                args.options.top = value()?
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_TOP).contains(n))
                    .ok_or_else(|| format!("--top must be a whole number from 1 to {MAX_TOP}"))?
            }
            "--long-running" => args.options.long_running = parse_duration(&value()?)?,
            other => return Err(format!("unknown option `{other}`\n{usage}")),
        }
    }
    Ok(args)
}

/// Connects to the database of a URL (`DATABASE_URL` when `None`), with the
/// CA file if given: the connection of the insight, verify and catalog commands.
async fn connect_url(
    url: Option<String>,
    ca_file: Option<&std::path::Path>,
) -> Result<(db::Connection, Target), String> {
    let url = url.ok_or("no database: pass --database-url or set DATABASE_URL")?;
    let (target, mode) = target_from_url(&url)?;
    let ca = match ca_file {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        )),
        None => None,
    };
    let tls = Tls::new(mode, ca.as_ref().map(|(n, p)| (n.as_str(), p.as_str())))
        .map_err(|e| e.to_string())?;
    let connection = db::connect(&target, &tls, &ConnectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok((connection, target))
}

/// `insight`: the maintenance report of the function's `insight` action.
async fn insight(args: InsightArgs) -> Result<serde_json::Value, String> {
    let (connection, _) = connect_url(args.url, args.ca_file.as_deref()).await?;
    let report = db_setup::insight::insight(connection.client(), &args.options)
        .await
        .map_err(|e| ServerError::from_pg(&e).to_string())?;
    serde_json::to_value(report).map_err(|e| e.to_string())
}

/// `verify`: the function's `verify` action (declared items and drift from
/// the migrations' catalog); `--prefix` is the group roles' prefix (default:
/// the one the users step derives from the database name).
async fn verify(raw: Vec<String>) -> Result<serde_json::Value, String> {
    use db_setup::verify::{self, Spec, catalog};
    let usage = "usage: db-setup-cli verify [--database-url URL] [--prefix PREFIX]";
    let (mut url, mut prefix) = (std::env::var("DATABASE_URL").ok(), None);
    let mut raw = raw.into_iter();
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => url = Some(value),
            "--prefix" => prefix = Some(value),
            other => return Err(format!("unknown option `{other}`\n{usage}")),
        }
    }
    let (connection, target) = connect_url(url, None).await?;
    let client = connection.client();
    let failed = |e: tokio_postgres::Error| ServerError::from_pg(&e).to_string();
    let spec = Spec::embedded().map_err(|e| e.to_string())?;
    let report = verify::verify(client, &spec).await.map_err(failed)?;
    let prefix = db_setup::users::apply::prefix(prefix.as_deref(), &target.dbname)
        .map_err(|e| e.to_string())?;
    let live = catalog::capture(client, &prefix).await.map_err(failed)?;
    let reference = catalog::embedded().map_err(|e| e.to_string())?;
    serde_json::to_value(report.with_drift(catalog::diff(&reference, &live)))
        .map_err(|e| e.to_string())
}

/// `catalog`: applies the embedded migrations to the (empty) database of
/// `--database-url`, grants the group roles `<prefix>_<template>` their
/// privileges and prints the catalog as src/verify/catalog.json holds it.
async fn catalog(raw: Vec<String>) -> Result<String, String> {
    let usage = "usage: db-setup-cli catalog --database-url URL --prefix PREFIX";
    let (mut url, mut prefix) = (None, None);
    let mut raw = raw.into_iter();
    while let Some(flag) = raw.next() {
        let value = raw.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--database-url" => url = Some(value),
            "--prefix" => prefix = Some(value),
            other => return Err(format!("unknown option `{other}`\n{usage}")),
        }
    }
    let (url, prefix) = url.zip(prefix).ok_or(usage)?;
    let (connection, target) = connect_url(Some(url), None).await?;
    let set = MigrationSet::embedded().map_err(|e| e.to_string())?;
    let snapshot = db_setup::verify::catalog::reference(
        connection.client(),
        &set,
        &prefix,
        &target.dbname,
        &target.user,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(db_setup::verify::catalog::to_file(&snapshot))
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
    };
    let mut raw = std::env::args().skip(1).peekable();
    let result = if raw.peek().map(String::as_str) == Some("insight") {
        parse_insight(raw.skip(1)).and_then(|args| runtime()?.block_on(insight(args)))
    } else if raw.peek().map(String::as_str) == Some("verify") {
        runtime().and_then(|rt| rt.block_on(verify(raw.skip(1).collect())))
    } else if raw.peek().map(String::as_str) == Some("catalog") {
        return match runtime().and_then(|rt| rt.block_on(catalog(raw.skip(1).collect()))) {
            Ok(text) => match std::io::stdout().lock().write_all(text.as_bytes()) {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            },
            Err(message) => {
                let _ = writeln!(std::io::stderr(), "db-setup-cli: {message}");
                ExitCode::FAILURE
            }
        };
    } else {
        parse_args(raw).and_then(|args| runtime()?.block_on(run(args)))
    };
    match result {
        Ok(report) => {
            let mut out = std::io::stdout().lock();
            let written = serde_json::to_writer_pretty(&mut out, &report)
                .map_err(|e| e.to_string())
                .and_then(|()| writeln!(out).map_err(|e| e.to_string()));
            match written {
                Ok(()) => ExitCode::SUCCESS,
                Err(_) => ExitCode::FAILURE,
            }
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "db-setup-cli: {message}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_target_and_tls_mode() {
        let (t, tls) =
            target_from_url("postgresql://me:pw@db.example:6543/app?sslmode=disable").unwrap();
        assert_eq!(
            (t.host.as_str(), t.port, t.dbname.as_str(), t.user.as_str()),
            ("db.example", 6543, "app", "me")
        );
        assert_eq!(t.password.expose(), "pw");
        assert_eq!(tls, TlsMode::Disable);
        let (_, tls) = target_from_url("postgresql://me@db.example/app").unwrap();
        assert_eq!(tls, TlsMode::VerifyFull);
    }

    #[test]
    fn arguments_are_checked() {
        let args = |v: &[&str]| parse_args(v.iter().map(|s| s.to_string()));
        assert!(args(&["migrate", "--mode", "each", "--to", "002_x"]).is_ok());
        assert!(
            args(&["drop"])
                .err()
                .unwrap()
                .starts_with("unknown command")
        );
        assert!(
            args(&["migrate", "--mode", "all"])
                .err()
                .unwrap()
                .contains("batch or each")
        );
        let insight = |v: &[&str]| parse_insight(v.iter().map(|s| s.to_string()));
        let ok = insight(&["--top", "5", "--long-running", "30s"])
            .ok()
            .unwrap();
        assert_eq!((ok.options.top, ok.options.long_running.as_secs()), (5, 30));
        assert!(
            insight(&["--top", "0"])
                .err()
                .unwrap()
                .contains("from 1 to")
        );
        assert!(
            insight(&["--mode", "each"])
                .err()
                .unwrap()
                .contains("unknown option")
        );
        assert!(
            args(&["migrate", "--dir"])
                .err()
                .unwrap()
                .contains("needs a value")
        );
    }
}
