//! Verified TLS against Debian's PostgreSQL 15 with TLS forced (the pgserver
//! build has none): the certificate is for host name "localhost", signed by
//! a test CA that `make test` generates.

mod common;

use common::env;
use common::lambda::{Function, RuntimeApi, create_secret, secret_name, secrets_client};
use db_setup::db::{self, ConnectError, ConnectOptions, Target, Tls, TlsMode};
use db_setup::redacted::SecretString;
use serde_json::json;

fn target(host: &str) -> Target {
    Target {
        host: host.into(),
        port: env("DB_SETUP_TEST_TLS_PORT").parse().unwrap(),
        dbname: "postgres".into(),
        user: "postgres".into(),
        password: SecretString::new(env("DB_SETUP_TEST_TLS_PASSWORD")),
    }
}

fn tls_with(ca_path: &str) -> Tls {
    let pem = std::fs::read_to_string(ca_path).unwrap();
    Tls::new(TlsMode::VerifyFull, Some((ca_path, &pem))).unwrap()
}

fn once() -> ConnectOptions {
    ConnectOptions {
        attempts: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn verify_full_connects_with_the_right_ca_and_host_name() {
    let c = db::connect(
        &target("localhost"),
        &tls_with(&env("DB_SETUP_TEST_TLS_CA")),
        &once(),
    )
    .await
    .unwrap();
    let rows = common::column(
        &c.client()
            .simple_query(
                "SELECT ssl::text || ' ' || version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            )
            .await
            .unwrap(),
    );
    assert!(rows[0].starts_with("true TLSv1."), "{rows:?}");
}

/// What start-up uses: the stores parsed on a thread of their own, the
/// connection waiting for them; it verifies as `Tls::new` does.
#[tokio::test]
async fn a_connector_built_in_the_background_verifies_the_same() {
    let started = |ca_path: &str| {
        let pem = std::fs::read_to_string(ca_path).unwrap();
        Tls::start(TlsMode::VerifyFull, Some((ca_path, &pem))).unwrap()
    };
    let right = started(&env("DB_SETUP_TEST_TLS_CA"));
    db::connect(&target("localhost"), &right, &once())
        .await
        .unwrap();
    let wrong = started(&env("DB_SETUP_TEST_TLS_WRONG_CA"));
    let err = db::connect(&target("localhost"), &wrong, &once())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
    assert!(
        err.to_string().contains("certificate verify failed"),
        "{err}"
    );
}

#[tokio::test]
async fn a_certificate_from_another_ca_is_refused_clearly() {
    let err = db::connect(
        &target("localhost"),
        &tls_with(&env("DB_SETUP_TEST_TLS_WRONG_CA")),
        &once(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(text.starts_with("TLS to localhost:"), "{text}");
    assert!(text.contains("certificate verify failed"), "{text}");
    assert!(
        text.contains("must chain to an RDS CA or to DB_SETUP_TLS_CA_FILE"),
        "{text}"
    );
}

#[tokio::test]
async fn the_embedded_rds_bundle_alone_does_not_trust_a_private_ca() {
    let tls = Tls::new(TlsMode::VerifyFull, None).unwrap();
    let err = db::connect(&target("localhost"), &tls, &once())
        .await
        .err()
        .unwrap();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
}

#[tokio::test]
async fn a_host_name_the_certificate_does_not_name_is_refused_clearly() {
    // Same server, reached by IP address: the certificate names only "localhost".
    let err = db::connect(
        &target("127.0.0.1"),
        &tls_with(&env("DB_SETUP_TEST_TLS_CA")),
        &once(),
    )
    .await
    .err()
    .unwrap();
    assert!(matches!(err, ConnectError::Tls { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("certificate verify failed") && text.to_lowercase().contains("mismatch"),
        "{text}"
    );
    assert!(text.contains("name the host you connect to"), "{text}");
}

#[tokio::test]
async fn plaintext_is_refused_by_a_server_that_forces_tls() {
    let err = db::connect(
        &target("localhost"),
        &Tls::new(TlsMode::Disable, None).unwrap(),
        &once(),
    )
    .await
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(text.contains("no encryption"), "{text}");
}

#[tokio::test]
async fn the_function_reaches_a_tls_database_with_an_extra_ca_file() {
    let sm = secrets_client().await;
    let admin = secret_name("tls-admin");
    create_secret(
        &sm,
        &admin,
        &json!({"host": "localhost", "port": env("DB_SETUP_TEST_TLS_PORT").parse::<u16>().unwrap(),
                "dbname": "postgres", "username": "postgres", "password": env("DB_SETUP_TEST_TLS_PASSWORD")}),
    )
    .await;
    let runtime = RuntimeApi::start().await;
    let function = Function::start(
        &runtime,
        &[
            ("DB_SETUP_ADMIN_SECRET_ID", admin.clone()),
            ("DB_SETUP_TLS_CA_FILE", env("DB_SETUP_TEST_TLS_CA")),
        ],
    )
    .await;
    let status = runtime
        .invoke(
            &json!({"action": "status"}),
            std::time::Duration::from_secs(60),
        )
        .await;
    assert!(
        status.response()["embedded"].as_u64().unwrap() > 0,
        "{}",
        status.text()
    );
    assert!(
        function.logs().contains("connected over verified TLS"),
        "{}",
        function.logs()
    );

    // The same without the CA file: a clear TLS error, no plaintext fallback.
    let runtime = RuntimeApi::start().await;
    let _f = Function::start(&runtime, &[("DB_SETUP_ADMIN_SECRET_ID", admin)]).await;
    let err = runtime
        .invoke(
            &json!({"action": "status"}),
            std::time::Duration::from_secs(60),
        )
        .await;
    assert_eq!(err.error()["errorType"], "DatabaseConnectionError");
    assert!(
        err.error()["errorMessage"]
            .as_str()
            .unwrap()
            .contains("certificate verify failed")
    );
}
