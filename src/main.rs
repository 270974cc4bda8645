//! The Lambda: configuration and clients built once, then the runtime loop.

use std::sync::Arc;

use db_setup::config::Config;
use db_setup::db::Tls;
use db_setup::handler::{Handler, Setup};
use db_setup::migrate::MigrationSet;
use db_setup::respond::Responder;
use db_setup::secrets::SecretsManager;
use db_setup::setup::{LiveSetup, Unconfigured};
use db_setup::verify::Spec;
use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::Value;
use tracing::{error, info};

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,aws_config=warn,aws_smithy_runtime=warn")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        builder.with_ansi(false).init();
    }
}

/// Builds the production work, or the reason it cannot be built.
async fn live_setup(config: Config) -> Result<LiveSetup<SecretsManager>, String> {
    let extra_ca = match &config.tls_ca_file {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .map_err(|e| format!("DB_SETUP_TLS_CA_FILE {}: {e}", path.display()))?,
        )),
        None => None,
    };
    let tls = Tls::new(
        config.tls,
        extra_ca.as_ref().map(|(n, p)| (n.as_str(), p.as_str())),
    )
    .map_err(|e| e.to_string())?;
    let migrations = MigrationSet::embedded().map_err(|e| e.to_string())?;
    let spec = Spec::embedded().map_err(|e| e.to_string())?;
    let aws = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    let secrets = SecretsManager::new(aws_sdk_secretsmanager::Client::new(&aws));
    info!(
        migrations = migrations.migrations().len(),
        last = migrations.last().unwrap_or(""),
        users = config.users.len(),
        response_mode = ?config.response_mode,
        tls = %config.tls,
        "ready"
    );
    Ok(LiveSetup::new(config, secrets, tls, migrations, spec))
}

async fn serve<S: Setup>(handler: Handler<S>) -> Result<(), Error> {
    let handler = Arc::new(handler);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let handler = handler.clone();
        async move { handler.handle(event.payload, event.context.deadline).await }
    }))
    .await
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let env = |name: &str| std::env::var(name).ok();
    let config = Config::from_env(env);
    init_tracing(match &config {
        Ok(c) => c.json_logs,
        Err(_) => env("AWS_LAMBDA_FUNCTION_NAME").is_some(),
    });
    let responder = Responder::new()?;
    let (margin, budget, mode) = match &config {
        Ok(c) => (c.deadline_margin, c.time_budget, c.response_mode),
        Err(_) => (
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(300),
            Config::response_mode_from_env(env),
        ),
    };
    let live = match config {
        Ok(config) => live_setup(config).await,
        Err(e) => Err(e.to_string()),
    };
    match live {
        Ok(setup) => serve(Handler::new(setup, mode, responder, margin, budget)).await,
        Err(reason) => {
            error!(%reason, "cannot start: every request will be answered FAILED with this reason");
            serve(Handler::new(
                Unconfigured { reason },
                mode,
                responder,
                margin,
                budget,
            ))
            .await
        }
    }
}
