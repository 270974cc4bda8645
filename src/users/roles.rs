//! Role templates → SQL. Pure: the statements are built here and run by
//! [`crate::setup`] in one transaction, under the role lock.
//!
//! Group roles (`<prefix>_readwrite`, ...) own the grants; login users are
//! their members, so privileges change in one place. Every statement is
//! idempotent, so a re-run converges.

use super::{RoleTemplate, UserSpec, quote_ident};
use crate::migrate::history::literal;

/// The group role of a template: `<prefix>_<template>`.
pub fn group_role(prefix: &str, template: RoleTemplate) -> String {
    format!("{prefix}_{}", template.name())
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

fn create_role_if_missing(role: &str, attributes: &str) -> String {
    // Role names reaching here passed check_identifier: no quote or dollar sign.
    format!(
        "DO $$ BEGIN CREATE ROLE {} {attributes}; EXCEPTION WHEN duplicate_object THEN NULL; END $$",
        quote_ident(role)
    )
}

/// Statements that create a template's group role and give it its privileges.
pub fn group_role_sql(ctx: &RoleContext<'_>, template: RoleTemplate) -> Vec<String> {
    let role = quote_ident(&group_role(ctx.prefix, template));
    let schema = quote_ident(ctx.schema);
    let owner = quote_ident(ctx.owner);
    let (tables, sequences) = match template {
        RoleTemplate::ReadOnly => ("SELECT", "SELECT"),
        RoleTemplate::ReadWrite | RoleTemplate::TableCreator => {
            ("SELECT, INSERT, UPDATE, DELETE", "USAGE, SELECT")
        }
    };
    let mut sql = vec![
        create_role_if_missing(&group_role(ctx.prefix, template), "NOLOGIN"),
        format!(
            "GRANT CONNECT ON DATABASE {} TO {role}",
            quote_ident(ctx.dbname)
        ),
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
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
        sql.push(format!("GRANT CREATE ON SCHEMA {schema} TO {role}"));
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
/// credentials protocol sets it), make it a member of its template's group
/// role, and of no other template's.
pub fn login_user_sql(ctx: &RoleContext<'_>, user: &UserSpec) -> Vec<String> {
    let name = quote_ident(&user.username);
    let others: Vec<String> = RoleTemplate::ALL
        .into_iter()
        .filter(|t| *t != user.role)
        .map(|t| literal(&group_role(ctx.prefix, t)))
        .collect();
    vec![
        create_role_if_missing(&user.username, "LOGIN"),
        format!("ALTER ROLE {name} WITH LOGIN INHERIT"),
        format!(
            "GRANT {} TO {name}",
            quote_ident(&group_role(ctx.prefix, user.role))
        ),
        format!(
            "DO $$ DECLARE g text; BEGIN FOR g IN SELECT r.rolname FROM pg_catalog.pg_auth_members m \
             JOIN pg_catalog.pg_roles r ON r.oid = m.roleid JOIN pg_catalog.pg_roles u ON u.oid = m.member \
             WHERE u.rolname = {} AND r.rolname IN ({}) LOOP EXECUTE format('REVOKE %I FROM %I', g, {}); END LOOP; END $$",
            literal(&user.username),
            others.join(", "),
            literal(&user.username)
        ),
    ]
}

/// The whole script for a set of users: the group roles they use, then the users.
pub fn roles_script(ctx: &RoleContext<'_>, users: &[UserSpec]) -> Vec<String> {
    let mut sql = Vec::new();
    for template in RoleTemplate::ALL {
        if users.iter().any(|u| u.role == template) {
            sql.extend(group_role_sql(ctx, template));
        }
    }
    for user in users {
        sql.extend(login_user_sql(ctx, user));
    }
    sql
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
        UserSpec {
            username: name.into(),
            role,
            secret_id: "s".into(),
        }
    }

    #[test]
    fn readwrite_gets_dml_and_default_privileges_for_the_owner() {
        let sql = group_role_sql(&ctx(), RoleTemplate::ReadWrite).join(";\n");
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
        assert!(!sql.contains("CREATE ON SCHEMA"));
        assert!(!sql.contains("TRUNCATE ON ALL"));
    }

    #[test]
    fn readonly_gets_select_only() {
        let sql = group_role_sql(&ctx(), RoleTemplate::ReadOnly).join(";\n");
        assert!(
            sql.contains("GRANT SELECT ON ALL TABLES IN SCHEMA \"public\" TO \"app_readonly\"")
        );
        assert!(!sql.contains("INSERT"));
        assert!(!sql.contains("CREATE ON SCHEMA"));
    }

    #[test]
    fn tablecreator_is_readwrite_plus_create_on_the_schema() {
        let sql = group_role_sql(&ctx(), RoleTemplate::TableCreator).join(";\n");
        assert!(sql.contains("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES"));
        assert!(sql.contains("GRANT CREATE ON SCHEMA \"public\" TO \"app_tablecreator\""));
    }

    #[test]
    fn users_join_their_group_and_leave_the_others() {
        let sql = login_user_sql(&ctx(), &user("app_rw", RoleTemplate::ReadWrite)).join(";\n");
        assert!(sql.contains("CREATE ROLE \"app_rw\" LOGIN"));
        assert!(sql.contains("GRANT \"app_readwrite\" TO \"app_rw\""));
        assert!(sql.contains("r.rolname IN ('app_readonly', 'app_tablecreator')"));
        assert!(
            !sql.to_uppercase().contains("PASSWORD"),
            "no password in role DDL"
        );
    }

    #[test]
    fn only_templates_in_use_are_created() {
        let script = roles_script(&ctx(), &[user("a", RoleTemplate::ReadOnly)]).join(";\n");
        assert!(script.contains("app_readonly\" NOLOGIN"));
        assert!(!script.contains("app_readwrite\" NOLOGIN"));
        assert!(roles_script(&ctx(), &[]).is_empty());
    }

    #[test]
    fn passwords_are_set_as_verifiers() {
        assert_eq!(
            set_password_sql("app_rw", "SCRAM-SHA-256$4096:c2FsdA==$a:b"),
            "ALTER ROLE \"app_rw\" WITH PASSWORD 'SCRAM-SHA-256$4096:c2FsdA==$a:b'"
        );
    }
}
