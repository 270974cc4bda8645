//! The users step on a real AWS estate, through the function (the real
//! binary, moto, PostgreSQL 16): Secrets Manager's own alternating-users
//! rotation, logins refused for reasons other than the password, several
//! databases on one instance, IAM users, and what a managed role can create.
//! Every test ends with the secret scan.

mod common;

use common::lambda::{Deployment, Put, StackSpec, create_secret, current_value, secret_name};
use db_setup::migrate::MigrationSet;
use serde_json::{Value, json};

fn props() -> Value {
    json!({"ServiceToken": "arn:aws:lambda:us-east-1:123456789012:function:db-setup",
           "MigrationsHash": MigrationSet::embedded().unwrap().hash()})
}

fn reason(put: &Put) -> String {
    put.body["Reason"].as_str().unwrap_or("").to_string()
}

/// A deployment whose `DB_SETUP_USERS` is `users` as given (secrets created
/// by the caller), with the default, per-database group prefix.
async fn deployment(hint: &str, users: Value, env: Vec<(&'static str, String)>) -> Deployment {
    let mut all = vec![
        ("DB_SETUP_USERS", users.to_string()),
        // Unset: the prefix is derived from the database name.
        ("DB_SETUP_ROLE_PREFIX", String::new()),
    ];
    all.extend(env);
    Deployment::new(StackSpec {
        env: all,
        ..StackSpec::new(hint)
    })
    .await
}

/// A user name unique to this test run.
fn unique(hint: &str) -> String {
    format!(
        "{hint}_{}_{}",
        std::process::id(),
        secret_name("n").rsplit('-').next().unwrap()
    )
}

/// Creates the secret `secret` of `user`: with `password`, or with a
/// placeholder the database does not know, as the CDK stack creates it.
async fn user_secret(d: &Deployment, secret: &str, user: &str, password: Option<&str>) {
    let password = password.map_or_else(|| format!("placeholder-{secret}"), str::to_string);
    create_secret(
        &d.sm,
        secret,
        &json!({"username": user, "password": password}),
    )
    .await;
}

/// A placeholder secret, as the CDK stack creates it.
async fn placeholder(d: &Deployment, user: &str) -> String {
    let secret = secret_name(user);
    user_secret(d, &secret, user, None).await;
    secret
}

/// A role made by hand (by a DBA, another tool) with `attributes` and
/// `password`, and a placeholder secret for it: (the seed stack, its name,
/// the secret).
async fn hand_made(hint: &str, attributes: &str, password: &str) -> (Deployment, String, String) {
    let seed = Deployment::new(StackSpec::new(hint)).await;
    let user = unique(hint);
    seed.db
        .query(&format!(
            "CREATE ROLE {user} LOGIN {attributes} PASSWORD '{password}'"
        ))
        .await;
    let secret = placeholder(&seed, &user).await;
    (seed, user, secret)
}

async fn rolpassword(d: &Deployment, role: &str) -> String {
    d.db.query(&format!(
        "SELECT coalesce(rolpassword, 'NULL') FROM pg_authid WHERE rolname = '{role}'"
    ))
    .await
    .remove(0)
}

async fn comment(d: &Deployment, role: &str) -> String {
    d.db.query(&format!(
        "SELECT coalesce(shobj_description(oid, 'pg_authid'), 'NULL') FROM pg_roles WHERE rolname = '{role}'"
    ))
    .await
    .remove(0)
}

/// Runs `sql` as `user` on `dbname`: Ok(first column) or the server's message.
async fn as_user(
    d: &Deployment,
    dbname: &str,
    user: &str,
    password: &str,
    sql: &str,
) -> Result<Vec<String>, String> {
    let target = db_setup::db::Target {
        user: user.into(),
        password: db_setup::redacted::SecretString::new(password),
        dbname: dbname.into(),
        ..d.db.target()
    };
    let c = db_setup::db::connect(
        &target,
        &common::plain(),
        &db_setup::db::ConnectOptions {
            attempts: 1,
            ..Default::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    c.client()
        .simple_query(sql)
        .await
        .map(|m| common::column(&m))
        .map_err(|e| common::db_message(&e))
}

async fn versions(d: &Deployment, secret: &str) -> Vec<(String, Vec<String>)> {
    common::lambda::version_stages(&d.sm, secret).await
}

/// What AWS's alternating-users rotation function does, step by step,
/// against the same servers: createSecret, setSecret (as the master user),
/// testSecret, finishSecret. Returns the new password.
async fn alternating_rotation(d: &Deployment, secret: &str, user: &str) -> String {
    let current = current_value(&d.sm, secret).await;
    let current_user = current["username"].as_str().unwrap().to_string();
    let pending_user = match current_user.strip_suffix("_clone") {
        Some(base) => base.to_string(),
        None => format!("{current_user}_clone"),
    };
    let password = format!("rotated{}", secret_name("pw").replace(['/', '-'], "x"));
    let token = format!("{:0>40}", secret_name("tok").replace(['/', '-'], "0"));
    // createSecret
    let mut pending = current.clone();
    pending["username"] = json!(pending_user);
    pending["password"] = json!(password);
    d.sm.put_secret_value()
        .secret_id(secret)
        .secret_string(pending.to_string())
        .client_request_token(&token)
        .version_stages("AWSPENDING")
        .send()
        .await
        .unwrap();
    // setSecret: the current secret must log in (the confused-deputy guard),
    // then as master: create the clone as a member of the user, or set the
    // alternate's password.
    assert!(
        d.logs_in(&current_user, current["password"].as_str().unwrap())
            .await,
        "setSecret refuses to rotate a secret whose current version does not log in"
    );
    assert_eq!(current["masterarn"], json!(d.admin_arn), "{current}");
    let exists =
        d.db.query(&format!(
            "SELECT count(*) FROM pg_roles WHERE rolname = '{pending_user}'"
        ))
        .await
            == ["1"];
    if exists {
        d.db.query(&format!(
            "ALTER USER {pending_user} WITH PASSWORD '{password}'"
        ))
        .await;
    } else {
        d.db.query(&format!(
            "CREATE ROLE {pending_user} WITH LOGIN PASSWORD '{password}'; GRANT {user} TO {pending_user}"
        ))
        .await;
    }
    // testSecret
    assert!(d.logs_in(&pending_user, &password).await);
    // finishSecret
    let current_version = versions(d, secret)
        .await
        .into_iter()
        .find(|(_, s)| s.iter().any(|x| x == "AWSCURRENT"))
        .map(|(v, _)| v)
        .unwrap();
    d.sm.update_secret_version_stage()
        .secret_id(secret)
        .version_stage("AWSCURRENT")
        .move_to_version_id(&token)
        .remove_from_version_id(current_version)
        .send()
        .await
        .unwrap();
    password
}

#[tokio::test]
async fn the_alternating_users_rotation_is_never_fought() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        ..StackSpec::new("altrot")
    })
    .await;
    let (user, secret) = d.users[0].clone();
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);

    // The hosted rotation takes over: AWSCURRENT now names <user>_clone.
    let password = alternating_rotation(&d, &secret, &user).await;
    let clone = format!("{user}_clone");
    assert_eq!(
        current_value(&d.sm, &secret).await["username"],
        json!(clone)
    );

    // The next deploy finds a current secret that logs in: nothing rotates.
    let (_, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["UsersRotated"], "0", "{}", put.body);
    let s = current_value(&d.sm, &secret).await;
    assert_eq!(
        (s["username"].as_str(), s["password"].as_str()),
        (Some(clone.as_str()), Some(password.as_str()))
    );
    // The clone works with the privileges of the user's group role.
    let rows = as_user(
        &d,
        &d.db.name,
        &clone,
        &password,
        "SELECT count(*) FROM tenants",
    )
    .await;
    assert!(rows.is_ok(), "{rows:?}");

    // The clone keeps its membership even if something removed it: the
    // function grants it back as the rotation function would.
    d.db.query(&format!("REVOKE {user} FROM {clone}")).await;
    let (_, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Data"]["UsersRotated"], "0", "{}", put.body);
    let rows = as_user(
        &d,
        &d.db.name,
        &clone,
        &password,
        "SELECT count(*) FROM tenants",
    )
    .await;
    assert!(rows.is_ok(), "the clone got its membership back: {rows:?}");

    // The next rotation swaps back to <user>; still no fight.
    let back = alternating_rotation(&d, &secret, &user).await;
    let (_, put) = d.request("Update", props()).await;
    assert_eq!(put.body["Data"]["UsersRotated"], "0", "{}", put.body);
    let s = current_value(&d.sm, &secret).await;
    assert_eq!(
        (s["username"].as_str(), s["password"].as_str()),
        (Some(user.as_str()), Some(back.as_str()))
    );
    assert!(d.logs_in(&user, &back).await);
    d.scan().await;
}

#[tokio::test]
async fn a_login_refused_by_pg_hba_changes_nothing_and_says_why() {
    // The harness refuses TCP logins of roles named *_hbareject (pg_hba.conf
    // reject rule): the application logs in from elsewhere, the function
    // cannot. A new password would not help, and must not be set.
    let seed = Deployment::new(StackSpec::new("hba_seed")).await;
    let user = format!("{}_hbareject", unique("u"));
    seed.db
        .query(&format!(
            "CREATE ROLE {user} LOGIN PASSWORD 'the-apps-password-1'"
        ))
        .await;
    let secret = secret_name("hba");
    user_secret(&seed, &secret, &user, Some("the-apps-password-1")).await;
    let d = deployment(
        "hba",
        json!([{"username": user, "role": "readwrite", "secretId": secret, "adopt": true}]),
        vec![],
    )
    .await;
    let before = (rolpassword(&d, &user).await, versions(&d, &secret).await);
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let r = reason(&put);
    assert!(r.contains("for a reason other than the password"), "{r}");
    assert!(r.contains("pg_hba.conf rejects connection"), "{r}");
    assert!(r.contains("Nothing was changed"), "{r}");
    assert_eq!(
        (rolpassword(&d, &user).await, versions(&d, &secret).await),
        before,
        "the database still has the application's password, the secret is untouched"
    );
    let mut d = d;
    d.users.push((user, secret));
    d.scan().await;
}

#[tokio::test]
async fn two_databases_on_one_instance_never_share_roles() {
    let a = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        env: vec![("DB_SETUP_ROLE_PREFIX", String::new())],
        ..StackSpec::new("share_a")
    })
    .await;
    let b = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        env: vec![("DB_SETUP_ROLE_PREFIX", String::new())],
        ..StackSpec::new("share_b")
    })
    .await;
    for d in [&a, &b] {
        let (_, put) = d.request("Create", props()).await;
        assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
        // The group is per database and carries its mark.
        let group = format!("{}_readwrite", d.db.name);
        assert_eq!(
            comment(d, &group).await,
            format!(r#"db-setup {{"database":"{}","kind":"group"}}"#, d.db.name)
        );
        let (user, secret) = &d.users[0];
        let arn =
            d.sm.describe_secret()
                .secret_id(secret)
                .send()
                .await
                .unwrap()
                .arn()
                .unwrap()
                .to_string();
        assert_eq!(
            comment(d, user).await,
            format!(
                r#"db-setup {{"database":"{}","kind":"user","secret":"{arn}"}}"#,
                d.db.name
            )
        );
    }
    // a's user can read a's tables, not b's.
    let (a_user, _) = &a.users[0];
    let a_password = a.user_secret(0).await["password"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        as_user(
            &a,
            &a.db.name,
            a_user,
            &a_password,
            "SELECT count(*) FROM tenants"
        )
        .await
        .is_ok()
    );
    let err = as_user(
        &a,
        &b.db.name,
        a_user,
        &a_password,
        "SELECT count(*) FROM tenants",
    )
    .await
    .unwrap_err();
    assert!(err.contains("permission denied"), "{err}");
    a.scan().await;
    b.scan().await;
}

#[tokio::test]
async fn a_user_of_another_database_is_refused_and_keeps_its_password() {
    let a = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        ..StackSpec::new("other_a")
    })
    .await;
    let (_, put) = a.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    let (user, _) = a.users[0].clone();
    let a_password = a.user_secret(0).await["password"]
        .as_str()
        .unwrap()
        .to_string();

    // Another stack, another database, the same user name.
    let secret = secret_name("other_c");
    let c = deployment(
        "other_c",
        json!([{"username": user, "role": "readwrite", "secretId": secret}]),
        vec![],
    )
    .await;
    user_secret(&c, &secret, &user, None).await;
    let (_, put) = c.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let r = reason(&put);
    assert!(
        r.contains(&format!(
            "user {user} is managed by db-setup for database {}",
            a.db.name
        )),
        "{r}"
    );
    assert!(r.contains("nothing was changed"), "{r}");
    assert!(
        a.logs_in(&user, &a_password).await,
        "a's application still logs in"
    );
    // Even `adopt` does not take a role of another database.
    let c2 = deployment(
        "other_c2",
        json!([{"username": user, "role": "readwrite", "secretId": secret, "adopt": true}]),
        vec![],
    )
    .await;
    let (_, put) = c2.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    assert!(a.logs_in(&user, &a_password).await);
    a.scan().await;
}

#[tokio::test]
async fn an_existing_role_db_setup_did_not_create_needs_adopt() {
    let (_seed, user, secret) = hand_made("handmade", "", "the-dbas-password-1").await;
    let d = deployment(
        "adopt_no",
        json!([{"username": user, "role": "readonly", "secretId": secret}]),
        vec![],
    )
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let r = reason(&put);
    assert!(
        r.contains(&format!(
            "user {user} already exists and db-setup did not create it"
        )),
        "{r}"
    );
    assert!(r.contains("\"adopt\": true"), "{r}");
    assert!(d.logs_in(&user, "the-dbas-password-1").await, "untouched");
    assert_eq!(comment(&d, &user).await, "NULL");

    // With adopt, the configuration takes it over: marked, new password stored.
    let mut d2 = deployment(
        "adopt_yes",
        json!([{"username": user, "role": "readonly", "secretId": secret, "adopt": true}]),
        vec![],
    )
    .await;
    let (_, put) = d2.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert!(
        comment(&d2, &user)
            .await
            .contains(&format!(r#""database":"{}""#, d2.db.name))
    );
    let s = current_value(&d2.sm, &secret).await;
    assert!(d2.logs_in(&user, s["password"].as_str().unwrap()).await);
    d2.users.push((user, secret));
    d2.scan().await;
}

#[tokio::test]
async fn privileged_roles_and_the_admin_are_never_application_users() {
    let (seed, powerful, secret) = hand_made("powerful", "CREATEDB", "the-powerful-password").await;
    let d = deployment(
        "priv",
        json!([{"username": powerful, "role": "readwrite", "secretId": secret, "adopt": true}]),
        vec![],
    )
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    assert!(
        reason(&put).contains(&format!("user {powerful} exists with CREATEDB")),
        "{}",
        reason(&put)
    );
    assert!(d.logs_in(&powerful, "the-powerful-password").await);

    // An RDS-like admin (CREATEROLE, owner of the database) named as an
    // application user: refused, its password untouched.
    let admin = unique("master");
    let admin_password = format!("master{}", secret_name("pw").replace(['/', '-'], "x"));
    seed.db
        .query(&format!(
            "CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD '{admin_password}'; ALTER DATABASE {} OWNER TO {admin}; ALTER SCHEMA public OWNER TO {admin}; CREATE EXTENSION IF NOT EXISTS vector",
            seed.db.name
        ))
        .await;
    let admin_user_secret = placeholder(&seed, &admin).await;
    let d2 = Deployment::new(StackSpec {
        admin: Some(json!({"username": admin, "password": admin_password})),
        env: vec![
            ("DB_SETUP_DB_HOST", common::env("DB_SETUP_TEST_PG_HOST")),
            ("DB_SETUP_DB_PORT", common::env("DB_SETUP_TEST_PG_PORT")),
            ("DB_SETUP_DB_NAME", seed.db.name.clone()),
            (
                "DB_SETUP_USERS",
                json!([{"username": admin, "role": "readwrite", "secretId": admin_user_secret, "adopt": true}]).to_string(),
            ),
        ],
        ..StackSpec::new("priv_admin")
    })
    .await;
    let (_, put) = d2.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    assert!(
        reason(&put).contains("is the admin user db-setup connects as"),
        "{}",
        reason(&put)
    );
    assert!(
        d2.logs_in(&admin, &admin_password).await,
        "the admin's password is untouched"
    );
    d2.scan().await;
}

#[tokio::test]
async fn two_databases_racing_for_one_user_name_get_one_owner_and_a_clear_refusal() {
    for round in 0..3 {
        let user = unique(&format!("race{round}"));
        let sa = secret_name("race_a");
        let sb = secret_name("race_b");
        let a = deployment(
            "race_a",
            json!([{"username": user, "role": "readwrite", "secretId": sa}]),
            vec![],
        )
        .await;
        let b = deployment(
            "race_b",
            json!([{"username": user, "role": "readwrite", "secretId": sb}]),
            vec![],
        )
        .await;
        for (d, s) in [(&a, &sa), (&b, &sb)] {
            user_secret(d, s, &user, None).await;
        }
        let ((_, pa), (_, pb)) =
            tokio::join!(a.request("Create", props()), b.request("Create", props()));
        let statuses = [pa.body["Status"].clone(), pb.body["Status"].clone()];
        assert_eq!(
            statuses.iter().filter(|s| **s == "SUCCESS").count(),
            1,
            "round {round}: exactly one owner: {} / {}",
            pa.body,
            pb.body
        );
        let ((winner, winner_secret), loser_put) = if pa.body["Status"] == "SUCCESS" {
            ((&a, &sa), &pb)
        } else {
            ((&b, &sb), &pa)
        };
        let r = reason(loser_put);
        assert!(
            r.contains(&format!(
                "is managed by db-setup for database {}",
                winner.db.name
            )),
            "round {round}: the refusal names the owner, not a raw catalog error: {r}"
        );
        // The winner's application logs in with its secret.
        let v = current_value(&winner.sm, winner_secret).await;
        assert!(winner.logs_in(&user, v["password"].as_str().unwrap()).await);
    }
}

#[tokio::test]
async fn concurrent_deploys_of_several_databases_converge() {
    let mut ds = Vec::new();
    for i in 0..4 {
        ds.push(
            Deployment::new(StackSpec {
                users: &[
                    ("rw", "readwrite"),
                    ("ro", "readonly"),
                    ("tc", "tablecreator"),
                ],
                env: vec![("DB_SETUP_ROLE_PREFIX", String::new())],
                ..StackSpec::new(["conc_a", "conc_b", "conc_c", "conc_d"][i])
            })
            .await,
        );
    }
    let puts =
        futures_util::future::join_all(ds.iter().map(|d| d.request("Create", props()))).await;
    for (d, (_, put)) in ds.iter().zip(&puts) {
        assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
        for i in 0..3 {
            let s = d.user_secret(i).await;
            assert!(
                d.logs_in(&d.users[i].0, s["password"].as_str().unwrap())
                    .await
            );
        }
        d.scan().await;
    }
}

#[tokio::test]
async fn iam_users_join_rds_iam_without_a_password_beside_password_users() {
    let seed = Deployment::new(StackSpec::new("iam_seed")).await;
    let rw = unique("pwuser");
    let iam = unique("iamuser");
    let secret = placeholder(&seed, &rw).await;
    let mut d = deployment(
        "iam",
        json!([{"username": rw, "role": "readwrite", "secretId": secret},
               {"username": iam, "role": "readonly", "auth": "iam"}]),
        vec![],
    )
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["Users"], "2");
    assert_eq!(put.body["Data"]["UsersRotated"], "1");
    let member =
        |role: &str, group: &str| format!("SELECT pg_has_role('{role}', '{group}', 'MEMBER')");
    assert_eq!(d.db.query(&member(&iam, "rds_iam")).await, ["t"]);
    assert_eq!(
        d.db.query(&member(&iam, &format!("{}_readonly", d.db.name)))
            .await,
        ["t"]
    );
    assert_eq!(d.db.query(&member(&rw, "rds_iam")).await, ["f"]);
    assert_eq!(rolpassword(&d, &iam).await, "NULL");
    assert!(
        comment(&d, &iam).await.contains(r#""kind":"user"}"#),
        "no secret in an IAM user's mark"
    );
    let status = d.invoke(&json!({"action": "users"})).await;
    let users = status.response()["users"].as_array().unwrap().clone();
    assert_eq!(users[0]["logs_in"], true, "{users:?}");
    assert_eq!(users[1]["auth"], "iam", "{users:?}");
    d.users.push((rw, secret));
    d.scan().await;
}

#[tokio::test]
async fn a_tablecreator_cannot_plant_objects_a_later_migration_resolves() {
    let d = Deployment::new(StackSpec {
        users: &[("tc", "tablecreator")],
        ..StackSpec::new("hijack")
    })
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    let (tc, _) = &d.users[0];
    let pw = d.user_secret(0).await["password"]
        .as_str()
        .unwrap()
        .to_string();
    // The CVE-2018-1058 pattern: a better-matching overload of a built-in in
    // a schema on the migrations' search path.
    let plant = as_user(
        &d,
        &d.db.name,
        tc,
        &pw,
        "CREATE FUNCTION public.lower(varchar) RETURNS text LANGUAGE sql AS $$ SELECT 'hijacked' $$",
    )
    .await;
    let err = plant.unwrap_err();
    assert!(err.contains("permission denied for schema public"), "{err}");
    // It creates tables in a schema of its own.
    let created = as_user(
        &d,
        &d.db.name,
        tc,
        &pw,
        "CREATE TABLE scratch (x int); SELECT relnamespace::regnamespace::text FROM pg_class WHERE relname = 'scratch'",
    )
    .await
    .unwrap();
    assert_eq!(created, [format!("{}_tablecreator", d.role_prefix)]);
    // The admin's statements resolve the built-in.
    assert_eq!(d.db.query("SELECT lower('ABC'::varchar)").await, ["abc"]);
    d.scan().await;
}

#[tokio::test]
async fn a_deployment_from_before_marks_is_taken_over_without_a_change() {
    // What an older db-setup left: a group and a user without marks, the
    // user's secret logging in.
    let seed = Deployment::new(StackSpec::new("legacy_seed")).await;
    let prefix = unique("legacy");
    let user = format!("{prefix}_rw");
    let group = format!("{prefix}_readwrite");
    seed.db
        .query(&format!(
            "CREATE ROLE {group} NOLOGIN; CREATE ROLE {user} LOGIN PASSWORD 'legacy-password-1'; GRANT {group} TO {user}"
        ))
        .await;
    let secret = secret_name("legacy");
    user_secret(&seed, &secret, &user, Some("legacy-password-1")).await;
    let mut d = deployment(
        "legacy",
        json!([{"username": user, "role": "readwrite", "secretId": secret}]),
        vec![("DB_SETUP_ROLE_PREFIX", prefix.clone())],
    )
    .await;
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "SUCCESS", "{}", put.body);
    assert_eq!(put.body["Data"]["UsersRotated"], "0", "{}", put.body);
    assert!(d.logs_in(&user, "legacy-password-1").await);
    assert!(
        comment(&d, &user).await.starts_with("db-setup {"),
        "the user is marked"
    );
    assert!(
        comment(&d, &group).await.starts_with("db-setup {"),
        "the group is marked"
    );
    d.users.push((user, secret));
    d.scan().await;
}

#[tokio::test]
async fn a_held_role_lock_is_reported_as_the_role_lock() {
    let d = Deployment::new(StackSpec {
        users: &[("rw", "readwrite")],
        env: vec![("DB_SETUP_LOCK_WAIT", "1s".into())],
        ..StackSpec::new("rolelock")
    })
    .await;
    // Another deploy of this database is in its users step.
    let holder = d.db.connect().await;
    holder
        .client()
        .simple_query(&format!(
            "SELECT pg_advisory_lock({})",
            db_setup::migrate::lock::ROLE_KEY
        ))
        .await
        .unwrap();
    let (_, put) = d.request("Create", props()).await;
    assert_eq!(put.body["Status"], "FAILED", "{}", put.body);
    let r = reason(&put);
    assert!(r.contains("waiting for the role lock"), "{r}");
    assert!(r.contains("creating its application users"), "{r}");
    assert!(!r.contains("migration"), "not the migration lock: {r}");
    d.scan().await;
}
