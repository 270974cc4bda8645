//! `db-setup-cli`: the migration engine from a shell, for local work,
//! CI, troubleshooting and benchmarks. The Lambda is `db-setup`.
//!
//! `db-setup-cli --help` (and `db-setup-cli COMMAND --help`) tells the
//! commands, options, environment fallbacks and exit codes. Reports go to
//! stdout (JSON, or Markdown for `plan --format markdown`), logs to stderr.
//! `baseline` and `repair` change the history only with `--confirm`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use db_setup::db::{self, ConnectError, ConnectOptions, Target, Tls, TlsMode, TlsSetupError};
use db_setup::defaults;
use db_setup::duration::parse_duration;
use db_setup::insight::{InsightOptions, MAX_TOP};
use db_setup::migrate::options::Phase;
use db_setup::migrate::report::PlanReport;
use db_setup::migrate::{
    MigrateError, MigrationSet, Migrator, RunOptions, SourceErrors, StatusReport, TransactionMode,
};
use db_setup::pg::ServerError;
use db_setup::redacted::SecretString;
use db_setup::verify::Spec;
use tokio_postgres::config::{Host, SslMode};

/// What the exit codes mean (shown by `--help`).
const EXIT_CODES: &str = "\
Exit codes:
  0  done (for `status --exit-code`: nothing pending, no problem)
  1  the command failed (unreadable URL or migrations, connection, a failed migration)
  2  invalid command line
  3  `status --exit-code`: migrations are pending
  4  `status --exit-code`: problems: a migrate would refuse to run";

/// The exit code of `status --exit-code` when migrations are pending.
const EXIT_PENDING: u8 = 3;
/// The exit code of `status --exit-code` when a migrate would refuse to run.
const EXIT_PROBLEMS: u8 = 4;

/// Forward-only PostgreSQL migrations (node-pg-migrate compatible), from a shell.
#[derive(Debug, Parser)]
#[command(name = "db-setup-cli", version, after_help = EXIT_CODES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Migrates many databases (one per tenant or Region) with at most
    /// `--concurrency` at a time; every database runs whatever the others did.
    /// Prints the fleet report; exits 1 when any database failed.
    #[command(after_help = EXIT_CODES)]
    Fleet {
        #[command(flatten)]
        fleet: FleetArgs,
        #[command(flatten)]
        run: Run,
    },
    /// Applies the pending migrations (up to `--to`) under the migration lock; prints the run report.
    #[command(after_help = EXIT_CODES)]
    Migrate {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        run: Run,
    },
    /// The history, pending files, problems, lock holder and invalid indexes; reads only.
    #[command(after_help = EXIT_CODES)]
    Status {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        run: Run,
        /// Exit with 3 when migrations are pending, 4 when a migrate would refuse to run.
        #[arg(long)]
        exit_code: bool,
    },
    /// What a migrate would run, transaction by transaction, and what it would refuse; reads only.
    #[command(after_help = EXIT_CODES)]
    Plan {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        run: Run,
        /// `json` (the report) or `markdown` (for a pull-request comment).
        #[arg(long, value_enum, default_value_t = Format::Json)]
        format: Format,
    },
    /// Records the migrations up to `--to` as applied without running them (a
    /// database another tool migrated); changes the history only with `--confirm`.
    #[command(after_help = EXIT_CODES)]
    Baseline {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        run: Run,
        /// Record them even though objects they create are missing (the report says so).
        #[arg(long)]
        force: bool,
        /// Change the history; without it, print what would change.
        #[arg(long)]
        confirm: bool,
    },
    /// Maintenance findings (sizes, unused and invalid indexes, vacuum, pgvector index
    /// parameters, sequences, sessions); reads only.
    #[command(after_help = EXIT_CODES)]
    Insight {
        #[command(flatten)]
        database: Database,
        /// Rows per category.
        #[arg(long, value_name = "N", default_value_t = InsightOptions::default().top, value_parser = parse_top)]
        top: usize,
        /// A query running longer than this is reported.
        #[arg(long, value_name = "DURATION", default_value = "1min", value_parser = parse_duration)]
        long_running: Duration,
    },
    /// The declared schema items and the drift of the full catalog from what the
    /// embedded migrations produce; reads only.
    #[command(after_help = EXIT_CODES)]
    Verify {
        #[command(flatten)]
        database: Database,
        /// The group-role prefix (default: the database name, as the function).
        #[arg(long, env = "DB_SETUP_ROLE_PREFIX")]
        prefix: Option<String>,
    },
    /// Applies the embedded migrations and the group roles to an EMPTY database and
    /// prints its catalog (`make catalog` writes src/verify/catalog.json with it).
    #[command(after_help = EXIT_CODES)]
    Catalog {
        #[command(flatten)]
        database: Database,
        /// The group-role prefix to create the roles with.
        #[arg(long)]
        prefix: String,
    },
    /// Records the current checksum of named applied files and forgets the rows of
    /// named migrations whose files are gone; changes the history only with `--confirm`.
    #[command(after_help = EXIT_CODES)]
    Repair {
        #[command(flatten)]
        source: Source,
        #[command(flatten)]
        run: Run,
        /// An applied migration whose edited file is known to be harmless.
        #[arg(long = "accept-checksum", value_name = "MIGRATION")]
        accept_checksums: Vec<String>,
        /// A recorded migration whose file is gone.
        #[arg(long, value_name = "MIGRATION")]
        forget: Vec<String>,
        /// Change the history; without it, print what would change.
        #[arg(long)]
        confirm: bool,
    },
}

/// The databases of `fleet` and how many to run at once.
#[derive(Debug, Args)]
struct FleetArgs {
    /// A JSON file: `[{"name": "tenant-1", "url": "postgresql://..."}, ...]`.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// How many databases to migrate at once.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    concurrency: u16,
    /// The migrations directory; without it, the migrations embedded in this binary.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// An extra PEM file of CA certificates to trust.
    #[arg(long, env = "DB_SETUP_TLS_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// Where the database is.
#[derive(Debug, Args)]
struct Database {
    /// postgresql://user:password@host:port/database; `sslmode=disable` in it
    /// means plaintext, anything else verified TLS (the RDS CAs and the system roots).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: String,
    /// An extra PEM file of CA certificates to trust.
    #[arg(long, env = "DB_SETUP_TLS_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// `--top`: rows per category of `insight`.
fn parse_top(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        _ => Err(format!("--top must be a whole number from 1 to {MAX_TOP}")),
    }
}

/// Connects as the URL says: the connection and where it goes.
async fn connect(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(db::Connection, Target), CliError> {
    let (target, mode) = target_from_url(url)?;
    let tls = Tls::from_config(mode, ca_file)?;
    let connection = db::connect(&target, &tls, &ConnectOptions::default()).await?;
    Ok((connection, target))
}

/// Where the database and the migrations are.
#[derive(Debug, Args)]
struct Source {
    /// postgresql://user:password@host:port/database; `sslmode=disable` in it
    /// means plaintext, anything else verified TLS (the RDS CAs and the system roots).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    database_url: String,
    /// The migrations directory; without it, the migrations embedded in this binary.
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    /// An extra PEM file of CA certificates to trust.
    #[arg(long, env = "DB_SETUP_TLS_CA_FILE", value_name = "PEM")]
    ca_file: Option<PathBuf>,
}

/// How a migrate runs (and so what `status` and `plan` plan).
#[derive(Debug, Args)]
struct Run {
    /// `batch`: the transactional files of a run in one transaction; `each`: one per file.
    #[arg(long, env = "DB_SETUP_TRANSACTION_MODE", value_parser = TransactionMode::from_str)]
    mode: Option<TransactionMode>,
    /// The last migration to apply.
    #[arg(long, value_name = "MIGRATION")]
    to: Option<String>,
    /// The deploy phase: `expand` stops before the first pending
    /// `phase=contract` migration, `contract` runs the rest (absent: everything).
    #[arg(long, value_parser = Phase::from_str, value_name = "PHASE")]
    phase: Option<Phase>,
    /// How long to wait for the migration lock (e.g. 60s).
    #[arg(long, env = "DB_SETUP_LOCK_WAIT", value_parser = parse_duration, value_name = "DURATION")]
    lock_wait: Option<Duration>,
    /// PostgreSQL's lock_timeout for each migration statement.
    #[arg(long, env = "DB_SETUP_LOCK_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    lock_timeout: Option<Duration>,
    /// PostgreSQL's statement_timeout for each migration statement.
    #[arg(long, env = "DB_SETUP_STATEMENT_TIMEOUT", value_parser = parse_duration, value_name = "DURATION")]
    statement_timeout: Option<Duration>,
}

impl Run {
    fn options(&self) -> RunOptions {
        let d = RunOptions::default();
        RunOptions {
            mode: self.mode.unwrap_or(d.mode),
            up_to: self.to.clone(),
            phase: self.phase,
            lock_wait: self.lock_wait.unwrap_or(d.lock_wait),
            lock_timeout: self.lock_timeout.unwrap_or(d.lock_timeout),
            statement_timeout: self.statement_timeout.unwrap_or(d.statement_timeout),
            ..d
        }
    }
}

/// The output format of `plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Json,
    Markdown,
}

/// Why the command failed.
#[derive(Debug, thiserror::Error)]
enum CliError {
    /// The URL does not parse.
    #[error("DATABASE_URL cannot be read: {0}")]
    Url(String),
    /// A Unix socket host.
    #[error("DATABASE_URL: a Unix socket host is not supported, use a TCP host")]
    UnixSocket,
    /// The CA file.
    #[error(transparent)]
    Tls(#[from] TlsSetupError),
    /// The migrations directory.
    #[error(transparent)]
    Migrations(#[from] SourceErrors),
    /// Connecting.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    /// The engine. The operator of a shell has the database: PostgreSQL's
    /// DETAIL (left out of the message, it can hold row values) is shown.
    #[error("{error}{}", detail.as_deref().map(|d| format!("\nDETAIL: {d}")).unwrap_or_default())]
    Migrate {
        /// The error (boxed: it is large).
        error: Box<MigrateError>,
        /// PostgreSQL's DETAIL.
        detail: Option<String>,
    },
    /// Writing the report.
    #[error("cannot write the report: {0}")]
    Output(String),
    /// The fleet file.
    #[error("the fleet file {path}: {problem}")]
    FleetFile {
        /// The file.
        path: String,
        /// What is wrong (never a URL: it holds a password).
        problem: String,
    },
}

impl CliError {
    /// A query outside the engine failed.
    fn database(e: tokio_postgres::Error) -> Self {
        CliError::Output(ServerError::from_pg(&e).to_string())
    }
}

impl From<MigrateError> for CliError {
    fn from(error: MigrateError) -> Self {
        let detail = error.server_error().and_then(|s| s.detail.clone());
        CliError::Migrate {
            error: Box::new(error),
            detail,
        }
    }
}

/// Reads a `postgresql://` URL (or key=value string) into a target and a TLS mode.
fn target_from_url(url: &str) -> Result<(Target, TlsMode), CliError> {
    let config = tokio_postgres::Config::from_str(url).map_err(|e| CliError::Url(e.to_string()))?;
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(_) => return Err(CliError::UnixSocket),
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

/// What a command prints.
enum Output {
    Json(serde_json::Value),
    Text(String),
}

/// Reads the fleet file: each entry's name and URL (the URL's errors are
/// reported by entry, never echoing it).
fn read_fleet(path: &std::path::Path) -> Result<Vec<(String, Target, TlsMode)>, CliError> {
    let bad = |problem: String| CliError::FleetFile {
        path: path.display().to_string(),
        problem,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let entries: Vec<serde_json::Map<String, serde_json::Value>> =
        serde_json::from_str(&text).map_err(|e| bad(format!("not a JSON list of objects: {e}")))?;
    let mut out = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let field = |key: &str| entry.get(key).and_then(|v| v.as_str());
        let (Some(name), Some(url)) = (field("name"), field("url")) else {
            return Err(bad(format!("entry {i} needs a \"name\" and a \"url\"")));
        };
        let (target, mode) = target_from_url(url)
            .map_err(|_| bad(format!("entry {i} ({name}): the url cannot be read")))?;
        out.push((name.to_string(), target, mode));
    }
    Ok(out)
}

/// `fleet`: every database of the file, at most `--concurrency` at once.
async fn run_fleet(fleet: FleetArgs, run: Run) -> Result<(Output, u8), CliError> {
    let databases = read_fleet(&fleet.file)?;
    let set = match &fleet.dir {
        Some(dir) => MigrationSet::from_dir(dir),
        None => MigrationSet::embedded(),
    }?;
    let plain = Tls::from_config(TlsMode::Disable, fleet.ca_file.as_deref())?;
    let verified = Tls::from_config(TlsMode::VerifyFull, fleet.ca_file.as_deref())?;
    let options = ConnectOptions::default();
    let (set, run, plain, verified, options) = (&set, &run, &plain, &verified, &options);
    let report = db_setup::fleet::run_bounded(
        databases,
        usize::from(fleet.concurrency),
        |(name, target, mode)| async move {
            let tls = if mode == TlsMode::Disable {
                plain
            } else {
                verified
            };
            db_setup::fleet::migrate_one(name, &target, tls, options, set, run.options()).await
        },
    )
    .await;
    let code = u8::from(report.status == db_setup::fleet::Status::Failed);
    let value = serde_json::to_value(&report).map_err(|e| CliError::Output(e.to_string()))?;
    Ok((Output::Json(value), code))
}

/// Runs one command: its output and exit code.
async fn run(command: Command) -> Result<(Output, u8), CliError> {
    match command {
        Command::Insight {
            database,
            top,
            long_running,
        } => insight(&database, InsightOptions { top, long_running }).await,
        Command::Verify { database, prefix } => verify(&database, prefix.as_deref()).await,
        Command::Catalog { database, prefix } => catalog(&database, &prefix).await,
        Command::Fleet { fleet, run } => run_fleet(fleet, run).await,
        command => migration(command).await,
    }
}

fn json(v: Result<serde_json::Value, serde_json::Error>) -> Result<Output, CliError> {
    v.map(Output::Json)
        .map_err(|e| CliError::Output(e.to_string()))
}

/// `insight`: maintenance findings.
async fn insight(database: &Database, options: InsightOptions) -> Result<(Output, u8), CliError> {
    let (connection, _) = connect(&database.database_url, database.ca_file.as_deref()).await?;
    let report = db_setup::insight::insight(connection.client(), &options)
        .await
        .map_err(CliError::database)?;
    Ok((json(serde_json::to_value(report))?, 0))
}

/// `verify`: the declared items and the catalog's drift.
async fn verify(database: &Database, prefix: Option<&str>) -> Result<(Output, u8), CliError> {
    use db_setup::verify::{self, Spec, catalog};
    let (connection, target) = connect(&database.database_url, database.ca_file.as_deref()).await?;
    let client = connection.client();
    let spec = Spec::embedded().map_err(|e| CliError::Output(e.to_string()))?;
    let report = verify::verify(client, &spec)
        .await
        .map_err(CliError::database)?;
    let prefix = db_setup::users::apply::prefix(prefix, &target.dbname)
        .map_err(|e| CliError::Output(e.to_string()))?;
    let live = catalog::capture(client, &prefix)
        .await
        .map_err(CliError::database)?;
    let reference = catalog::embedded().map_err(|e| CliError::Output(e.to_string()))?;
    let report = report.with_drift(catalog::diff(&reference, &live));
    Ok((json(serde_json::to_value(report))?, 0))
}

/// `catalog`: what the embedded migrations produce, for `make catalog`.
async fn catalog(database: &Database, prefix: &str) -> Result<(Output, u8), CliError> {
    let (connection, target) = connect(&database.database_url, database.ca_file.as_deref()).await?;
    let set = MigrationSet::embedded()?;
    let snapshot = db_setup::verify::catalog::reference(
        connection.client(),
        &set,
        prefix,
        &target.dbname,
        &target.user,
    )
    .await
    .map_err(|e| CliError::Output(e.to_string()))?;
    Ok((
        Output::Text(db_setup::verify::catalog::to_file(&snapshot)),
        0,
    ))
}

/// The commands that run the migration engine.
async fn migration(command: Command) -> Result<(Output, u8), CliError> {
    let (source, run) = match &command {
        Command::Migrate { source, run }
        | Command::Status { source, run, .. }
        | Command::Plan { source, run, .. }
        | Command::Baseline { source, run, .. }
        | Command::Repair { source, run, .. } => (source, run),
        Command::Insight { .. }
        | Command::Verify { .. }
        | Command::Catalog { .. }
        | Command::Fleet { .. } => {
            return Err(CliError::Output("not a migration command".into()));
        }
    };
    let set = match &source.dir {
        Some(dir) => MigrationSet::from_dir(dir),
        None => MigrationSet::embedded(),
    }?;
    let (connection, _) = connect(&source.database_url, source.ca_file.as_deref()).await?;
    let migrator = Migrator::new(connection.client(), run.options());
    Ok(match command {
        Command::Insight { .. }
        | Command::Verify { .. }
        | Command::Catalog { .. }
        | Command::Fleet { .. } => {
            return Err(CliError::Output("not a migration command".into()));
        }
        Command::Migrate { .. } => (
            json(serde_json::to_value(migrator.migrate(&set).await?))?,
            0,
        ),
        Command::Status { exit_code, .. } => {
            let status = migrator.status(&set).await?;
            let code = if exit_code { status_code(&status) } else { 0 };
            (json(serde_json::to_value(status))?, code)
        }
        Command::Plan { format, .. } => {
            let plan = PlanReport::from(migrator.status(&set).await?);
            match format {
                Format::Json => (json(serde_json::to_value(plan))?, 0),
                Format::Markdown => (Output::Text(plan.to_markdown()), 0),
            }
        }
        Command::Baseline {
            run,
            force,
            confirm,
            ..
        } => {
            let Some(to) = run.to else {
                return Err(MigrateError::Refused {
                    action: "baseline",
                    problems: vec!["pass --to: the last migration the schema already has".into()],
                }
                .into());
            };
            let spec = Spec::embedded().map_err(|e| MigrateError::Refused {
                action: "baseline",
                problems: vec![e.to_string()],
            })?;
            let report = migrator.baseline(&set, &spec, &to, force, confirm).await?;
            (json(serde_json::to_value(report))?, 0)
        }
        Command::Repair {
            accept_checksums,
            forget,
            confirm,
            ..
        } => {
            let report = migrator
                .repair(&set, &accept_checksums, &forget, confirm)
                .await?;
            (json(serde_json::to_value(report))?, 0)
        }
    })
}

/// The exit code of `status --exit-code`.
fn status_code(status: &StatusReport) -> u8 {
    if !status.problems.is_empty() || status.plan.is_none() {
        EXIT_PROBLEMS
    } else if !status.pending.is_empty() {
        EXIT_PENDING
    } else {
        0
    }
}

fn write(output: &Output) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match output {
        Output::Json(v) => {
            serde_json::to_writer_pretty(&mut out, v)?;
            writeln!(out)
        }
        Output::Text(t) => out.write_all(t.as_bytes()),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Output(format!("cannot start the runtime: {e}")))
        .and_then(|rt| rt.block_on(run(cli.command)))
        .and_then(|(output, code)| {
            write(&output)
                .map(|()| code)
                .map_err(|e| CliError::Output(e.to_string()))
        });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "db-setup-cli: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

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

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(
            ["db-setup-cli"]
                .iter()
                .chain(args)
                .chain(&["--database-url", "postgresql://x@h/d"]),
        )
    }

    #[test]
    fn arguments_are_checked() {
        let cli = parse(&[
            "migrate",
            "--mode",
            "each",
            "--to",
            "002_x",
            "--lock-wait",
            "5s",
        ])
        .unwrap();
        let Command::Migrate { run, .. } = cli.command else {
            panic!("not migrate")
        };
        let options = run.options();
        assert_eq!(options.mode, TransactionMode::Each);
        assert_eq!(options.up_to.as_deref(), Some("002_x"));
        assert_eq!(options.lock_wait, Duration::from_secs(5));
        assert_eq!(
            options.statement_timeout,
            RunOptions::default().statement_timeout
        );
        let e = parse(&["drop"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidSubcommand);
        let e = parse(&["migrate", "--mode", "all"]).unwrap_err();
        assert!(e.to_string().contains("batch or each"), "{e}");
        let e = parse(&["plan", "--format", "html"]).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::InvalidValue);
        let e = parse(&["status", "--lock-wait", "soon"]).unwrap_err();
        assert!(e.to_string().contains("soon"), "{e}");
    }

    #[test]
    fn the_phase_option_selects_a_step() {
        for (text, phase) in [("expand", Phase::Expand), ("contract", Phase::Contract)] {
            let cli = parse(&["plan", "--phase", text]).unwrap();
            let Command::Plan { run, .. } = cli.command else {
                panic!("not plan")
            };
            assert_eq!(run.options().phase, Some(phase));
        }
        let Command::Migrate { run, .. } = parse(&["migrate"]).unwrap().command else {
            panic!("not migrate")
        };
        assert_eq!(run.options().phase, None);
        let e = parse(&["migrate", "--phase", "later"]).unwrap_err();
        assert!(e.to_string().contains("expand"), "{e}");
    }

    #[test]
    fn status_exit_codes_say_pending_and_problems() {
        use db_setup::migrate::Problem;
        use db_setup::migrate::history::TableState;
        use db_setup::migrate::report::PendingMigration;
        let mut status = StatusReport {
            embedded: 1,
            history_table: TableState::Tracked,
            plan: Some(Vec::new()),
            ..StatusReport::default()
        };
        assert_eq!(status_code(&status), 0);
        status.pending.push(PendingMigration {
            name: "002_b".into(),
            checksum: "c".into(),
            no_transaction: false,
            phase: Phase::Expand,
        });
        assert_eq!(status_code(&status), EXIT_PENDING);
        status.problems.push(Problem::MissingFile {
            name: "000_gone".into(),
        });
        status.plan = None;
        assert_eq!(status_code(&status), EXIT_PROBLEMS);
    }

    #[test]
    fn insight_takes_a_bounded_top_and_a_duration() {
        assert_eq!(parse_top("5"), Ok(5));
        assert!(parse_top("0").unwrap_err().contains("from 1 to"));
        assert!(parse_top("none").is_err());
        let cli = parse(&["insight", "--top", "3", "--long-running", "30s"]).unwrap();
        let Command::Insight {
            top, long_running, ..
        } = cli.command
        else {
            panic!("not insight")
        };
        assert_eq!((top, long_running), (3, Duration::from_secs(30)));
    }
}
