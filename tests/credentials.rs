//! The credentials protocol against real Secrets Manager (moto) and
//! PostgreSQL, with a fault injected between each step: the application is
//! never locked out (the database never holds a password that no secret
//! version holds), and a re-run converges.

mod common;

use std::sync::Mutex;

use common::lambda::{create_secret, current_value, secret_name, secrets_client};
use common::{TestDb, plain};
use db_setup::db::{ConnectOptions, Target};
use db_setup::secret::SecretString;
use db_setup::secrets::{
    SecretInfo, SecretStore, SecretVersion, SecretsError, SecretsManager, UserSecretFields,
};
use db_setup::users::credentials::{self, CredentialAction, UserDb};
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
}

struct FaultyDb<'a> {
    inner: PgUsers<'a>,
    fault: &'a Fault,
}

impl UserDb for FaultyDb<'_> {
    async fn can_login(&self, user: &str, password: &SecretString) -> Result<bool, String> {
        if self.fault.hit("can_login") {
            return Err("injected fault: connection reset".into());
        }
        self.inner.can_login(user, password).await
    }

    async fn set_password(&self, user: &str, verifier: &str) -> Result<(), String> {
        if self.fault.hit("set_password") {
            return Err("injected fault: connection lost".into());
        }
        self.inner.set_password(user, verifier).await
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
            user: UserSpec {
                username,
                role: RoleTemplate::ReadWrite,
                secret_id: secret,
            },
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
        credentials::ensure(&store, &users, &self.user, &self.fields)
            .await
            .map(|r| r.action)
            .map_err(|e| e.to_string())
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
        current_value(&self.sm, &self.user.secret_id).await["password"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// Every password a version of the secret holds.
    async fn stored_passwords(&self) -> Vec<String> {
        common::lambda::all_passwords(&self.sm, std::slice::from_ref(&self.user.secret_id)).await
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
    let s = current_value(&w.sm, &w.user.secret_id).await;
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
    let err = credentials::ensure(&w.store, &users, &w.user, &w.fields)
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

/// Reports rotation as enabled (moto enables it only for an existing Lambda
/// function); everything else is the real secret in moto.
struct RotationOn<'a>(&'a SecretsManager);

impl SecretStore for RotationOn<'_> {
    async fn describe(&self, id: &str) -> Result<SecretInfo, SecretsError> {
        let mut info = self.0.describe(id).await?;
        info.rotation_enabled = true;
        Ok(info)
    }
    async fn get(&self, id: &str, stage: &str) -> Result<Option<SecretVersion>, SecretsError> {
        self.0.get(id, stage).await
    }
    async fn put_pending(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> Result<(), SecretsError> {
        self.0.put_pending(id, text, token).await
    }
    async fn put_current(
        &self,
        id: &str,
        text: &SecretString,
        token: &str,
    ) -> Result<(), SecretsError> {
        self.0.put_current(id, text, token).await
    }
    async fn promote(
        &self,
        id: &str,
        version: &str,
        from: Option<&str>,
    ) -> Result<(), SecretsError> {
        self.0.promote(id, version, from).await
    }
}

#[tokio::test]
async fn a_secret_under_rotation_is_left_to_it() {
    let w = World::new("cred_rot", None).await;
    // A rotation function at work: a pending version it created.
    w.sm.put_secret_value()
        .secret_id(&w.user.secret_id)
        .secret_string(
            json!({"username": w.user.username, "password": "being-rotated-000"}).to_string(),
        )
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    let admin = w.db.connect().await;
    let target = w.db.target();
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
    let report = credentials::ensure(&RotationOn(&w.store), &users, &w.user, &w.fields)
        .await
        .unwrap();
    assert_eq!(report.action, CredentialAction::LeftToRotation);
    assert_eq!(w.stored_passwords().await.len(), 2, "nothing was written");
    assert!(!w.db_has_password().await, "the database was not touched");
    // Without rotation the same state is ours to finish: a new password.
    assert_eq!(
        w.ensure(&Fault::none()).await.unwrap(),
        CredentialAction::Rotated
    );
}
