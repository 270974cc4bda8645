//! Secrets Manager behind a small trait, and the RDS secret JSON.
//!
//! Parsing is done by hand on a `serde_json::Value` so that no error message
//! can quote a secret's content (serde's messages quote the offending value).

use std::collections::HashMap;
use std::future::Future;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use serde_json::{Map, Value};

use crate::redacted::SecretString;

/// The stage of the version applications read.
pub const AWSCURRENT: &str = "AWSCURRENT";
/// The stage of a version being rotated in.
pub const AWSPENDING: &str = "AWSPENDING";

/// One version of a secret.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    /// The secret's ARN.
    pub arn: String,
    /// The version id.
    pub version_id: String,
    /// Its SecretString.
    pub text: SecretString,
}

/// A secret's metadata.
#[derive(Debug, Clone, Default)]
pub struct SecretInfo {
    /// Its ARN.
    pub arn: String,
    /// True when a rotation schedule is on.
    pub rotation_enabled: bool,
    /// Version id → its stages.
    pub versions: HashMap<String, Vec<String>>,
}

impl SecretInfo {
    /// The version that carries `stage`.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.versions
            .iter()
            .find(|(_, stages)| stages.iter().any(|s| s == stage))
            .map(|(v, _)| v.as_str())
    }
}

/// A Secrets Manager failure, naming the secret and the operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretsError {
    /// No such secret.
    #[error(
        "secret {id} was not found ({operation}): check the secret name or ARN in the configuration"
    )]
    NotFound {
        /// The secret id.
        id: String,
        /// The API operation.
        operation: &'static str,
    },
    /// The function's role may not do this.
    #[error(
        "access to secret {id} was denied ({operation}): grant secretsmanager:{operation} on it to the function's role (and kms:Decrypt if a customer key encrypts it)"
    )]
    AccessDenied {
        /// The secret id.
        id: String,
        /// The API operation.
        operation: &'static str,
    },
    /// Anything else: throttling, network, service errors.
    #[error("Secrets Manager {operation} on {id} failed: {message}")]
    Service {
        /// The secret id.
        id: String,
        /// The API operation.
        operation: &'static str,
        /// What the service or the network said (never a secret value).
        message: String,
    },
}

/// The operations the credentials protocol needs.
pub trait SecretStore: Send + Sync {
    /// The secret's ARN, rotation flag and version stages.
    fn describe(&self, id: &str) -> impl Future<Output = Result<SecretInfo, SecretsError>> + Send;
    /// The version at `stage`, or `None` when no version carries it.
    fn get(
        &self,
        id: &str,
        stage: &str,
    ) -> impl Future<Output = Result<Option<SecretVersion>, SecretsError>> + Send;
    /// Stores `text` as a new version labelled AWSPENDING (idempotent for the same token).
    fn put_pending(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> impl Future<Output = Result<(), SecretsError>> + Send;
    /// Stores `text` as the new AWSCURRENT version.
    fn put_current(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> impl Future<Output = Result<(), SecretsError>> + Send;
    /// Moves AWSCURRENT to `version` (from `from`), then clears AWSPENDING from it.
    fn promote(
        &self,
        id: &str,
        version: &str,
        from: Option<&str>,
    ) -> impl Future<Output = Result<(), SecretsError>> + Send;
    /// Removes AWSPENDING from `version` (a refused new password: a version
    /// left AWSPENDING would make a later RotateSecret think a rotation is
    /// still in progress).
    fn unstage_pending(
        &self,
        id: &str,
        version: &str,
    ) -> impl Future<Output = Result<(), SecretsError>> + Send;
}

/// Secrets Manager through the AWS SDK (the client is built once in `main`).
#[derive(Clone)]
pub struct SecretsManager {
    client: aws_sdk_secretsmanager::Client,
    access_denied_retries: u32,
}

impl SecretsManager {
    /// Wraps a client. An AccessDenied is retried twice (IAM changes made in
    /// the same deploy can take seconds to reach the function).
    pub fn new(client: aws_sdk_secretsmanager::Client) -> Self {
        SecretsManager {
            client,
            access_denied_retries: crate::aws::ACCESS_DENIED_RETRIES,
        }
    }

    async fn call<T, E, Fut>(
        &self,
        id: &str,
        operation: &'static str,
        mut f: impl FnMut() -> Fut,
    ) -> Result<T, SecretsError>
    where
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        crate::aws::retry_denied(
            self.access_denied_retries,
            |e: &SecretsError| matches!(e, SecretsError::AccessDenied { .. }),
            id,
            operation,
            || {
                let call = f();
                async move { call.await.map_err(|e| classify(id, operation, e)) }
            },
        )
        .await
    }
}

impl SecretsManager {
    /// PutSecretValue with an idempotency token, labelled `stage` (or AWSCURRENT).
    async fn put(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
        stage: Option<&'static str>,
    ) -> Result<(), SecretsError> {
        self.call(id, "PutSecretValue", || {
            self.client
                .put_secret_value()
                .secret_id(id)
                .secret_string(text.expose())
                .client_request_token(token)
                .set_version_stages(stage.map(|s| vec![s.to_string()]))
                .send()
        })
        .await
        .map(|_| ())
    }
}

fn classify<E>(id: &str, operation: &'static str, e: SdkError<E>) -> SecretsError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match crate::aws::code(&e).as_deref() {
        Some("ResourceNotFoundException") => SecretsError::NotFound {
            id: id.into(),
            operation,
        },
        Some("AccessDeniedException") => SecretsError::AccessDenied {
            id: id.into(),
            operation,
        },
        _ => SecretsError::Service {
            id: id.into(),
            operation,
            message: crate::aws::message(&e),
        },
    }
}

impl SecretStore for SecretsManager {
    async fn describe(&self, id: &str) -> Result<SecretInfo, SecretsError> {
        let out = self
            .call(id, "DescribeSecret", || {
                self.client.describe_secret().secret_id(id).send()
            })
            .await?;
        Ok(SecretInfo {
            arn: out.arn().unwrap_or(id).to_string(),
            rotation_enabled: out.rotation_enabled().unwrap_or(false),
            versions: out.version_ids_to_stages().cloned().unwrap_or_default(),
        })
    }

    async fn get(&self, id: &str, stage: &str) -> Result<Option<SecretVersion>, SecretsError> {
        let result = self
            .call(id, "GetSecretValue", || {
                self.client
                    .get_secret_value()
                    .secret_id(id)
                    .version_stage(stage)
                    .send()
            })
            .await;
        match result {
            Ok(out) => Ok(Some(SecretVersion {
                arn: out.arn().unwrap_or(id).to_string(),
                version_id: out.version_id().unwrap_or_default().to_string(),
                text: SecretString::new(out.secret_string().unwrap_or_default()),
            })),
            // The secret exists (callers describe it first) but no version has this stage.
            Err(SecretsError::NotFound { .. }) if stage != AWSCURRENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_pending(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> Result<(), SecretsError> {
        self.put(id, text, token, Some(AWSPENDING)).await
    }

    async fn put_current(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> Result<(), SecretsError> {
        // Without a stage, Secrets Manager makes the new version AWSCURRENT.
        self.put(id, text, token, None).await
    }

    async fn promote(
        &self,
        id: &str,
        version: &str,
        from: Option<&str>,
    ) -> Result<(), SecretsError> {
        self.call(id, "UpdateSecretVersionStage", || {
            let mut req = self
                .client
                .update_secret_version_stage()
                .secret_id(id)
                .version_stage(AWSCURRENT)
                .move_to_version_id(version);
            if let Some(from) = from.filter(|f| *f != version) {
                req = req.remove_from_version_id(from);
            }
            req.send()
        })
        .await?;
        self.unstage_pending(id, version).await
    }

    async fn unstage_pending(&self, id: &str, version: &str) -> Result<(), SecretsError> {
        self.call(id, "UpdateSecretVersionStage", || {
            self.client
                .update_secret_version_stage()
                .secret_id(id)
                .version_stage(AWSPENDING)
                .remove_from_version_id(version)
                .send()
        })
        .await
        .map(|_| ())
    }
}

/// A secret whose content is not what was expected. Never quotes the content.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecretFormatError {
    /// Not JSON.
    #[error(
        "secret {id} is not JSON (syntax error at line {line}, column {column}): store the RDS secret JSON (username, password, host, port, dbname)"
    )]
    NotJson {
        /// The secret id.
        id: String,
        /// Where the syntax breaks.
        line: usize,
        /// Where the syntax breaks.
        column: usize,
    },
    /// JSON, but not an object.
    #[error(
        "secret {id} is JSON but not an object: store the RDS secret JSON (username, password, host, port, dbname)"
    )]
    NotObject {
        /// The secret id.
        id: String,
    },
    /// A required key is missing, or has the wrong type.
    #[error("secret {id}: `{key}` is missing or not {expected}")]
    Field {
        /// The secret id.
        id: String,
        /// The key.
        key: &'static str,
        /// What it should be.
        expected: &'static str,
    },
}

/// Credentials and endpoint from an RDS secret.
#[derive(Debug, Clone)]
pub struct RdsCredentials {
    /// `username`.
    pub username: String,
    /// `password`.
    pub password: SecretString,
    /// `host`, when present.
    pub host: Option<String>,
    /// `port`, when present (a number or a numeric string).
    pub port: Option<u16>,
    /// `dbname`, when present.
    pub dbname: Option<String>,
}

/// Parses the secret's text as a JSON object.
pub fn parse_object(
    id: &str,
    text: &SecretString,
) -> Result<Map<String, Value>, SecretFormatError> {
    match serde_json::from_str::<Value>(text.expose()) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(SecretFormatError::NotObject { id: id.into() }),
        Err(e) => Err(SecretFormatError::NotJson {
            id: id.into(),
            line: e.line(),
            column: e.column(),
        }),
    }
}

/// Reads the RDS secret JSON: `username` and `password` are required,
/// `host`, `port` and `dbname` optional (an RDS-managed master secret has
/// only the first two).
pub fn parse_rds_secret(
    id: &str,
    text: &SecretString,
) -> Result<RdsCredentials, SecretFormatError> {
    let map = parse_object(id, text)?;
    let string = |key: &'static str| -> Result<Option<String>, SecretFormatError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(SecretFormatError::Field {
                id: id.into(),
                key,
                expected: "a non-empty string",
            }),
        }
    };
    let required = |key: &'static str, value: Option<String>| {
        value.ok_or(SecretFormatError::Field {
            id: id.into(),
            key,
            expected: "a non-empty string",
        })
    };
    let port = match map.get("port") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        Some(_) => None,
    };
    if map.get("port").is_some_and(|v| !v.is_null()) && port.is_none() {
        return Err(SecretFormatError::Field {
            id: id.into(),
            key: "port",
            expected: "a port number",
        });
    }
    Ok(RdsCredentials {
        username: required("username", string("username")?)?,
        password: SecretString::new(required("password", string("password")?)?),
        host: string("host")?,
        port,
        dbname: string("dbname")?,
    })
}

/// What an application user's secret records besides its password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSecretFields {
    /// Database host.
    pub host: String,
    /// Database port.
    pub port: u16,
    /// Database name.
    pub dbname: String,
    /// The user.
    pub username: String,
    /// ARN of the admin secret, for the alternating-users rotation function.
    pub masterarn: String,
}

impl UserSecretFields {
    fn entries(&self) -> [(&'static str, Value); 6] {
        [
            ("engine", Value::from("postgres")),
            ("host", Value::from(self.host.as_str())),
            ("port", Value::from(self.port)),
            ("dbname", Value::from(self.dbname.as_str())),
            ("username", Value::from(self.username.as_str())),
            ("masterarn", Value::from(self.masterarn.as_str())),
        ]
    }

    /// The full RDS secret JSON for this user with `password`, keeping any
    /// other keys the existing secret has (e.g. `dbInstanceIdentifier`).
    pub fn to_secret(
        &self,
        existing: Option<&Map<String, Value>>,
        password: &SecretString,
    ) -> SecretString {
        let mut map = existing.cloned().unwrap_or_default();
        for (k, v) in self.entries() {
            map.insert(k.into(), v);
        }
        map.insert("password".into(), Value::from(password.expose()));
        SecretString::new(Value::Object(map).to_string())
    }

    /// True when `existing` already records all of these fields.
    pub fn recorded_in(&self, existing: &Map<String, Value>) -> bool {
        self.entries()
            .iter()
            .all(|(k, v)| match (existing.get(*k), v) {
                // The port may be stored as a string by other tools.
                (Some(Value::String(s)), Value::Number(n)) => s.trim() == n.to_string(),
                (Some(found), _) => found == v,
                (None, _) => false,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> SecretString {
        SecretString::new(text)
    }

    #[test]
    fn reads_a_full_rds_secret_and_a_managed_master_secret() {
        let full = parse_rds_secret(
            "admin",
            &s(r#"{"engine":"postgres","host":"db.x","port":5432,"dbname":"app","username":"master","password":"pw1"}"#),
        )
        .unwrap();
        assert_eq!(
            (full.host.as_deref(), full.port, full.dbname.as_deref()),
            (Some("db.x"), Some(5432), Some("app"))
        );
        assert_eq!(full.password.expose(), "pw1");
        let managed =
            parse_rds_secret("admin", &s(r#"{"username":"master","password":"pw2"}"#)).unwrap();
        assert_eq!((managed.host, managed.port), (None, None));
        let string_port = parse_rds_secret(
            "admin",
            &s(r#"{"username":"u","password":"p","port":"6432"}"#),
        )
        .unwrap();
        assert_eq!(string_port.port, Some(6432));
    }

    #[test]
    fn errors_name_the_secret_and_the_key_but_never_the_content() {
        let cases = [
            (
                r#"{"username": "u", "password": "hunter2-secret""#,
                "is not JSON",
            ),
            (r#""hunter2-secret""#, "not an object"),
            (r#"{"username": "u"}"#, "`password` is missing"),
            (
                r#"{"username": "u", "password": 12345678}"#,
                "`password` is missing or not a non-empty string",
            ),
            (
                r#"{"username": "u", "password": "hunter2-secret", "port": "hunter2-port"}"#,
                "`port` is missing or not a port number",
            ),
        ];
        for (text, expected) in cases {
            let err = parse_rds_secret("arn:admin", &s(text))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(err.starts_with("secret arn:admin"), "{err}");
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "leaked: {err}"
            );
        }
    }

    #[test]
    fn user_secret_has_the_full_rds_shape_and_keeps_other_keys() {
        let fields = UserSecretFields {
            host: "db.x".into(),
            port: 5432,
            dbname: "app".into(),
            username: "app_rw".into(),
            masterarn: "arn:admin".into(),
        };
        let existing = parse_object(
            "u",
            &s(r#"{"username":"app_rw","password":"old","dbInstanceIdentifier":"db1"}"#),
        )
        .unwrap();
        let text = fields.to_secret(Some(&existing), &s("new-pw"));
        let map = parse_object("u", &text).unwrap();
        for key in [
            "engine",
            "host",
            "port",
            "dbname",
            "username",
            "password",
            "masterarn",
            "dbInstanceIdentifier",
        ] {
            assert!(map.contains_key(key), "{key}");
        }
        assert_eq!(map["password"], "new-pw");
        assert_eq!(map["port"], 5432);
        assert!(fields.recorded_in(&map));
        assert!(!fields.recorded_in(&existing));
    }

    #[test]
    fn version_lookup_by_stage() {
        let info = SecretInfo {
            arn: "a".into(),
            rotation_enabled: false,
            versions: HashMap::from([
                ("v1".to_string(), vec!["AWSPREVIOUS".to_string()]),
                ("v2".to_string(), vec![AWSCURRENT.to_string()]),
            ]),
        };
        assert_eq!(info.version_with(AWSCURRENT), Some("v2"));
        assert_eq!(info.version_with(AWSPENDING), None);
    }
}
