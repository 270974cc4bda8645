//! The credentials protocol: never lock the application out.
//!
//! 1. If the user's AWSCURRENT secret already logs in, change nothing (at
//!    most add missing RDS fields to the secret, with the same password).
//! 2. Else, if an AWSPENDING version logs in (a previous run set it in the
//!    database and stopped before promoting), promote it.
//! 3. Else: store a new password as AWSPENDING, set it in the database (as a
//!    SCRAM verifier), log in with it, promote it to AWSCURRENT.
//!
//! A run that stops after any step converges on the next run: the database
//! never holds a password that is not stored in the secret first. A secret
//! with rotation enabled and a pending version is left to its rotation.

use std::future::Future;

use serde::Serialize;
use tracing::info;

use super::UserSpec;
use super::password::{self, RandomError};
use crate::secret::SecretString;
use crate::secrets::{
    AWSCURRENT, AWSPENDING, SecretFormatError, SecretStore, SecretsError, UserSecretFields,
    parse_object,
};

/// The database side of the protocol.
pub trait UserDb: Send + Sync {
    /// Whether `user` logs in with `password`: `Ok(false)` only when the
    /// server refuses the credentials; an unreachable server is an error
    /// (never a reason to rotate).
    fn can_login(
        &self,
        user: &str,
        password: &SecretString,
    ) -> impl Future<Output = Result<bool, String>> + Send;
    /// Sets the user's password from a SCRAM-SHA-256 verifier.
    fn set_password(
        &self,
        user: &str,
        verifier: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
}

/// What the protocol did for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CredentialAction {
    /// The current secret logs in; nothing changed.
    Unchanged,
    /// The current secret logs in; missing RDS fields were added (same password).
    SecretCompleted,
    /// A pending version that logs in was promoted to current.
    PromotedPending,
    /// A new password was set and stored.
    Rotated,
    /// Rotation is enabled and in progress on the secret: left alone.
    LeftToRotation,
}

/// The outcome for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialReport {
    /// The user.
    pub username: String,
    /// Its secret's ARN.
    pub secret_arn: String,
    /// What was done.
    pub action: CredentialAction,
}

/// The status of one user's secret (the `users` troubleshooting action).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialStatus {
    /// The user.
    pub username: String,
    /// Its secret's ARN (or the configured id if it cannot be described).
    pub secret: String,
    /// True when the AWSCURRENT secret logs in.
    pub logs_in: bool,
    /// True when a version is AWSPENDING.
    pub pending: bool,
    /// True when rotation is enabled on the secret.
    pub rotation_enabled: bool,
    /// Why it does not log in, or what is wrong, with what to do.
    pub problem: Option<String>,
}

/// A step of the protocol that failed, naming the user and the step.
#[derive(Debug, thiserror::Error)]
pub enum CredentialError {
    /// A Secrets Manager call failed.
    #[error("user {user}: {step}: {source}")]
    Secrets {
        /// The user.
        user: String,
        /// The step.
        step: &'static str,
        /// The error.
        source: SecretsError,
    },
    /// The secret's content is not usable JSON (and was not overwritten).
    #[error(
        "user {user}: {source}; fix or delete its content, it is not overwritten automatically"
    )]
    Format {
        /// The user.
        user: String,
        /// The error.
        source: SecretFormatError,
    },
    /// A database step failed.
    #[error("user {user}: {step}: {message}")]
    Database {
        /// The user.
        user: String,
        /// The step.
        step: &'static str,
        /// What the database said.
        message: String,
    },
    /// The new password was set but does not log in.
    #[error(
        "user {user}: the new password was set but logging in with it failed; check pg_hba.conf and the role's LOGIN attribute, then deploy again"
    )]
    NewPasswordRefused {
        /// The user.
        user: String,
    },
    /// No randomness.
    #[error("user {user}: {source}")]
    Random {
        /// The user.
        user: String,
        /// The error.
        source: RandomError,
    },
}

/// The password in a secret's JSON, if it parses and names this user.
fn password_of(text: &SecretString, username: &str) -> Option<SecretString> {
    let map = parse_object("", text).ok()?;
    let user_matches = map
        .get("username")
        .and_then(|v| v.as_str())
        .is_none_or(|u| u == username);
    let password = map.get("password")?.as_str()?;
    (user_matches && !password.is_empty()).then(|| SecretString::new(password))
}

/// Runs the protocol for one user. `fields` are what the secret must record
/// besides the password.
pub async fn ensure<S: SecretStore, D: UserDb>(
    store: &S,
    db: &D,
    user: &UserSpec,
    fields: &UserSecretFields,
) -> Result<CredentialReport, CredentialError> {
    let name = user.username.as_str();
    let id = user.secret_id.as_str();
    let secrets = |step: &'static str| {
        move |source| CredentialError::Secrets {
            user: name.into(),
            step,
            source,
        }
    };
    let database = |step: &'static str| {
        move |message| CredentialError::Database {
            user: name.into(),
            step,
            message,
        }
    };
    let info = store
        .describe(id)
        .await
        .map_err(secrets("describing its secret"))?;
    let report = |action| CredentialReport {
        username: name.into(),
        secret_arn: info.arn.clone(),
        action,
    };
    let current = match info.version_with(AWSCURRENT) {
        Some(_) => store
            .get(id, AWSCURRENT)
            .await
            .map_err(secrets("reading its current secret"))?,
        None => None,
    };

    // 1. The current secret works: keep it.
    if let Some(current) = &current {
        if let Some(pw) = password_of(&current.text, name) {
            if db
                .can_login(name, &pw)
                .await
                .map_err(database("checking its current secret"))?
            {
                let existing = parse_object(id, &current.text).ok();
                if existing.as_ref().is_some_and(|m| fields.recorded_in(m)) {
                    info!(user = name, "current secret logs in: unchanged");
                    return Ok(report(CredentialAction::Unchanged));
                }
                let token =
                    password::version_token().map_err(|source| CredentialError::Random {
                        user: name.into(),
                        source,
                    })?;
                store
                    .put_current(id, &fields.to_secret(existing.as_ref(), &pw), &token)
                    .await
                    .map_err(secrets("completing its secret"))?;
                info!(
                    user = name,
                    "current secret logs in: added the missing RDS fields"
                );
                return Ok(report(CredentialAction::SecretCompleted));
            }
        }
    }

    // A rotation function is at work on this secret: do not race it.
    let pending_version = info.version_with(AWSPENDING);
    let current_version = info.version_with(AWSCURRENT);
    if info.rotation_enabled && pending_version.is_some() && pending_version != current_version {
        info!(
            user = name,
            "rotation in progress on its secret: left alone"
        );
        return Ok(report(CredentialAction::LeftToRotation));
    }

    // 2. A previous run set a pending password in the database: promote it.
    if let Some(version) = pending_version {
        if let Some(pending) = store
            .get(id, AWSPENDING)
            .await
            .map_err(secrets("reading its pending secret"))?
        {
            if let Some(pw) = password_of(&pending.text, name) {
                if db
                    .can_login(name, &pw)
                    .await
                    .map_err(database("checking its pending secret"))?
                {
                    store
                        .promote(id, version, current_version)
                        .await
                        .map_err(secrets("promoting its pending secret"))?;
                    info!(user = name, "pending secret logs in: promoted to current");
                    return Ok(report(CredentialAction::PromotedPending));
                }
            }
        }
    }

    // 3. A new password: stored first, then set, then checked, then promoted.
    let random = |source| CredentialError::Random {
        user: name.into(),
        source,
    };
    let new_password = password::generate().map_err(random)?;
    let token = password::version_token().map_err(random)?;
    let existing = current
        .as_ref()
        .and_then(|c| parse_object(id, &c.text).ok());
    store
        .put_pending(
            id,
            &fields.to_secret(existing.as_ref(), &new_password),
            &token,
        )
        .await
        .map_err(secrets("storing the new password as AWSPENDING"))?;
    db.set_password(name, &password::scram_verifier(&new_password))
        .await
        .map_err(database("setting the new password"))?;
    if !db
        .can_login(name, &new_password)
        .await
        .map_err(database("logging in with the new password"))?
    {
        return Err(CredentialError::NewPasswordRefused { user: name.into() });
    }
    store
        .promote(id, &token, current_version)
        .await
        .map_err(secrets("promoting the new password to AWSCURRENT"))?;
    info!(user = name, "new password set and stored");
    Ok(report(CredentialAction::Rotated))
}

/// Reads one user's state without changing anything.
pub async fn status<S: SecretStore, D: UserDb>(
    store: &S,
    db: &D,
    user: &UserSpec,
) -> CredentialStatus {
    let mut status = CredentialStatus {
        username: user.username.clone(),
        secret: user.secret_id.clone(),
        logs_in: false,
        pending: false,
        rotation_enabled: false,
        problem: None,
    };
    let info = match store.describe(&user.secret_id).await {
        Ok(info) => info,
        Err(e) => {
            status.problem = Some(e.to_string());
            return status;
        }
    };
    status.secret = info.arn.clone();
    status.pending = info.version_with(AWSPENDING).is_some();
    status.rotation_enabled = info.rotation_enabled;
    let current = match store.get(&user.secret_id, AWSCURRENT).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            status.problem =
                Some("the secret has no current value: deploy (Create/Update) to set one".into());
            return status;
        }
        Err(e) => {
            status.problem = Some(e.to_string());
            return status;
        }
    };
    let Some(pw) = password_of(&current.text, &user.username) else {
        status.problem = Some(
            "the current secret holds no password for this user (a placeholder?): deploy (Create/Update) to set one".into(),
        );
        return status;
    };
    match db.can_login(&user.username, &pw).await {
        Ok(true) => status.logs_in = true,
        Ok(false) => {
            status.problem = Some(
                "the database refuses the current secret's password: deploy (Create/Update) to set a new one".into(),
            )
        }
        Err(e) => status.problem = Some(format!("could not check the login: {e}")),
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_is_read_only_for_the_same_user() {
        let s = |t: &str| SecretString::new(t);
        assert_eq!(
            password_of(&s(r#"{"username":"app","password":"p"}"#), "app")
                .map(|p| p.expose().to_string()),
            Some("p".into())
        );
        assert!(password_of(&s(r#"{"username":"other","password":"p"}"#), "app").is_none());
        assert!(password_of(&s(r#"{"password":""}"#), "app").is_none());
        assert!(password_of(&s("placeholder"), "app").is_none());
        assert!(password_of(&s(r#"{"password":"p"}"#), "app").is_some());
    }
}
