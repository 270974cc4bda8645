//! The credentials protocol: never lock the application out, never fight
//! Secrets Manager's own rotation.
//!
//! A secret's login is its `username`: the configured user, or the clone
//! AWS's alternating-users rotation function alternates with
//! (`<user>_clone`, a member of `<user>`). Only SQLSTATE 28P01 means "this
//! password is wrong"; any other refusal (pg_hba.conf, NOLOGIN, `rds_iam`)
//! is an error that changes nothing, since a new password cannot help.
//!
//! 1. If the AWSCURRENT secret logs in, change nothing (at most add missing
//!    RDS fields to the secret, same login, same password, and not while a
//!    rotation is in progress). A clone keeps its membership in the user,
//!    as the rotation function grants it.
//! 2. Else, if an AWSPENDING version logs in (a rotation, ours or the
//!    rotation function's, that stopped before its last step), promote it:
//!    that is the rotation's own finishing step.
//! 3. Else, if rotation is enabled and a version is AWSPENDING, stop with a
//!    Reason that says how to finish or cancel that rotation: never race it.
//! 4. Else: store a new password as AWSPENDING, set it in the database (as a
//!    SCRAM verifier), log in with it, promote it to AWSCURRENT. If the new
//!    password is refused after it was set, the previous AWSCURRENT password
//!    is set back and the AWSPENDING label removed before failing.
//!
//! A run that stops after any step converges on the next run: the database
//! never holds a password that is not stored in the secret first.

use std::future::Future;

use serde::Serialize;
use tracing::{info, warn};

use super::UserSpec;
use super::password::{self, RandomError};
use crate::redacted::SecretString;
use crate::secrets::{
    AWSCURRENT, AWSPENDING, SecretFormatError, SecretStore, SecretsError, UserSecretFields,
    parse_object,
};

/// What the database said to a login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginCheck {
    /// Logged in.
    LoggedIn,
    /// SQLSTATE 28P01: the password is wrong (or the role has none).
    WrongPassword,
    /// Refused for another reason (SQLSTATE 28000 and others): the cause,
    /// with what to do. A new password would not help.
    Refused(String),
}

/// The database side of the protocol.
pub trait UserDb: Send + Sync {
    /// Tries to log in as `login` with `password`. An unreachable server is
    /// an error (never a reason to rotate).
    fn check_login(
        &self,
        login: &str,
        password: &SecretString,
    ) -> impl Future<Output = Result<LoginCheck, String>> + Send;
    /// Sets the user's password from a SCRAM-SHA-256 verifier.
    fn set_password(
        &self,
        user: &str,
        verifier: &str,
    ) -> impl Future<Output = Result<(), String>> + Send;
    /// Makes the rotation clone a member of its user, if it is not.
    fn ensure_clone_membership(
        &self,
        user: &str,
        clone: &str,
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
}

/// The outcome for one user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialReport {
    /// The user.
    pub username: String,
    /// The login the current secret names: the user, or its rotation clone.
    pub login: String,
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
    /// The login the current secret names (the user or its rotation clone).
    pub login: Option<String>,
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
    /// A login was refused for a reason other than the password.
    #[error(
        "user {user}: the database refuses the login of {login} with its {stage} secret for a reason other than the password: {cause}. Nothing was changed: a new password would not help"
    )]
    LoginRefused {
        /// The user.
        user: String,
        /// The login tried (the user or its rotation clone).
        login: String,
        /// AWSCURRENT or AWSPENDING.
        stage: &'static str,
        /// Why, and what to do.
        cause: String,
    },
    /// A rotation is in progress and neither of its versions logs in.
    #[error(
        "user {user}: secret {secret} is being rotated (version {version} is AWSPENDING) and neither its AWSCURRENT nor its AWSPENDING version logs in; db-setup does not race the rotation function. \
         Read the rotation function's logs, then retry the rotation (aws secretsmanager rotate-secret --secret-id {secret}) \
         or cancel it (aws secretsmanager cancel-rotate-secret --secret-id {secret}, then aws secretsmanager update-secret-version-stage --secret-id {secret} --version-stage AWSPENDING --remove-from-version-id {version}) and deploy again"
    )]
    RotationStuck {
        /// The user.
        user: String,
        /// The secret's ARN.
        secret: String,
        /// The AWSPENDING version.
        version: String,
    },
    /// The new password was set but does not log in.
    #[error(
        "user {user}: the new password was set but logging in with it failed: {cause}; {}",
        if *.restored { "the previous password was set back, so the application's AWSCURRENT secret works as before. Fix the cause, then deploy again" }
        else { "there was no previous password to set back. Fix the cause, then deploy again" }
    )]
    NewPasswordRefused {
        /// The user.
        user: String,
        /// Why.
        cause: String,
        /// True when the previous AWSCURRENT password was set back.
        restored: bool,
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

/// The login and password a secret's JSON holds, if it parses and names
/// this user or its rotation clone (a secret without `username` is taken
/// as the user's).
pub fn login_of(text: &SecretString, user: &UserSpec) -> Option<(String, SecretString)> {
    let map = parse_object("", text).ok()?;
    let login = match map.get("username").and_then(|v| v.as_str()) {
        None => user.username.clone(),
        Some(u) if user.is_login(u) => u.to_string(),
        Some(_) => return None,
    };
    let password = map.get("password")?.as_str()?;
    (!password.is_empty()).then(|| (login, SecretString::new(password)))
}

/// Runs the protocol for one password user whose credentials live in
/// `secret_id`. `fields` are what the secret must record besides the
/// password (their `username` is the user's).
pub async fn ensure<S: SecretStore, D: UserDb>(
    store: &S,
    db: &D,
    user: &UserSpec,
    secret_id: &str,
    fields: &UserSecretFields,
) -> Result<CredentialReport, CredentialError> {
    let name = user.username.as_str();
    let id = secret_id;
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
    let refused = |login: &str, stage: &'static str, cause: String| CredentialError::LoginRefused {
        user: name.into(),
        login: login.into(),
        stage,
        cause,
    };
    let random = |source| CredentialError::Random {
        user: name.into(),
        source,
    };
    let info = store
        .describe(id)
        .await
        .map_err(secrets("describing its secret"))?;
    let report = |login: &str, action| CredentialReport {
        username: name.into(),
        login: login.into(),
        secret_arn: info.arn.clone(),
        action,
    };
    let current_version = info.version_with(AWSCURRENT);
    let current = match current_version {
        Some(_) => store
            .get(id, AWSCURRENT)
            .await
            .map_err(secrets("reading its current secret"))?,
        None => None,
    };
    let current_login = current.as_ref().and_then(|c| login_of(&c.text, user));

    // 1. The current secret works: keep it.
    if let Some((login, pw)) = &current_login {
        match db
            .check_login(login, pw)
            .await
            .map_err(database("checking its current secret"))?
        {
            LoginCheck::LoggedIn => {
                if login != name {
                    db.ensure_clone_membership(name, login)
                        .await
                        .map_err(database("keeping its rotation clone a member of it"))?;
                }
                let existing = current
                    .as_ref()
                    .and_then(|c| parse_object(id, &c.text).ok());
                let fields = UserSecretFields {
                    username: login.clone(),
                    ..fields.clone()
                };
                let rotating = info.rotation_enabled
                    && info
                        .version_with(AWSPENDING)
                        .is_some_and(|v| Some(v) != current_version);
                if rotating || existing.as_ref().is_some_and(|m| fields.recorded_in(m)) {
                    // A rotation at work: its versions are not ours to touch.
                    info!(user = name, login = %login, rotating, "current secret logs in: unchanged");
                    return Ok(report(login, CredentialAction::Unchanged));
                }
                let token = password::version_token().map_err(random)?;
                store
                    .put_current(id, &fields.to_secret(existing.as_ref(), pw), &token)
                    .await
                    .map_err(secrets("completing its secret"))?;
                info!(user = name, login = %login, "current secret logs in: added the missing RDS fields");
                return Ok(report(login, CredentialAction::SecretCompleted));
            }
            LoginCheck::Refused(cause) => return Err(refused(login, AWSCURRENT, cause)),
            LoginCheck::WrongPassword => {}
        }
    }

    // 2. A rotation stopped before its last step: finish it if its password works.
    let pending_version = info
        .version_with(AWSPENDING)
        .filter(|v| Some(*v) != current_version);
    if let Some(version) = pending_version {
        let pending = store
            .get(id, AWSPENDING)
            .await
            .map_err(secrets("reading its pending secret"))?;
        if let Some((login, pw)) = pending.as_ref().and_then(|p| login_of(&p.text, user)) {
            match db
                .check_login(&login, &pw)
                .await
                .map_err(database("checking its pending secret"))?
            {
                LoginCheck::LoggedIn => {
                    if login != name {
                        db.ensure_clone_membership(name, &login)
                            .await
                            .map_err(database("keeping its rotation clone a member of it"))?;
                    }
                    store
                        .promote(id, version, current_version)
                        .await
                        .map_err(secrets("promoting its pending secret"))?;
                    info!(user = name, login = %login, "pending secret logs in: promoted to current");
                    return Ok(report(&login, CredentialAction::PromotedPending));
                }
                LoginCheck::Refused(cause) => return Err(refused(&login, AWSPENDING, cause)),
                LoginCheck::WrongPassword => {}
            }
        }
        // 3. Someone else's rotation: never race it.
        if info.rotation_enabled {
            return Err(CredentialError::RotationStuck {
                user: name.into(),
                secret: info.arn.clone(),
                version: version.into(),
            });
        }
    }

    // 4. A new password: stored first, then set, then checked, then promoted.
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
    let cause = match db
        .check_login(name, &new_password)
        .await
        .map_err(database("logging in with the new password"))?
    {
        LoginCheck::LoggedIn => None,
        LoginCheck::WrongPassword => Some("the server says the password is wrong".to_string()),
        LoginCheck::Refused(cause) => Some(cause),
    };
    if let Some(cause) = cause {
        // Put the previous password back, so the application keeps working.
        let previous = current_login
            .as_ref()
            .filter(|(login, _)| login == name)
            .map(|(_, pw)| pw);
        let mut restored = false;
        if let Some(pw) = previous {
            match db.set_password(name, &password::scram_verifier(pw)).await {
                Ok(()) => restored = true,
                Err(e) => {
                    warn!(user = name, error = %e, "could not set the previous password back")
                }
            }
        }
        if let Err(e) = store.unstage_pending(id, &token).await {
            warn!(user = name, error = %e, "could not remove AWSPENDING from the refused version");
        }
        return Err(CredentialError::NewPasswordRefused {
            user: name.into(),
            cause,
            restored,
        });
    }
    store
        .promote(id, &token, current_version)
        .await
        .map_err(secrets("promoting the new password to AWSCURRENT"))?;
    info!(user = name, "new password set and stored");
    Ok(report(name, CredentialAction::Rotated))
}

/// The login the configured secret's current version holds, if it logs in:
/// the proof that the configuration already holds a role's credentials
/// (see [`super::ownership`]). Reads only; `Ok(None)` when the secret is
/// missing, a placeholder, or its password is wrong.
pub async fn current_login<S: SecretStore, D: UserDb>(
    store: &S,
    db: &D,
    user: &UserSpec,
    secret_id: &str,
) -> Result<Option<String>, CredentialError> {
    let name = user.username.as_str();
    let current = match store.get(secret_id, AWSCURRENT).await {
        Ok(c) => c,
        Err(SecretsError::NotFound { .. }) => return Ok(None),
        Err(source) => {
            return Err(CredentialError::Secrets {
                user: name.into(),
                step: "reading its current secret",
                source,
            });
        }
    };
    let Some((login, pw)) = current.as_ref().and_then(|c| login_of(&c.text, user)) else {
        return Ok(None);
    };
    match db.check_login(&login, &pw).await {
        Ok(LoginCheck::LoggedIn) => Ok(Some(login)),
        Ok(LoginCheck::WrongPassword) => Ok(None),
        Ok(LoginCheck::Refused(cause)) => Err(CredentialError::LoginRefused {
            user: name.into(),
            login,
            stage: AWSCURRENT,
            cause,
        }),
        Err(message) => Err(CredentialError::Database {
            user: name.into(),
            step: "checking its current secret",
            message,
        }),
    }
}

/// Reads one password user's state without changing anything.
pub async fn status<S: SecretStore, D: UserDb>(
    store: &S,
    db: &D,
    user: &UserSpec,
    secret_id: &str,
) -> CredentialStatus {
    let mut status = CredentialStatus {
        username: user.username.clone(),
        login: None,
        secret: secret_id.into(),
        logs_in: false,
        pending: false,
        rotation_enabled: false,
        problem: None,
    };
    let info = match store.describe(secret_id).await {
        Ok(info) => info,
        Err(e) => {
            status.problem = Some(e.to_string());
            return status;
        }
    };
    status.secret = info.arn.clone();
    status.pending = info.version_with(AWSPENDING).is_some();
    status.rotation_enabled = info.rotation_enabled;
    let current = match store.get(secret_id, AWSCURRENT).await {
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
    let Some((login, pw)) = login_of(&current.text, user) else {
        status.problem = Some(
            "the current secret holds no password for this user or its rotation clone (a placeholder?): deploy (Create/Update) to set one".into(),
        );
        return status;
    };
    status.login = Some(login.clone());
    match db.check_login(&login, &pw).await {
        Ok(LoginCheck::LoggedIn) => status.logs_in = true,
        Ok(LoginCheck::WrongPassword) => {
            status.problem = Some(
                "the database says the current secret's password is wrong: deploy (Create/Update) to set a new one".into(),
            )
        }
        Ok(LoginCheck::Refused(cause)) => {
            status.problem = Some(format!(
                "the database refuses the login for a reason other than the password: {cause}"
            ))
        }
        Err(e) => status.problem = Some(format!("could not check the login: {e}")),
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::users::RoleTemplate;

    #[test]
    fn the_login_is_read_for_the_user_or_its_rotation_clone_only() {
        let s = |t: &str| SecretString::new(t);
        let app = UserSpec::password("app", RoleTemplate::ReadWrite, "s");
        let read = |t: &str| login_of(&s(t), &app).map(|(l, p)| (l, p.expose().to_string()));
        assert_eq!(
            read(r#"{"username":"app","password":"p"}"#),
            Some(("app".into(), "p".into()))
        );
        assert_eq!(
            read(r#"{"username":"app_clone","password":"q"}"#),
            Some(("app_clone".into(), "q".into()))
        );
        assert_eq!(
            read(r#"{"password":"p"}"#),
            Some(("app".into(), "p".into()))
        );
        assert!(read(r#"{"username":"other","password":"p"}"#).is_none());
        assert!(read(r#"{"username":"other_clone","password":"p"}"#).is_none());
        assert!(read(r#"{"password":""}"#).is_none());
        assert!(read("placeholder").is_none());
    }
}
