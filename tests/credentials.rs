//! The credentials protocol against real Secrets Manager (moto) and
//! PostgreSQL, with a fault injected between each step: the application is
//! never locked out (the database never holds a password that no secret
//! version holds), and a re-run converges.

mod common;

use std::sync::Mutex;

use common::lambda::{create_secret, current_value, secret_name, secrets_client};
use common::{TestDb, plain};
use db_setup::db::{ConnectOptions, Target};
use db_setup::redacted::SecretString;
use db_setup::secrets::{
    SecretInfo, SecretStore, SecretVersion, SecretsError, SecretsManager, UserSecretFields,
};
use db_setup::users::credentials::{self, CredentialAction, LoginCheck, UserDb};
use db_setup::users::database::PgUsers;
use db_setup::users::{RoleTemplate, UserSpec};
use serde_json::json;

/// Fails the named operation once, at its `nth` call (from 1).
struct Fault {
    op: &'static str,
    nth: usize,
    seen: Mutex<usize>,
}

impl Fault {
    fn new(op: &'static str, nth: usize) -> Fault {
        Fault {
            op,
            nth,
            seen: Mutex::new(0),
        }
    }

    fn none() -> Fault {
        Fault::new("", 0)
    }

    fn hit(&self, op: &str) -> bool {
        if op != self.op {
            return false;
        }
        let mut seen = self.seen.lock().unwrap();
        *seen += 1;
        *seen == self.nth
    }
}

struct FaultyStore<'a> {
    inner: &'a SecretsManager,
    fault: &'a Fault,
}

fn injected(id: &str, operation: &'static str) -> SecretsError {
    SecretsError::Service {
        id: id.into(),
        operation,
        message: "injected fault: service unavailable".into(),
    }
}

impl SecretStore for FaultyStore<'_> {
    async fn describe(&self, id: &str) -> Result<SecretInfo, SecretsError> {
        if self.fault.hit("describe") {
            return Err(injected(id, "DescribeSecret"));
        }
        self.inner.describe(id).await
    }

    async fn get(&self, id: &str, stage: &str) -> Result<Option<SecretVersion>, SecretsError> {
        if self.fault.hit("get") {
            return Err(injected(id, "GetSecretValue"));
        }
        self.inner.get(id, stage).await
    }

    async fn put_pending(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> Result<(), SecretsError> {
        if self.fault.hit("put_pending") {
            return Err(injected(id, "PutSecretValue"));
        }
        self.inner.put_pending(id, text, token).await
    }

    async fn put_current(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> Result<(), SecretsError> {
        if self.fault.hit("put_current") {
            return Err(injected(id, "PutSecretValue"));
        }
        self.inner.put_current(id, text, token).await
    }

    async fn promote(
        &self,
        id: &str,
        version: &str,
        from: Option<&str>,
    ) -> Result<(), SecretsError> {
        if self.fault.hit("promote") {
            return Err(injected(id, "UpdateSecretVersionStage"));
        }
        self.inner.promote(id, version, from).await
    }

    async fn unstage_pending(&self, id: &str, version: &str) -> Result<(), SecretsError> {
        self.inner.unstage_pending(id, version).await
    }
}

struct FaultyDb<'a> {
    inner: PgUsers<'a>,
    fault: &'a Fault,
}

impl UserDb for FaultyDb<'_> {
    async fn check_login(&self, user: &str, password: &SecretString) -> Result<LoginCheck, String> {
        if self.fault.hit("can_login") {
            return Err("injected fault: connection reset".into());
        }
        self.inner.check_login(user, password).await
    }

    async fn set_password(&self, user: &str, verifier: &str) -> Result<(), String> {
        if self.fault.hit("set_password") {
            return Err("injected fault: connection lost".into());
        }
        self.inner.set_password(user, verifier).await?;
        if self.fault.hit("revoke_login_after_alter") {
            // Something outside db-setup makes the role refuse logins right
            // after its password changed (a real refusal: SQLSTATE 28000).
            self.inner
                .admin
                .simple_query(&format!("ALTER ROLE {user} NOLOGIN"))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    }

    async fn ensure_clone_membership(&self, user: &str, clone: &str) -> Result<(), String> {
        self.inner.ensure_clone_membership(user, clone).await
    }
}

struct World {
    db: TestDb,
    store: SecretsManager,
    sm: aws_sdk_secretsmanager::Client,
    user: UserSpec,
    fields: UserSecretFields,
}

impl World {
    async fn new(hint: &str, working_password: Option<&str>) -> World {
        let db = TestDb::new(hint).await;
        let sm = secrets_client().await;
        let username = format!(
            "{hint}_{}_{}",
            std::process::id(),
            common::lambda::secret_name("u").rsplit('-').next().unwrap()
        );
        let secret = secret_name(hint);
        let (role, value) = match working_password {
            Some(p) => (
                format!("CREATE ROLE {username} LOGIN PASSWORD '{p}'"),
                json!({"username": username, "password": p}),
            ),
            None => (
                format!("CREATE ROLE {username} LOGIN"),
                json!({"username": username, "password": format!("placeholder-{secret}")}),
            ),
        };
        db.query(&role).await;
        create_secret(&sm, &secret, &value).await;
        let target = db.target();
        World {
            fields: UserSecretFields {
                host: target.host.clone(),
                port: target.port,
                dbname: target.dbname.clone(),
                username: username.clone(),
                masterarn: "arn:aws:secretsmanager:us-east-1:123456789012:secret:admin".into(),
            },
            user: UserSpec::password(&username, RoleTemplate::ReadWrite, &secret),
            db,
            store: SecretsManager::new(sm.clone()),
            sm,
        }
    }

    async fn ensure(&self, fault: &Fault) -> Result<CredentialAction, String> {
        let admin = self.db.connect().await;
        let target = self.db.target();
        let tls = plain();
        let users = FaultyDb {
            inner: PgUsers {
                base: &target,
                tls: &tls,
                options: ConnectOptions {
                    attempts: 1,
                    ..Default::default()
                },
                admin: admin.client(),
            },
            fault,
        };
        let store = FaultyStore {
            inner: &self.store,
            fault,
        };
        credentials::ensure(&store, &users, &self.user, self.secret(), &self.fields)
            .await
            .map(|r| r.action)
            .map_err(|e| e.to_string())
    }

    fn secret(&self) -> &str {
        self.user.secret_id().unwrap()
    }

    async fn logs_in(&self, password: &str) -> bool {
        let target = Target {
            user: self.user.username.clone(),
            password: SecretString::new(password),
            ..self.db.target()
        };
        db_setup::db::connect(
            &target,
            &plain(),
            &ConnectOptions {
                attempts: 1,
                ..Default::default()
            },
        )
        .await
        .is_ok()
    }

    async fn current_password(&self) -> String {
        current_value(&self.sm, self.secret()).await["password"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Every password a version of the secret holds.
    async fn stored_passwords(&self) -> Vec<String> {
        common::lambda::all_passwords(&self.sm, &[self.secret().to_string()]).await
    }

    /// The invariant: if the user can log in at all, a stored version holds that password.
    async fn no_lockout(&self) {
        let stored = self.stored_passwords().await;
        let mut any = false;
        for p in &stored {
            any |= self.logs_in(p).await;
        }
        let current_works = self.logs_in(&self.current_password().await).await;
        // The password set in the database is always one of the stored versions:
        // either current works, or (mid-rotation) the pending one does, or the
        // database still has no password (nothing was set yet).
        assert!(
            current_works || any || !self.db_has_password().await,
            "the database holds a password no secret version holds"
        );
    }

    async fn db_has_password(&self) -> bool {
        self.db
            .query(&format!(
                "SELECT rolpassword IS NOT NULL FROM pg_authid WHERE rolname = '{}'",
                self.user.username
            ))
            .await
            == ["t"]
    }
}

#[tokio::test]
async fn first_deploy_sets_a_password_the_secret_holds() {
    let w = World::new("cred_first", None).await;
    assert_eq!(
        w.ensure(&Fault::none()).await.unwrap(),
        CredentialAction::Rotated
    );
    let s = current_value(&w.sm, w.secret()).await;
    assert!(w.logs_in(s["password"].as_str().unwrap()).await);
    for key in ["engine", "host", "port", "dbname", "username", "masterarn"] {
        assert!(s.get(key).is_some(), "{key}");
    }
    // The verifier, not the password, is what the server stores.
    let stored =
        w.db.query(&format!(
            "SELECT rolpassword FROM pg_authid WHERE rolname = '{}'",
            w.user.username
        ))
        .await;
    assert!(stored[0].starts_with("SCRAM-SHA-256$4096:"));
    // Second run: unchanged.
    assert_eq!(
        w.ensure(&Fault::none()).await.unwrap(),
        CredentialAction::Unchanged
    );
}

#[tokio::test]
async fn a_fault_at_any_step_of_a_first_deploy_never_locks_out_and_a_rerun_converges() {
    // Each step of the protocol, in order, on a user whose secret does not log in yet.
    let steps = [
        ("describe", 1),
        ("get", 1),
        ("can_login", 1),   // checking the current secret
        ("put_pending", 1), // storing the new password
        ("set_password", 1),
        ("can_login", 2), // logging in with the new password
        ("promote", 1),
    ];
    for (op, nth) in steps {
        let w = World::new("cred_fault", None).await;
        let err = w.ensure(&Fault::new(op, nth)).await.unwrap_err();
        assert!(err.contains("injected fault"), "{op}#{nth}: {err}");
        assert!(
            err.starts_with(&format!("user {}:", w.user.username)),
            "{err}"
        );
        w.no_lockout().await;
        let action = w
            .ensure(&Fault::none())
            .await
            .unwrap_or_else(|e| panic!("{op}#{nth}: rerun failed: {e}"));
        // Once the new password is set in the database, the rerun promotes it.
        let set = matches!((op, nth), ("can_login", 2) | ("promote", 1));
        let expected = if set {
            CredentialAction::PromotedPending
        } else {
            CredentialAction::Rotated
        };
        assert_eq!(action, expected, "after a fault in {op}#{nth}");
        assert!(
            w.logs_in(&w.current_password().await).await,
            "{op}#{nth}: the current secret logs in after the rerun"
        );
        assert_eq!(
            w.ensure(&Fault::none()).await.unwrap(),
            CredentialAction::Unchanged,
            "{op}#{nth}"
        );
    }
}

#[tokio::test]
async fn a_working_secret_survives_faults_untouched() {
    for (op, nth) in [
        ("describe", 1),
        ("get", 1),
        ("can_login", 1),
        ("put_current", 1),
    ] {
        let w = World::new("cred_keep", Some("working-password-456")).await;
        let err = w.ensure(&Fault::new(op, nth)).await.unwrap_err();
        assert!(err.contains("injected fault"), "{op}: {err}");
        assert!(
            w.logs_in("working-password-456").await,
            "{op}: the application's password still works"
        );
        assert_eq!(w.current_password().await, "working-password-456");
        // Rerun: kept (the missing RDS fields are added, the password is the same).
        assert_eq!(
            w.ensure(&Fault::none()).await.unwrap(),
            CredentialAction::SecretCompleted,
            "{op}"
        );
        assert_eq!(w.current_password().await, "working-password-456");
    }
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_never_a_reason_to_rotate() {
    let w = World::new("cred_down", Some("working-password-789")).await;
    let admin = w.db.connect().await;
    let mut target = w.db.target();
    // A port nothing listens on: the login check cannot tell if the password works.
    target.port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let tls = plain();
    let users = PgUsers {
        base: &target,
        tls: &tls,
        options: ConnectOptions {
            attempts: 1,
            ..Default::default()
        },
        admin: admin.client(),
    };
    let err = credentials::ensure(&w.store, &users, &w.user, w.secret(), &w.fields)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("checking its current secret") && err.contains("cannot reach PostgreSQL"),
        "{err}"
    );
    assert_eq!(w.current_password().await, "working-password-789");
    assert_eq!(
        w.stored_passwords().await.len(),
        1,
        "no new version was written"
    );
}

/// Turns rotation on in moto the way the API allows without a rotation
/// function (a schedule; moto makes a copy of the secret the new current).
async fn enable_rotation(w: &World) {
    w.sm.rotate_secret()
        .secret_id(w.secret())
        .rotation_rules(
            aws_sdk_secretsmanager::types::RotationRulesType::builder()
                .automatically_after_days(30)
                .build(),
        )
        .rotate_immediately(false)
        .send()
        .await
        .unwrap();
    let d =
        w.sm.describe_secret()
            .secret_id(w.secret())
            .send()
            .await
            .unwrap();
    assert_eq!(d.rotation_enabled(), Some(true), "moto turned rotation on");
}

/// createSecret of a rotation function: a new version labelled AWSPENDING.
async fn put_pending(w: &World, value: serde_json::Value) -> String {
    // A rotation's ClientRequestToken: 32 to 64 characters.
    let token = format!(
        "{:0>40}",
        common::lambda::secret_name("v").replace('/', "-")
    );
    w.sm.put_secret_value()
        .secret_id(w.secret())
        .secret_string(value.to_string())
        .client_request_token(&token)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    token
}

async fn versions(w: &World) -> Vec<(String, Vec<String>)> {
    common::lambda::version_stages(&w.sm, w.secret()).await
}

async fn rolpassword(w: &World) -> String {
    w.db.query(&format!(
        "SELECT coalesce(rolpassword, 'NULL') FROM pg_authid WHERE rolname = '{}'",
        w.user.username
    ))
    .await
    .remove(0)
}

#[tokio::test]
async fn a_rotation_stopped_before_its_last_step_is_finished_when_its_password_works() {
    // A single-user rotation ran createSecret and setSecret (the database has
    // the pending password) and died before finishSecret: AWSCURRENT no
    // longer logs in, AWSPENDING does.
    let w = World::new("cred_rotfinish", Some("before-rotation-111")).await;
    enable_rotation(&w).await;
    put_pending(
        &w,
        json!({"username": w.user.username, "password": "after-rotation-222"}),
    )
    .await;
    w.db.query(&format!(
        "ALTER ROLE {} PASSWORD 'after-rotation-222'",
        w.user.username
    ))
    .await;
    assert!(!w.logs_in(&w.current_password().await).await);
    assert_eq!(
        w.ensure(&Fault::none()).await.unwrap(),
        CredentialAction::PromotedPending,
        "the rotation's own last step, done for it"
    );
    assert_eq!(w.current_password().await, "after-rotation-222");
    assert!(w.logs_in(&w.current_password().await).await);
    assert!(
        versions(&w)
            .await
            .iter()
            .all(|(_, st)| !st.iter().any(|s| s == "AWSPENDING")),
        "no version is left AWSPENDING"
    );
}

#[tokio::test]
async fn a_stuck_rotation_fails_with_what_to_do_and_changes_nothing() {
    // createSecret ran, setSecret failed; meanwhile the password was changed
    // by hand: neither version logs in.
    let w = World::new("cred_rotstuck", Some("before-rotation-333")).await;
    enable_rotation(&w).await;
    put_pending(
        &w,
        json!({"username": format!("{}_clone", w.user.username), "password": "never-set-444"}),
    )
    .await;
    w.db.query(&format!(
        "ALTER ROLE {} PASSWORD 'changed-by-hand-555'",
        w.user.username
    ))
    .await;
    let before = (versions(&w).await, rolpassword(&w).await);
    let err = w.ensure(&Fault::none()).await.unwrap_err();
    assert!(err.contains("is being rotated"), "{err}");
    assert!(
        err.contains("aws secretsmanager rotate-secret --secret-id arn:"),
        "{err}"
    );
    assert!(err.contains("cancel-rotate-secret"), "{err}");
    assert_eq!(
        (versions(&w).await, rolpassword(&w).await),
        before,
        "nothing changed"
    );
}

#[tokio::test]
async fn a_secret_under_rotation_whose_current_version_works_is_left_alone() {
    let w = World::new("cred_rotok", Some("current-works-666")).await;
    enable_rotation(&w).await;
    put_pending(
        &w,
        json!({"username": w.user.username, "password": "in-progress-777"}),
    )
    .await;
    let before = versions(&w).await;
    // The secret lacks the RDS fields, but a rotation is at work on it:
    // nothing is written, not even the same password.
    assert_eq!(
        w.ensure(&Fault::none()).await.unwrap(),
        CredentialAction::Unchanged
    );
    assert_eq!(w.current_password().await, "current-works-666");
    assert!(w.logs_in("current-works-666").await);
    assert_eq!(versions(&w).await, before, "no version written or moved");
}

#[tokio::test]
async fn a_role_without_login_is_not_a_wrong_password() {
    let w = World::new("cred_nologin", Some("works-but-nologin-888")).await;
    w.db.query(&format!("ALTER ROLE {} NOLOGIN", w.user.username))
        .await;
    let before = (versions(&w).await, rolpassword(&w).await);
    let err = w.ensure(&Fault::none()).await.unwrap_err();
    assert!(
        err.contains("for a reason other than the password"),
        "{err}"
    );
    assert!(err.contains("has NOLOGIN"), "{err}");
    assert!(err.contains("Nothing was changed"), "{err}");
    assert_eq!(
        (versions(&w).await, rolpassword(&w).await),
        before,
        "no new password in the database or the secret"
    );
    // Once LOGIN is back, the application's secret works as it did.
    w.db.query(&format!("ALTER ROLE {} LOGIN", w.user.username))
        .await;
    assert!(w.logs_in("works-but-nologin-888").await);
}

#[tokio::test]
async fn a_new_password_refused_after_it_was_set_puts_the_old_one_back() {
    // The secret holds a password the database no longer has (changed by
    // hand), so the protocol sets a new one; right after ALTER ROLE the role
    // refuses logins (a real 28000).
    let w = World::new("cred_restore", Some("the-apps-password-999")).await;
    w.db.query(&format!(
        "ALTER ROLE {} PASSWORD 'changed-by-hand-000'",
        w.user.username
    ))
    .await;
    let err = w
        .ensure(&Fault::new("revoke_login_after_alter", 1))
        .await
        .unwrap_err();
    assert!(
        err.contains("the new password was set but logging in with it failed"),
        "{err}"
    );
    assert!(err.contains("has NOLOGIN"), "{err}");
    assert!(err.contains("the previous password was set back"), "{err}");
    w.db.query(&format!("ALTER ROLE {} LOGIN", w.user.username))
        .await;
    assert_eq!(w.current_password().await, "the-apps-password-999");
    assert!(
        w.logs_in("the-apps-password-999").await,
        "the application's AWSCURRENT logs in after the failed deploy"
    );
    assert!(
        versions(&w)
            .await
            .iter()
            .all(|(_, st)| !st.iter().any(|s| s == "AWSPENDING")),
        "the refused version is not left AWSPENDING (a later RotateSecret would think a rotation is running)"
    );
}
