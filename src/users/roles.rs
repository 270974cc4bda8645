//! Role templates → SQL. Pure: the statements are built here and run by
//! [`super::apply`] in one transaction, under the role lock.
//!
//! Group roles (`<prefix>_readwrite`, ...) own the grants; login users are
//! their members, so privileges change in one place. Every statement is
//! idempotent, so a re-run converges. Each role gets its ownership mark
//! ([`super::ownership`]), guarded so that a concurrent deploy that marked
//! it first makes this transaction fail and retry instead of overwriting.
//!
//! Nothing a managed role can create lands on the migrations' search path:
//! no group gets CREATE on the schema the migrations use; `tablecreator`
//! creates in a schema of its own (named like its group role).

use super::ownership::{Mark, RoleKind};
use super::{Auth, RoleTemplate, UserSpec};
use crate::pg::{literal, quote_ident};

/// The role RDS uses for IAM database authentication.
pub const RDS_IAM: &str = "rds_iam";

/// The group role of a template: `<prefix>_<template>`.
pub fn group_role(prefix: &str, template: RoleTemplate) -> String {
    format!("{prefix}_{}", template.name())
}

/// The schema `tablecreator` members create in: named like its group role.
pub fn tablecreator_schema(prefix: &str) -> String {
    group_role(prefix, RoleTemplate::TableCreator)
}

/// What the SQL needs to know about the database.
#[derive(Debug, Clone)]
pub struct RoleContext<'a> {
    /// Prefix of the group roles.
    pub prefix: &'a str,
    /// The database the roles may connect to.
    pub dbname: &'a str,
    /// The schema the grants cover.
    pub schema: &'a str,
    /// The role that runs migrations and owns what they create (default
    /// privileges are set for the objects it creates later).
    pub owner: &'a str,
}

/// A user to manage, with the ARN of its secret (password users).
#[derive(Debug, Clone)]
pub struct ManagedUser<'a> {
    /// The user.
    pub spec: &'a UserSpec,
    /// Its secret's ARN, recorded in its mark.
    pub secret_arn: Option<&'a str>,
}

fn create_role_if_missing(role: &str, attributes: &str) -> String {
    // Role names reaching here passed check_identifier: no quote or dollar sign.
    format!(
        "DO $$ BEGIN CREATE ROLE {} {attributes}; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        quote_ident(role)
    )
}

/// Fails with `serialization_failure` (so the transaction is retried) when
/// the role's comment is no longer `expected`: another deploy marked it
/// between the inspection and this transaction.
pub fn comment_guard_sql(role: &str, expected: Option<&str>) -> String {
    let expected = expected.map_or_else(|| "NULL".to_string(), literal);
    format!(
        "DO $$ BEGIN IF pg_catalog.shobj_description((SELECT oid FROM pg_catalog.pg_roles WHERE rolname = {name}), 'pg_authid') \
         IS DISTINCT FROM {expected} THEN RAISE EXCEPTION 'role % changed while db-setup was deciding', {name} \
         USING ERRCODE = 'serialization_failure'; END IF; END $$",
        name = literal(role)
    )
}

/// Marks a role as managed for this database (see [`super::ownership`]).
pub fn mark_sql(role: &str, mark: &Mark) -> String {
    format!(
        "COMMENT ON ROLE {} IS {}",
        quote_ident(role),
        literal(&mark.comment())
    )
}

/// The mark of a group role of this database.
pub fn group_mark(ctx: &RoleContext<'_>) -> Mark {
    Mark {
        database: ctx.dbname.into(),
        kind: RoleKind::Group,
        secret: None,
    }
}

/// The mark of a user of this database.
pub fn user_mark(ctx: &RoleContext<'_>, user: &ManagedUser<'_>) -> Mark {
    Mark {
        database: ctx.dbname.into(),
        kind: RoleKind::User,
        secret: user.secret_arn.map(str::to_string),
    }
}

/// Statements that create a template's group role and give it its
/// privileges. `expected` is the role's comment as inspected.
pub fn group_role_sql(
    ctx: &RoleContext<'_>,
    template: RoleTemplate,
    expected: Option<&str>,
) -> Vec<String> {
    let name = group_role(ctx.prefix, template);
    let role = quote_ident(&name);
    let schema = quote_ident(ctx.schema);
    let owner = quote_ident(ctx.owner);
    let (tables, sequences) = match template {
        RoleTemplate::ReadOnly => ("SELECT", "SELECT"),
        RoleTemplate::ReadWrite | RoleTemplate::TableCreator => {
            ("SELECT, INSERT, UPDATE, DELETE", "USAGE, SELECT")
        }
    };
    let mut sql = vec![
        create_role_if_missing(&name, "NOLOGIN"),
        comment_guard_sql(&name, expected),
        mark_sql(&name, &group_mark(ctx)),
        format!(
            "GRANT CONNECT ON DATABASE {} TO {role}",
            quote_ident(ctx.dbname)
        ),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        // Nothing a member creates may shadow what a migration resolves.
        format!("REVOKE CREATE ON SCHEMA {schema} FROM {role}"),
        format!("GRANT {tables} ON ALL TABLES IN SCHEMA {schema} TO {role}"),
        format!("GRANT {sequences} ON ALL SEQUENCES IN SCHEMA {schema} TO {role}"),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT {tables} ON TABLES TO {role}"
        ),
        format!(
            "ALTER DEFAULT PRIVILEGES FOR ROLE {owner} IN SCHEMA {schema} GRANT {sequences} ON SEQUENCES TO {role}"
        ),
    ];
    if template == RoleTemplate::TableCreator {
        let own = quote_ident(&tablecreator_schema(ctx.prefix));
        sql.push(format!(
            "CREATE SCHEMA IF NOT EXISTS {own} AUTHORIZATION {owner}"
        ));
        sql.push(format!("GRANT USAGE, CREATE ON SCHEMA {own} TO {role}"));
    }
    if template != RoleTemplate::ReadOnly {
        // The migration history is not the application's to write.
        sql.push(format!(
            "DO $$ BEGIN IF to_regclass('public.pgmigrations') IS NOT NULL THEN \
             REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.pgmigrations FROM {role}; END IF; END $$"
        ));
    }
    sql
}

/// Statements that create a login user (without a password: the
/// credentials protocol sets it, or IAM authentication replaces it), mark
/// it, make it a member of its template's group role and of no other
/// template's. `expected` is the role's comment as inspected.
pub fn login_user_sql(
    ctx: &RoleContext<'_>,
    user: &ManagedUser<'_>,
    expected: Option<&str>,
) -> Vec<String> {
    let spec = user.spec;
    let name = quote_ident(&spec.username);
    let others: Vec<String> = RoleTemplate::ALL
        .into_iter()
        .filter(|t| *t != spec.role)
        .map(|t| literal(&group_role(ctx.prefix, t)))
        .collect();
    let mut sql = vec![
        create_role_if_missing(&spec.username, "LOGIN"),
        comment_guard_sql(&spec.username, expected),
        mark_sql(&spec.username, &user_mark(ctx, user)),
        format!("ALTER ROLE {name} WITH LOGIN INHERIT"),
        format!(
            "GRANT {} TO {name}",
            quote_ident(&group_role(ctx.prefix, spec.role))
        ),
        format!(
            "DO $$ DECLARE g text; BEGIN FOR g IN SELECT r.rolname FROM pg_catalog.pg_auth_members m \
             JOIN pg_catalog.pg_roles r ON r.oid = m.roleid JOIN pg_catalog.pg_roles u ON u.oid = m.member \
             WHERE u.rolname = {} AND r.rolname IN ({}) LOOP EXECUTE format('REVOKE %I FROM %I', g, {}); END LOOP; END $$",
            literal(&spec.username),
            others.join(", "),
            literal(&spec.username)
        ),
    ];
    match spec.auth {
        Auth::Iam => {
            sql.push(format!("GRANT {} TO {name}", quote_ident(RDS_IAM)));
            sql.push(format!("ALTER ROLE {name} WITH PASSWORD NULL"));
        }
        // A member of rds_iam cannot log in with a password on RDS.
        Auth::Password { .. } => sql.push(format!(
            "DO $$ BEGIN IF EXISTS (SELECT 1 FROM pg_catalog.pg_auth_members m \
             JOIN pg_catalog.pg_roles r ON r.oid = m.roleid JOIN pg_catalog.pg_roles u ON u.oid = m.member \
             WHERE r.rolname = {iam} AND u.rolname = {user}) THEN EXECUTE format('REVOKE %I FROM %I', {iam}, {user}); END IF; END $$",
            iam = literal(RDS_IAM),
            user = literal(&spec.username)
        )),
    }
    if spec.role == RoleTemplate::TableCreator {
        sql.push(format!(
            "ALTER ROLE {name} IN DATABASE {} SET search_path = {}, public",
            quote_ident(ctx.dbname),
            quote_ident(&tablecreator_schema(ctx.prefix))
        ));
    }
    sql
}

/// The whole script for a set of users: the group roles they use, then the
/// users. `expected(role)` is each role's comment as inspected.
pub fn roles_script(
    ctx: &RoleContext<'_>,
    users: &[ManagedUser<'_>],
    expected: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut sql = Vec::new();
    for template in templates_in_use(users.iter().map(|u| u.spec)) {
        let group = group_role(ctx.prefix, template);
        sql.extend(group_role_sql(ctx, template, expected(&group).as_deref()));
    }
    for user in users {
        sql.extend(login_user_sql(
            ctx,
            user,
            expected(&user.spec.username).as_deref(),
        ));
    }
    sql
}

/// The templates the users need, in a fixed order.
pub fn templates_in_use<'a>(
    users: impl Iterator<Item = &'a UserSpec> + Clone,
) -> Vec<RoleTemplate> {
    RoleTemplate::ALL
        .into_iter()
        .filter(|t| users.clone().any(|u| u.role == *t))
        .collect()
}

/// `ALTER ROLE ... PASSWORD` with a SCRAM-SHA-256 verifier: the server stores
/// it as is, so the plaintext password never reaches it (nor its logs).
pub fn set_password_sql(username: &str, scram_verifier: &str) -> String {
    format!(
        "ALTER ROLE {} WITH PASSWORD {}",
        quote_ident(username),
        literal(scram_verifier)
    )
}

/// Makes the rotation clone a member of its user, as AWS's
/// alternating-users rotation function does when it creates the clone.
pub fn clone_membership_sql(username: &str, clone: &str) -> String {
    format!("GRANT {} TO {}", quote_ident(username), quote_ident(clone))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> RoleContext<'static> {
        RoleContext {
            prefix: "app",
            dbname: "appdb",
            schema: "public",
            owner: "admin",
        }
    }

    fn user(name: &str, role: RoleTemplate) -> UserSpec {
        UserSpec::password(name, role, "s")
    }

    fn managed(spec: &UserSpec) -> ManagedUser<'_> {
        ManagedUser {
            spec,
            secret_arn: Some("arn:s"),
        }
    }

    #[test]
    fn readwrite_gets_dml_and_default_privileges_for_the_owner() {
        let sql = group_role_sql(&ctx(), RoleTemplate::ReadWrite, None).join(";\n");
        assert!(sql.contains("CREATE ROLE \"app_readwrite\" NOLOGIN"));
        assert!(sql.contains("GRANT CONNECT ON DATABASE \"appdb\" TO \"app_readwrite\""));
        assert!(sql.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA \"public\" TO \"app_readwrite\""));
        assert!(sql.contains(
            "GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA \"public\" TO \"app_readwrite\""
        ));
        assert!(sql.contains("ALTER DEFAULT PRIVILEGES FOR ROLE \"admin\" IN SCHEMA \"public\" GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO \"app_readwrite\""));
        assert!(sql.contains(
            "REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.pgmigrations FROM \"app_readwrite\""
        ));
        assert!(sql.contains("REVOKE CREATE ON SCHEMA \"public\" FROM \"app_readwrite\""));
        assert!(!sql.contains("GRANT CREATE"));
        assert!(!sql.contains("TRUNCATE ON ALL"));
    }

    #[test]
    fn groups_are_marked_for_their_database_behind_a_guard() {
        let sql = group_role_sql(&ctx(), RoleTemplate::ReadOnly, None);
        let guard = sql
            .iter()
            .position(|s| s.contains("serialization_failure"))
            .unwrap();
        let mark = sql
            .iter()
            .position(|s| s.starts_with("COMMENT ON ROLE"))
            .unwrap();
        assert!(guard < mark, "the guard runs before the mark");
        assert!(sql[guard].contains("IS DISTINCT FROM NULL"));
        assert_eq!(
            sql[mark],
            r#"COMMENT ON ROLE "app_readonly" IS 'db-setup {"database":"appdb","kind":"group"}'"#
        );
        let again = group_role_sql(&ctx(), RoleTemplate::ReadOnly, Some("db-setup {}"));
        assert!(
            again
                .iter()
                .any(|s| s.contains("IS DISTINCT FROM 'db-setup {}'"))
        );
    }

    #[test]
    fn readonly_gets_select_only() {
        let sql = group_role_sql(&ctx(), RoleTemplate::ReadOnly, None).join(";\n");
        assert!(
            sql.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"app_readonly\"")
        );
        assert!(!sql.contains("INSERT"));
        assert!(!sql.contains("GRANT CREATE"));
    }

    #[test]
    fn tablecreator_creates_in_a_schema_of_its_own_never_in_public() {
        let sql = group_role_sql(&ctx(), RoleTemplate::TableCreator, None).join(";\n");
        assert!(sql.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES"));
        assert!(
            sql.contains(
                "CREATE SCHEMA IF NOT EXISTS \"app_tablecreator\" AUTHORIZATION \"admin\""
            )
        );
        assert!(sql.contains(
            "GRANT USAGE, CREATE ON SCHEMA \"app_tablecreator\" TO \"app_tablecreator\""
        ));
        assert!(sql.contains("REVOKE CREATE ON SCHEMA \"public\" FROM \"app_tablecreator\""));
        assert!(!sql.contains("CREATE ON SCHEMA \"public\" TO"));
        let u = user("tc", RoleTemplate::TableCreator);
        let user_sql = login_user_sql(&ctx(), &managed(&u), None).join(";\n");
        assert!(user_sql.contains(
            "ALTER ROLE \"tc\" IN DATABASE \"appdb\" SET search_path = \"app_tablecreator\", public"
        ));
    }

    #[test]
    fn users_join_their_group_and_leave_the_others() {
        let u = user("app_rw", RoleTemplate::ReadWrite);
        let sql = login_user_sql(&ctx(), &managed(&u), None).join(";\n");
        assert!(sql.contains("CREATE ROLE \"app_rw\" LOGIN"));
        assert!(sql.contains("GRANT \"app_readwrite\" TO \"app_rw\""));
        assert!(sql.contains("r.rolname IN ('app_readonly', 'app_tablecreator')"));
        assert!(sql.contains(
            r#"COMMENT ON ROLE "app_rw" IS 'db-setup {"database":"appdb","kind":"user","secret":"arn:s"}'"#
        ));
        // A password user leaves rds_iam (a member cannot log in with a password).
        assert!(sql.contains("format('REVOKE %I FROM %I', 'rds_iam', 'app_rw')"));
        assert!(!sql.contains("GRANT \"rds_iam\""));
        assert!(!sql.contains("search_path"));
        assert!(
            !sql.to_uppercase().contains("PASSWORD"),
            "no password in role DDL"
        );
    }

    #[test]
    fn iam_users_join_rds_iam_and_have_no_password() {
        let u = UserSpec {
            auth: Auth::Iam,
            ..user("app_iam", RoleTemplate::ReadOnly)
        };
        let sql = login_user_sql(
            &ctx(),
            &ManagedUser {
                spec: &u,
                secret_arn: None,
            },
            None,
        )
        .join(";\n");
        assert!(sql.contains("GRANT \"rds_iam\" TO \"app_iam\""));
        assert!(sql.contains("ALTER ROLE \"app_iam\" WITH PASSWORD NULL"));
        assert!(sql.contains(r#"IS 'db-setup {"database":"appdb","kind":"user"}'"#));
        assert!(sql.contains("GRANT \"app_readonly\" TO \"app_iam\""));
    }

    #[test]
    fn only_templates_in_use_are_created() {
        let u = user("a", RoleTemplate::ReadOnly);
        let script = roles_script(&ctx(), &[managed(&u)], |_| None).join(";\n");
        assert!(script.contains("app_readonly\" NOLOGIN"));
        assert!(!script.contains("app_readwrite\" NOLOGIN"));
        assert!(roles_script(&ctx(), &[], |_| None).is_empty());
    }

    #[test]
    fn passwords_are_set_as_verifiers() {
        assert_eq!(
            set_password_sql("app_rw", "SCRAM-SHA-256$4096:c2FsdA==$a:b"),
            "ALTER ROLE \"app_rw\" WITH PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b'"
        );
        assert_eq!(
            clone_membership_sql("app_rw", "app_rw_clone"),
            "GRANT \"app_rw\" TO \"app_rw_clone\""
        );
    }
}
