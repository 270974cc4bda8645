//! The function's configuration, read from the environment once at start.
//! Every problem is collected, so one message lists them all
//! (docs/configuration.md documents each variable).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::db::{Target, TlsMode};
use crate::defaults;
use crate::duration::parse_duration;
use crate::migrate::TransactionMode;
use crate::secrets::RdsCredentials;
use crate::users::{Auth, RoleTemplate, UserSpec};

/// How the function answers a CloudFormation request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ResponseMode {
    /// PUT the response to the request's ResponseURL (the function is the ServiceToken).
    Direct,
    /// Return the result; the CDK Provider framework answers CloudFormation.
    Provider,
}

impl FromStr for ResponseMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "direct" => Ok(ResponseMode::Direct),
            "provider" => Ok(ResponseMode::Provider),
            other => Err(format!(
                "`{other}` is not a response mode: write direct or provider"
            )),
        }
    }
}

/// Where the database is, when the admin secret does not say (or to override it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DbOverrides {
    /// Host.
    pub host: Option<String>,
    /// Port.
    pub port: Option<u16>,
    /// Database.
    pub dbname: Option<String>,
}

/// The admin secret names no host and `DB_SETUP_DB_HOST` is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoHost;

impl DbOverrides {
    /// Where to connect as the admin: each of host, port and database from
    /// the configuration when set, else from the admin secret, else the
    /// PostgreSQL defaults (port 5432, database `postgres`; a host has none).
    pub fn resolve(&self, creds: RdsCredentials) -> Result<Target, NoHost> {
        Ok(Target {
            host: self.host.clone().or(creds.host).ok_or(NoHost)?,
            port: self.port.or(creds.port).unwrap_or(defaults::PORT),
            dbname: self
                .dbname
                .clone()
                .or(creds.dbname)
                .unwrap_or_else(|| defaults::DATABASE.into()),
            user: creds.username,
            password: creds.password,
        })
    }
}

/// Everything the function needs to know.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Name or ARN of the admin secret.
    pub admin_secret_id: String,
    /// Host/port/database overrides.
    pub db: DbOverrides,
    /// Application users.
    pub users: Vec<UserSpec>,
    /// Prefix of the group roles; `None`: derived from the database name
    /// ([`crate::users::default_prefix`]), so groups are per database.
    pub role_prefix: Option<String>,
    /// Direct or provider.
    pub response_mode: ResponseMode,
    /// TLS mode.
    pub tls: TlsMode,
    /// Extra CA certificates.
    pub tls_ca_file: Option<PathBuf>,
    /// Migration transaction mode.
    pub transaction_mode: TransactionMode,
    /// Wait for the migration lock.
    pub lock_wait: Duration,
    /// PostgreSQL lock_timeout.
    pub lock_timeout: Duration,
    /// Retries after a lock timeout.
    pub lock_retries: u32,
    /// PostgreSQL statement_timeout.
    pub statement_timeout: Duration,
    /// Timeout of one connection attempt.
    pub connect_timeout: Duration,
    /// Connection attempts.
    pub connect_attempts: u32,
    /// Time kept back before the invocation's deadline.
    pub deadline_margin: Duration,
    /// Time allowed when the deadline is unknown.
    pub time_budget: Duration,
    /// JSON log lines.
    pub json_logs: bool,
    /// CloudWatch namespace of the deploy metrics.
    pub metrics_namespace: String,
    /// `DB_SETUP_CONTINUE`: a direct-mode deploy that runs out of an
    /// invocation's time continues in a new invocation of the function
    /// (`lambda:InvokeFunction` on itself); see [`crate::continuation`].
    pub continuation: bool,
    /// `DB_SETUP_SNAPSHOT_POLL`: the pause between two looks at a snapshot
    /// being created (see [`crate::snapshot`]).
    pub snapshot_poll: Duration,
    /// `DB_SETUP_CONTINUE_RESERVE`: no unit of work starts later than this
    /// before the invocation's deadline (default: a third of its time for work).
    pub continue_reserve: Option<Duration>,
}

/// How the function logs, following Lambda's advanced logging controls:
/// the format is `DB_SETUP_LOG_FORMAT` (`json`/`text`), else
/// `AWS_LAMBDA_LOG_FORMAT` (`JSON`/`Text`, set by the function's
/// `LoggingConfig`), else JSON in Lambda and text elsewhere; the filter is
/// `RUST_LOG`, else `AWS_LAMBDA_LOG_LEVEL` (`TRACE` .. `FATAL`), else
/// [`defaults::LOG_FILTER`]. Never fails: a value it cannot read falls back
/// to the next source (and [`Config::from_env`] reports a bad
/// `DB_SETUP_LOG_FORMAT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    /// JSON log lines.
    pub json: bool,
    /// The `EnvFilter` directives.
    pub filter: String,
}

fn log_format(v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "json" => Ok(true),
        "text" => Ok(false),
        _ => Err(format!("`{v}` is not a log format: write json or text")),
    }
}

/// `AWS_LAMBDA_LOG_LEVEL` as an `EnvFilter` level (Lambda's `FATAL` is
/// tracing's `error`, the highest it has).
fn lambda_level(v: &str) -> Option<&'static str> {
    Some(match v.trim().to_ascii_uppercase().as_str() {
        "TRACE" => "trace",
        "DEBUG" => "debug",
        "INFO" => "info",
        "WARN" => "warn",
        "ERROR" | "FATAL" => "error",
        _ => return None,
    })
}

impl LogSettings {
    /// Reads the log settings (see [`LogSettings`]).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> LogSettings {
        let var = |name: &str| {
            env(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let json = var("DB_SETUP_LOG_FORMAT")
            .and_then(|v| log_format(&v).ok())
            .or_else(|| var("AWS_LAMBDA_LOG_FORMAT").and_then(|v| log_format(&v).ok()))
            .unwrap_or_else(|| var("AWS_LAMBDA_FUNCTION_NAME").is_some());
        let filter = var("RUST_LOG")
            .or_else(|| {
                var("AWS_LAMBDA_LOG_LEVEL")
                    .and_then(|v| lambda_level(&v))
                    .map(|level| defaults::LOG_FILTER.replacen("info", level, 1))
            })
            .unwrap_or_else(|| defaults::LOG_FILTER.to_string());
        LogSettings { json, filter }
    }
}

/// Checks a CloudWatch namespace: 1 to 255 characters of letters, digits
/// and `. - _ / # :` or space, not starting with `AWS/` (reserved).
fn metrics_namespace(v: &str) -> Result<String, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || ".-_/#: ".contains(c);
    if v.len() > 255 || !v.chars().all(allowed) || v.starts_with("AWS/") {
        return Err(format!(
            "`{v}` is not a CloudWatch namespace: up to 255 letters, digits and . - _ / # :, not starting with AWS/"
        ));
    }
    Ok(v.to_string())
}

/// Every problem found in the environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub Vec<String>);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid configuration ({} problem(s)): {}",
            self.0.len(),
            self.0.join("; ")
        )
    }
}

impl std::error::Error for ConfigError {}

struct Reader<'a, F: Fn(&str) -> Option<String>> {
    env: &'a F,
    problems: Vec<String>,
}

impl<F: Fn(&str) -> Option<String>> Reader<'_, F> {
    fn raw(&self, name: &str) -> Option<String> {
        (self.env)(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    fn parsed<T>(
        &mut self,
        name: &str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        match self.raw(name) {
            None => default,
            Some(v) => parse(&v).unwrap_or_else(|e| {
                self.problems.push(format!("{name}: {e}"));
                default
            }),
        }
    }

    fn duration(&mut self, name: &str, default: Duration) -> Duration {
        self.parsed(name, default, parse_duration)
    }

    fn number<T>(&mut self, name: &str, default: T, min: T) -> T
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
    {
        self.parsed(name, default, |v| match v.parse::<T>() {
            Ok(n) if n >= min => Ok(n),
            _ => Err(format!("`{v}` is not a whole number of at least {min}")),
        })
    }
}

impl Config {
    /// Reads the configuration through `env` (the process environment in
    /// `main`, a map in tests).
    pub fn from_env(env: impl Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let mut r = Reader {
            env: &env,
            problems: Vec::new(),
        };
        let admin_secret_id = r.raw("DB_SETUP_ADMIN_SECRET_ID").unwrap_or_else(|| {
            r.problems.push(
                "DB_SETUP_ADMIN_SECRET_ID is required: the name or ARN of the admin secret".into(),
            );
            String::new()
        });
        let db = DbOverrides {
            host: r.raw("DB_SETUP_DB_HOST"),
            port: r.parsed("DB_SETUP_DB_PORT", None, |v| {
                v.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .map(Some)
                    .ok_or_else(|| format!("`{v}` is not a port number"))
            }),
            dbname: r.raw("DB_SETUP_DB_NAME"),
        };
        let role_prefix = r.parsed("DB_SETUP_ROLE_PREFIX", None, |v| {
            crate::users::check_identifier(v)
                .map(|()| Some(v.to_string()))
                .map_err(|e| e.to_string())
        });
        let users = r.parsed("DB_SETUP_USERS", Vec::new(), parse_users);
        let config = Config {
            admin_secret_id,
            db,
            users,
            role_prefix,
            response_mode: r.parsed("DB_SETUP_RESPONSE_MODE", ResponseMode::Direct, str::parse),
            tls: r.parsed("DB_SETUP_TLS", TlsMode::VerifyFull, str::parse),
            tls_ca_file: r.raw("DB_SETUP_TLS_CA_FILE").map(PathBuf::from),
            transaction_mode: r.parsed(
                "DB_SETUP_TRANSACTION_MODE",
                TransactionMode::Batch,
                str::parse,
            ),
            lock_wait: r.duration("DB_SETUP_LOCK_WAIT", defaults::LOCK_WAIT),
            lock_timeout: r.duration("DB_SETUP_LOCK_TIMEOUT", defaults::LOCK_TIMEOUT),
            lock_retries: r.number("DB_SETUP_LOCK_RETRIES", defaults::LOCK_RETRIES, 0),
            statement_timeout: r
                .duration("DB_SETUP_STATEMENT_TIMEOUT", defaults::STATEMENT_TIMEOUT),
            connect_timeout: r.duration("DB_SETUP_CONNECT_TIMEOUT", defaults::CONNECT_TIMEOUT),
            connect_attempts: r.number("DB_SETUP_CONNECT_ATTEMPTS", defaults::CONNECT_ATTEMPTS, 1),
            deadline_margin: r.duration("DB_SETUP_DEADLINE_MARGIN", defaults::DEADLINE_MARGIN),
            time_budget: r.duration("DB_SETUP_TIME_BUDGET", defaults::TIME_BUDGET),
            json_logs: {
                r.parsed("DB_SETUP_LOG_FORMAT", false, log_format);
                LogSettings::from_env(&env).json
            },
            metrics_namespace: r.parsed(
                "DB_SETUP_METRICS_NAMESPACE",
                defaults::METRICS_NAMESPACE.to_string(),
                metrics_namespace,
            ),
            continuation: r.parsed("DB_SETUP_CONTINUE", false, |v| {
                match v.to_ascii_lowercase().as_str() {
                    "true" => Ok(true),
                    "false" => Ok(false),
                    _ => Err(format!("`{v}` is not true or false")),
                }
            }),
            snapshot_poll: r.duration("DB_SETUP_SNAPSHOT_POLL", defaults::SNAPSHOT_POLL),
            continue_reserve: r.parsed("DB_SETUP_CONTINUE_RESERVE", None, |v| {
                parse_duration(v).map(Some)
            }),
        };
        if config.connect_timeout.is_zero() {
            r.problems
                .push("DB_SETUP_CONNECT_TIMEOUT must be more than 0".into());
        }
        if config.snapshot_poll.is_zero() {
            r.problems
                .push("DB_SETUP_SNAPSHOT_POLL must be more than 0".into());
        }
        if config.time_budget.is_zero() {
            r.problems
                .push("DB_SETUP_TIME_BUDGET must be more than 0".into());
        }
        if r.problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError(r.problems))
        }
    }

    /// `DB_SETUP_ALLOW_LOCAL_RESPONSE_URL`: answer any http(s) ResponseURL,
    /// not only `https` on AWS hosts (the local loop and the tests). Read even
    /// when the rest of the configuration is invalid; anything but `true` is false.
    pub fn allow_local_response_url_from_env(env: impl Fn(&str) -> Option<String>) -> bool {
        env("DB_SETUP_ALLOW_LOCAL_RESPONSE_URL")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
    }

    /// The response mode to use even when the configuration is invalid: the
    /// configured one if it parses, else direct (the default).
    pub fn response_mode_from_env(env: impl Fn(&str) -> Option<String>) -> ResponseMode {
        env("DB_SETUP_RESPONSE_MODE")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(ResponseMode::Direct)
    }
}

/// Reads `DB_SETUP_USERS`: `[{"username": ..., "role": ..., "secretId": ...}]`,
/// with optional `"auth": "iam"` (no `secretId` then) and `"adopt": true`.
pub fn parse_users(text: &str) -> Result<Vec<UserSpec>, String> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        format!(
            "not valid JSON (line {}, column {}): expected a list like [{{\"username\": \"app_rw\", \"role\": \"readwrite\", \"secretId\": \"...\"}}]",
            e.line(),
            e.column()
        )
    })?;
    let items = value.as_array().ok_or("must be a JSON list of users")?;
    let mut users = Vec::new();
    let mut problems = Vec::new();
    for (i, item) in items.iter().enumerate() {
        match parse_user(item) {
            Ok(user) => users.push(user),
            Err(e) => problems.push(format!("user {}{e}", i + 1)),
        }
    }
    for (i, u) in users.iter().enumerate() {
        if users[..i].iter().any(|o| o.username == u.username) {
            problems.push(format!("user {} appears twice", u.username));
        }
        if users.iter().any(|o| o.clone_name() == u.username) {
            problems.push(format!(
                "user {} is the rotation clone of another configured user: choose another name",
                u.username
            ));
        }
    }
    if problems.is_empty() {
        Ok(users)
    } else {
        Err(problems.join(", "))
    }
}

/// One entry of `DB_SETUP_USERS`; the error starts with what follows "user N".
fn parse_user(item: &serde_json::Value) -> Result<UserSpec, String> {
    let field = |name: &str| {
        item.get(name)
            .and_then(|v| v.as_str())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let (Some(username), Some(role)) = (field("username"), field("role")) else {
        return Err(
            " needs string fields username, role and secretId (or \"auth\": \"iam\")".into(),
        );
    };
    crate::users::check_identifier(username).map_err(|e| format!(": {e}"))?;
    let role = role
        .parse::<RoleTemplate>()
        .map_err(|e| format!(" ({username}): {e}"))?;
    let auth = match (field("auth").unwrap_or("password"), field("secretId")) {
        ("password", Some(secret_id)) => Auth::Password {
            secret_id: secret_id.to_string(),
        },
        ("password", None) => {
            return Err(format!(
                " ({username}) needs string fields username, role and secretId (or \"auth\": \"iam\")"
            ));
        }
        ("iam", None) => Auth::Iam,
        ("iam", Some(_)) => {
            return Err(format!(
                " ({username}): an IAM user has no password, so no secretId: remove it, or remove \"auth\": \"iam\""
            ));
        }
        (other, _) => {
            return Err(format!(
                " ({username}): `{other}` is not an auth method: write password or iam"
            ));
        }
    };
    let adopt = match item.get("adopt") {
        None | Some(serde_json::Value::Null) => false,
        Some(serde_json::Value::Bool(b)) => *b,
        Some(_) => return Err(format!(" ({username}): adopt must be true or false")),
    };
    Ok(UserSpec {
        username: username.to_string(),
        role,
        auth,
        adopt,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn defaults_apply_with_only_the_admin_secret() {
        let c = Config::from_env(env(&[("DB_SETUP_ADMIN_SECRET_ID", "admin")])).unwrap();
        assert_eq!(c.admin_secret_id, "admin");
        assert_eq!(c.response_mode, ResponseMode::Direct);
        assert_eq!(c.tls, TlsMode::VerifyFull);
        assert_eq!(c.transaction_mode, TransactionMode::Batch);
        assert_eq!(c.lock_wait, Duration::from_secs(60));
        assert_eq!(c.lock_timeout, Duration::from_secs(5));
        assert_eq!(c.statement_timeout, Duration::from_secs(300));
        assert_eq!(c.deadline_margin, Duration::from_secs(10));
        assert_eq!(c.role_prefix, None);
        assert!(c.users.is_empty());
        assert!(!c.json_logs);
        assert!(!c.continuation);
        assert_eq!(c.continue_reserve, None);
        assert_eq!(c.snapshot_poll, Duration::from_secs(10));
    }

    #[test]
    fn continuation_settings_are_read() {
        let c = Config::from_env(env(&[
            ("DB_SETUP_ADMIN_SECRET_ID", "a"),
            ("DB_SETUP_CONTINUE", "TRUE"),
            ("DB_SETUP_CONTINUE_RESERVE", "240s"),
        ]))
        .unwrap();
        assert!(c.continuation);
        assert_eq!(c.continue_reserve, Some(Duration::from_secs(240)));
        let err = Config::from_env(env(&[
            ("DB_SETUP_ADMIN_SECRET_ID", "a"),
            ("DB_SETUP_CONTINUE", "yes"),
            ("DB_SETUP_CONTINUE_RESERVE", "soon"),
        ]))
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("DB_SETUP_CONTINUE: `yes` is not true or false"),
            "{err}"
        );
        assert!(
            err.contains("DB_SETUP_CONTINUE_RESERVE: `soon` is not a duration"),
            "{err}"
        );
    }

    #[test]
    fn every_problem_is_listed_in_one_error() {
        let err = Config::from_env(env(&[
            ("DB_SETUP_RESPONSE_MODE", "webhook"),
            ("DB_SETUP_TLS", "require"),
            ("DB_SETUP_LOCK_WAIT", "60"),
            ("DB_SETUP_DB_PORT", "99999"),
            (
                "DB_SETUP_USERS",
                "[{\"username\": \"App-User\", \"role\": \"readwrite\", \"secretId\": \"s\"}]",
            ),
        ]))
        .unwrap_err();
        assert_eq!(err.0.len(), 6, "{err}");
        let text = err.to_string();
        for needle in [
            "DB_SETUP_ADMIN_SECRET_ID is required",
            "DB_SETUP_RESPONSE_MODE: `webhook` is not a response mode",
            "DB_SETUP_TLS: `require` is not a TLS mode",
            "DB_SETUP_LOCK_WAIT: `60` is not a duration",
            "DB_SETUP_DB_PORT: `99999` is not a port number",
            "DB_SETUP_USERS: user 1:",
        ] {
            assert!(text.contains(needle), "missing `{needle}` in {text}");
        }
    }

    #[test]
    fn users_are_read_and_checked() {
        let users = parse_users(
            r#"[{"username": "app_rw", "role": "readwrite", "secretId": "arn:aws:secretsmanager:us-east-1:1:secret:rw"},
                {"username": "app_ro", "role": "readonly", "secretId": "ro"}]"#,
        )
        .unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].role, RoleTemplate::ReadOnly);
        assert!(parse_users("{").unwrap_err().contains("not valid JSON"));
        assert!(parse_users("{}").unwrap_err().contains("JSON list"));
        assert!(
            parse_users(r#"[{"username": "x"}]"#)
                .unwrap_err()
                .contains("needs string fields")
        );
        assert!(
            parse_users(r#"[{"username": "x", "role": "admin", "secretId": "s"}]"#)
                .unwrap_err()
                .contains("`admin` is not a role template")
        );
        assert!(parse_users(
            r#"[{"username": "x", "role": "readonly", "secretId": "s"}, {"username": "x", "role": "readonly", "secretId": "t"}]"#
        )
        .unwrap_err()
        .contains("appears twice"));
    }

    #[test]
    fn iam_users_and_adopt_are_read_and_checked() {
        let users = parse_users(
            r#"[{"username": "app_rw", "role": "readwrite", "secretId": "s", "adopt": true},
                {"username": "app_iam", "role": "readonly", "auth": "iam"}]"#,
        )
        .unwrap();
        assert!(users[0].adopt);
        assert_eq!(users[0].secret_id(), Some("s"));
        assert_eq!(users[1].auth, Auth::Iam);
        assert!(!users[1].adopt);
        let err = |text: &str| parse_users(text).unwrap_err();
        assert!(
            err(r#"[{"username": "x", "role": "readonly", "auth": "iam", "secretId": "s"}]"#)
                .contains("an IAM user has no password, so no secretId")
        );
        assert!(
            err(r#"[{"username": "x", "role": "readonly", "auth": "kerberos", "secretId": "s"}]"#)
                .contains("`kerberos` is not an auth method")
        );
        assert!(
            err(r#"[{"username": "x", "role": "readonly", "secretId": "s", "adopt": "yes"}]"#)
                .contains("adopt must be true or false")
        );
        assert!(
            err(r#"[{"username": "x", "role": "readonly", "secretId": "s"}, {"username": "x_clone", "role": "readonly", "secretId": "t"}]"#)
                .contains("x_clone is the rotation clone")
        );
    }

    #[test]
    fn the_admin_target_takes_overrides_then_the_secret_then_defaults() {
        use crate::redacted::SecretString;
        let creds = |host: Option<&str>, port, dbname: Option<&str>| RdsCredentials {
            username: "master".into(),
            password: SecretString::new("pw"),
            host: host.map(str::to_string),
            port,
            dbname: dbname.map(str::to_string),
        };
        let none = DbOverrides::default();
        let t = none
            .resolve(creds(Some("db.x"), Some(6432), Some("app")))
            .unwrap();
        assert_eq!(
            (t.endpoint(), t.user.as_str()),
            ("db.x:6432/app".into(), "master")
        );
        // An RDS-managed master secret: username and password only.
        assert_eq!(none.resolve(creds(None, None, None)).unwrap_err(), NoHost);
        let overrides = DbOverrides {
            host: Some("proxy.y".into()),
            port: None,
            dbname: Some("orders".into()),
        };
        let t = overrides.resolve(creds(None, None, None)).unwrap();
        assert_eq!(t.endpoint(), "proxy.y:5432/orders");
        let t = overrides
            .resolve(creds(Some("db.x"), Some(6432), Some("app")))
            .unwrap();
        assert_eq!(t.endpoint(), "proxy.y:6432/orders");
        let t = DbOverrides {
            host: Some("h".into()),
            ..DbOverrides::default()
        }
        .resolve(creds(None, None, None))
        .unwrap();
        assert_eq!(t.endpoint(), "h:5432/postgres");
    }

    #[test]
    fn logs_follow_lambdas_advanced_logging_controls_with_our_overrides() {
        let logs = |vars: &[(&str, &str)]| LogSettings::from_env(env(vars));
        assert_eq!(
            logs(&[]),
            LogSettings {
                json: false,
                filter: defaults::LOG_FILTER.into()
            }
        );
        assert!(logs(&[("AWS_LAMBDA_FUNCTION_NAME", "f")]).json);
        assert!(
            !logs(&[
                ("AWS_LAMBDA_FUNCTION_NAME", "f"),
                ("AWS_LAMBDA_LOG_FORMAT", "Text")
            ])
            .json
        );
        assert!(logs(&[("AWS_LAMBDA_LOG_FORMAT", "JSON")]).json);
        assert!(
            !logs(&[
                ("AWS_LAMBDA_LOG_FORMAT", "JSON"),
                ("DB_SETUP_LOG_FORMAT", "text")
            ])
            .json
        );
        assert!(
            logs(&[
                ("AWS_LAMBDA_LOG_FORMAT", "Text"),
                ("DB_SETUP_LOG_FORMAT", "JSON")
            ])
            .json
        );
        assert_eq!(
            logs(&[("AWS_LAMBDA_LOG_LEVEL", "DEBUG")]).filter,
            "debug,aws_config=warn,aws_smithy_runtime=warn"
        );
        assert!(
            logs(&[("AWS_LAMBDA_LOG_LEVEL", "FATAL")])
                .filter
                .starts_with("error,")
        );
        assert_eq!(
            logs(&[("AWS_LAMBDA_LOG_LEVEL", "nonsense")]).filter,
            defaults::LOG_FILTER
        );
        assert_eq!(
            logs(&[
                ("AWS_LAMBDA_LOG_LEVEL", "WARN"),
                ("RUST_LOG", "db_setup=trace")
            ])
            .filter,
            "db_setup=trace"
        );
    }

    #[test]
    fn the_metrics_namespace_is_checked() {
        let base = [("DB_SETUP_ADMIN_SECRET_ID", "a")];
        assert_eq!(
            Config::from_env(env(&base)).unwrap().metrics_namespace,
            "DbSetup"
        );
        let ok = Config::from_env(env(&[
            base[0],
            ("DB_SETUP_METRICS_NAMESPACE", "Team/Db-Setup"),
        ]))
        .unwrap();
        assert_eq!(ok.metrics_namespace, "Team/Db-Setup");
        for bad in ["AWS/RDS", "a$b"] {
            let e =
                Config::from_env(env(&[base[0], ("DB_SETUP_METRICS_NAMESPACE", bad)])).unwrap_err();
            assert!(e.to_string().contains("not a CloudWatch namespace"), "{e}");
        }
        let e = Config::from_env(env(&[base[0], ("DB_SETUP_LOG_FORMAT", "yaml")])).unwrap_err();
        assert!(e.to_string().contains("not a log format"), "{e}");
    }

    #[test]
    fn json_logs_default_on_in_lambda() {
        let c = Config::from_env(env(&[
            ("DB_SETUP_ADMIN_SECRET_ID", "a"),
            ("AWS_LAMBDA_FUNCTION_NAME", "f"),
        ]))
        .unwrap();
        assert!(c.json_logs);
    }

    #[test]
    fn local_response_urls_are_allowed_only_when_asked() {
        assert!(!Config::allow_local_response_url_from_env(env(&[])));
        for (v, allowed) in [
            ("true", true),
            (" TRUE ", true),
            ("1", false),
            ("yes", false),
            ("false", false),
        ] {
            assert_eq!(
                Config::allow_local_response_url_from_env(env(&[(
                    "DB_SETUP_ALLOW_LOCAL_RESPONSE_URL",
                    v
                )])),
                allowed,
                "{v}"
            );
        }
    }

    #[test]
    fn response_mode_survives_an_invalid_configuration() {
        assert_eq!(
            Config::response_mode_from_env(env(&[("DB_SETUP_RESPONSE_MODE", "provider")])),
            ResponseMode::Provider
        );
        assert_eq!(
            Config::response_mode_from_env(env(&[("DB_SETUP_RESPONSE_MODE", "nope")])),
            ResponseMode::Direct
        );
    }
}
