//! The Lambda: configuration and clients built once, then the runtime loop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use db_setup::config::{Config, LogSettings};
use db_setup::db::{Tls, TlsMode};
use db_setup::error::SetupError;
use db_setup::handler::{Handler, Work};
use db_setup::invoke::LambdaInvoker;
use db_setup::metrics;
use db_setup::migrate::MigrationSet;
use db_setup::respond::Responder;
use db_setup::secrets::SecretsManager;
use db_setup::snapshot::RdsSnapshots;
use db_setup::verify::Spec;
use db_setup::work::{LiveWork, Unconfigured};
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::value::RawValue;
use tracing::{error, info};
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{FilterExt, filter_fn};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Log targets (tracing's, and the `log` crate's through the bridge) held at
/// INFO whatever RUST_LOG says: at DEBUG tokio-postgres logs every query,
/// `ALTER ROLE ... PASSWORD 'SCRAM-SHA-256$...'` included; at TRACE the
/// runtime logs the raw event, and the HTTP clients their URLs, with the
/// pre-signed ResponseURL's signature.
const CAPPED_AT_INFO: &[&str] = &[
    "tokio_postgres",
    "lambda_runtime",
    "lambda_runtime_api_client",
    "postgres_protocol",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
];

fn capped(target: &str) -> bool {
    CAPPED_AT_INFO.iter().any(|t| {
        target
            .strip_prefix(t)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
    })
}

/// Logs as [`LogSettings`] says (Lambda's advanced logging controls, with
/// `DB_SETUP_LOG_FORMAT` and `RUST_LOG` as overrides), with the cap above;
/// EMF metric records go to stdout as they are, whatever the filter.
fn init_tracing(logs: &LogSettings) {
    let filter = tracing_subscriber::EnvFilter::try_new(&logs.filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(db_setup::defaults::LOG_FILTER));
    let capped_or_emf = |meta: &tracing::Metadata<'_>| {
        metrics::is_emf(meta) || (capped(meta.target()) && *meta.level() > tracing::Level::INFO)
    };
    let cap = filter_fn(move |meta| !capped_or_emf(meta));
    let filter = filter.and(cap);
    let layer = tracing_subscriber::fmt::layer().with_target(false);
    let emf = metrics::EmfLayer.with_filter(filter_fn(metrics::is_emf));
    if logs.json {
        tracing_subscriber::registry()
            .with(emf)
            .with(
                layer
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_filter(filter),
            )
            .init();
    } else {
        tracing_subscriber::registry()
            .with(emf)
            .with(layer.with_ansi(false).with_filter(filter))
            .init();
    }
}

/// Builds the production work and its TLS (whose connector the response
/// PUT shares), or the error that keeps it from starting. The trust stores
/// are parsed on a thread of their own: ready does not wait for them.
/// What a configured process runs on.
struct Live {
    work: LiveWork<SecretsManager, RdsSnapshots>,
    tls: Tls,
    /// `Some` when deploys may continue in new invocations.
    continuation: Option<(LambdaInvoker, Option<Duration>)>,
}

async fn live_setup(config: Config, steps: &mut StartupSteps) -> Result<Live, SetupError> {
    let tls = Tls::start_from_config(config.tls, config.tls_ca_file.as_deref())?;
    steps.done("tls");
    let migrations = MigrationSet::embedded()?;
    let spec = Spec::embedded()?;
    steps.done("embedded");
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws));
    let snapshots = RdsSnapshots::new(aws_sdk_rds::Client::new(&aws));
    let continuation = config.continuation.then(|| {
        (
            LambdaInvoker::new(aws_sdk_lambda::Client::new(&aws)),
            config.continue_reserve,
        )
    });
    steps.done("aws");
    info!(
        config_ms = steps.ms("config"),
        tls_ms = steps.ms("tls"),
        embedded_ms = steps.ms("embedded"),
        aws_ms = steps.ms("aws"),
        main_ms = steps.total_ms(),
        migrations = migrations.migrations().len(),
        last = migrations.last().unwrap_or(""),
        migrations_sha256 = db_setup::migrate::package_hash(),
        users = config.users.len(),
        continuation = config.continuation,
        response_mode = ?config.response_mode,
        tls = %config.tls,
        "ready"
    );
    Ok(Live {
        work: LiveWork::new(config, secrets, tls.clone(), migrations, spec)
            .with_snapshots(snapshots),
        tls,
        continuation,
    })
}

async fn serve<S: Work>(handler: Handler<S>) -> Result<(), Error> {
    let handler = Arc::new(handler);
    // The payload as raw JSON text: read into a Value here, an event nested
    // deeper than serde_json's limit would be refused before the handler,
    // and CloudFormation would get no answer.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let handler = handler.clone();
        async move {
            handler
                .handle_raw(
                    event.payload.get(),
                    event.context.deadline,
                    &event.context.invoked_function_arn,
                )
                .await
        }
    }))
    .await
}

/// How long each start-up step took (logged with "ready"; the benchmark reads it).
struct StartupSteps {
    start: Instant,
    last: Instant,
    steps: Vec<(&'static str, Duration)>,
}

impl StartupSteps {
    fn new() -> Self {
        let now = Instant::now();
        StartupSteps {
            start: now,
            last: now,
            steps: Vec::new(),
        }
    }

    /// Ends the step `name` (it began when the previous one ended).
    fn done(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps.push((name, now - self.last));
        self.last = now;
    }

    fn ms(&self, name: &str) -> f64 {
        self.steps
            .iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, d)| d.as_secs_f64() * 1000.0)
            .sum()
    }

    fn total_ms(&self) -> f64 {
        (self.last - self.start).as_secs_f64() * 1000.0
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut steps = StartupSteps::new();
    let env = |name: &str| std::env::var(name).ok();
    let config = Config::from_env(env);
    init_tracing(&LogSettings::from_env(env));
    steps.done("config");
    let (margin, budget, mode) = match &config {
        Ok(c) => (c.deadline_margin, c.time_budget, c.response_mode),
        Err(_) => (
            db_setup::defaults::DEADLINE_MARGIN,
            db_setup::defaults::TIME_BUDGET,
            Config::response_mode_from_env(env),
        ),
    };
    let namespace = config.as_ref().map_or_else(
        |_| db_setup::defaults::METRICS_NAMESPACE.to_string(),
        |c| c.metrics_namespace.clone(),
    );
    let live = match config {
        Ok(config) => live_setup(config, &mut steps).await,
        Err(e) => Err(SetupError::from(e)),
    };
    // Without a database TLS, the PUT's connector (system roots) is built
    // in the background all the same.
    let tls = match &live {
        Ok(live) => live.tls.clone(),
        Err(_) => Tls::start(TlsMode::Disable, None)?,
    };
    let mut responder = Responder::sharing(tls);
    responder.allow_local = Config::allow_local_response_url_from_env(env);
    if responder.allow_local {
        info!(
            "DB_SETUP_ALLOW_LOCAL_RESPONSE_URL=true: any http(s) ResponseURL is answered (local use only)"
        );
    }
    match live {
        Ok(live) => {
            let handler = Handler::new(live.work, mode, responder, margin, budget)
                .with_metrics_namespace(namespace);
            let handler = match live.continuation {
                Some((invoker, reserve)) => handler.with_continuation(
                    invoker,
                    reserve,
                    std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok(),
                ),
                None => handler,
            };
            serve(handler).await
        }
        Err(error) => {
            error!(reason = %error, kind = error.kind(), "cannot start: every request will be answered FAILED with this reason");
            serve(
                Handler::new(
                    Unconfigured {
                        error: Arc::new(error),
                    },
                    mode,
                    responder,
                    margin,
                    budget,
                )
                .with_metrics_namespace(namespace),
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::capped;

    #[test]
    fn the_cap_covers_the_crates_and_their_modules_only() {
        for target in [
            "tokio_postgres",
            "tokio_postgres::query",
            "tokio_postgres::prepare",
            "lambda_runtime::layers::api_response",
            "reqwest::connect",
            "hyper_util::client::legacy::pool",
        ] {
            assert!(capped(target), "{target}");
        }
        for target in [
            "db_setup",
            "db_setup::handler",
            "tokio_postgresx",
            "aws_config",
            "h2x",
        ] {
            assert!(!capped(target), "{target}");
        }
    }
}
