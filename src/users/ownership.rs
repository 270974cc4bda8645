//! Which roles a configuration may manage. Pure: the catalog facts are read
//! by [`super::apply`], the verdicts decided here.
//!
//! Roles are instance-wide, databases are not: two stacks whose databases
//! share an RDS instance must never manage the same role. Every role
//! db-setup manages carries an ownership mark, a comment on the role
//! (`COMMENT ON ROLE`, readable from any database) naming the database and,
//! for a login user, the secret that holds its credentials:
//!
//! ```text
//! db-setup {"database":"orders","kind":"user","secret":"arn:aws:secretsmanager:..."}
//! ```
//!
//! A role is this configuration's to manage when
//! - it does not exist (it is created and marked), or
//! - it is marked for this database (and, for a user, this secret), or
//! - it is not marked (or marked for another secret of this database) and
//!   either the configured secret already logs in as it (nothing is taken
//!   over: the configuration already holds its credentials), or, for a
//!   group, nobody but this configuration's users is a member of it, or the
//!   configuration says `adopt: true`.
//!
//! Never managed: a role marked for another database, the admin user, and
//! a role with SUPERUSER, CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS.

use std::fmt;

use serde::{Deserialize, Serialize};

/// What the mark's comment starts with.
pub const MARK_PREFIX: &str = "db-setup ";

/// A group role or a login user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoleKind {
    /// A NOLOGIN role that holds a template's grants.
    Group,
    /// An application login user.
    User,
}

impl fmt::Display for RoleKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoleKind::Group => "group role",
            RoleKind::User => "user",
        })
    }
}

/// The ownership mark stored as the role's comment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mark {
    /// The database the role serves.
    pub database: String,
    /// Group or user.
    pub kind: RoleKind,
    /// For a password user: the ARN of the secret that holds its credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Mark {
    /// The comment text.
    pub fn comment(&self) -> String {
        // A struct of strings always serializes.
        let json = serde_json::to_string(self).unwrap_or_default();
        format!("{MARK_PREFIX}{json}")
    }

    /// Reads a role's comment; `None` when it is not a db-setup mark.
    pub fn parse(comment: &str) -> Option<Mark> {
        serde_json::from_str(comment.strip_prefix(MARK_PREFIX)?).ok()
    }
}

/// What the catalog says about an existing role.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExistingRole {
    /// Its name.
    pub name: String,
    /// `rolcanlogin`.
    pub can_login: bool,
    /// The attributes db-setup refuses to manage, by their SQL names.
    pub privileged: Vec<&'static str>,
    /// Its comment, if any.
    pub comment: Option<String>,
    /// The roles that are members of it.
    pub members: Vec<String>,
}

/// A role the configuration wants to manage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim<'a> {
    /// The role name.
    pub name: &'a str,
    /// Group or user.
    pub kind: RoleKind,
    /// For a password user, its secret's ARN.
    pub secret: Option<&'a str>,
    /// The configuration allows taking over an unmarked role.
    pub adopt: bool,
    /// The configured secret's current version logs in as this role (or
    /// its rotation clone): the configuration already holds its credentials.
    pub proven: bool,
    /// For a group: the members that belong to this configuration (its
    /// users, their rotation clones and the admin).
    pub own_members: &'a [String],
}

/// What to do with a claimed role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// It does not exist: create and mark it.
    Create,
    /// Marked for this configuration: manage it.
    Manage,
    /// Not marked for this configuration, but provably or explicitly its:
    /// mark it and manage it. The text says why (logged).
    Adopt(String),
}

/// Why a role is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnershipError {
    /// The admin (migrating) user cannot be an application user or group.
    #[error(
        "{kind} {role} is the admin user db-setup connects as: application roles must be other roles; choose another name"
    )]
    IsAdmin {
        /// The role.
        role: String,
        /// Group or user.
        kind: RoleKind,
    },
    /// A privileged role.
    #[error(
        "{kind} {role} exists with {}: db-setup never manages a privileged role as an application role; choose another name",
        .attributes.join(", ")
    )]
    Privileged {
        /// The role.
        role: String,
        /// Group or user.
        kind: RoleKind,
        /// Its privileged attributes.
        attributes: Vec<&'static str>,
    },
    /// A login role where a group is wanted.
    #[error(
        "group role {role} exists as a LOGIN role: db-setup's group roles are NOLOGIN; set DB_SETUP_ROLE_PREFIX so the group names do not collide with it"
    )]
    LoginGroup {
        /// The role.
        role: String,
    },
    /// Marked for another database of the instance.
    #[error(
        "{kind} {role} is managed by db-setup for database {database}: roles are shared by every database of the instance, so two databases cannot manage one role; {fix}"
    )]
    OtherDatabase {
        /// The role.
        role: String,
        /// Group or user.
        kind: RoleKind,
        /// The database its mark names.
        database: String,
        /// What to do.
        fix: &'static str,
    },
    /// Marked as the other kind (a group used as a user, or the reverse).
    #[error("{role} is managed by db-setup as a {marked}, not as a {kind}: choose another name")]
    OtherKind {
        /// The role.
        role: String,
        /// What is wanted.
        kind: RoleKind,
        /// What its mark says.
        marked: RoleKind,
    },
    /// A user marked for another secret of the same database.
    #[error(
        "user {role} is managed by db-setup with another secret ({secret}), and this configuration's secret does not log in as it: two configurations would rotate each other's password. Use that secret, or set \"adopt\": true on this user to move it to this one"
    )]
    OtherSecret {
        /// The role.
        role: String,
        /// The secret its mark names.
        secret: String,
    },
    /// An existing role db-setup did not create.
    #[error(
        "{kind} {role} already exists and db-setup did not create it (it carries no db-setup mark){detail}; {fix}"
    )]
    NotOurs {
        /// The role.
        role: String,
        /// Group or user.
        kind: RoleKind,
        /// What was found.
        detail: String,
        /// What to do.
        fix: &'static str,
    },
}

const USER_FIX: &str = "set \"adopt\": true on this user to take it over (its password is replaced unless its secret already logs in), or choose another name";
const GROUP_FIX: &str = "set DB_SETUP_ROLE_PREFIX to a prefix unique to this database, or set \"adopt\": true on a user of this template to take the group over";
const OTHER_DB_USER_FIX: &str =
    "choose a user name unique to this database (each stack needs its own users)";
const OTHER_DB_GROUP_FIX: &str = "set DB_SETUP_ROLE_PREFIX to a prefix unique to this database (the default is the database name)";

/// Decides whether `claim` may be managed by the configuration of
/// `database` whose admin user is `admin`. `existing` is the role as the
/// catalog shows it, `None` when it does not exist.
pub fn judge(
    database: &str,
    admin: &str,
    claim: &Claim<'_>,
    existing: Option<&ExistingRole>,
) -> Result<Verdict, OwnershipError> {
    if claim.name == admin {
        return Err(OwnershipError::IsAdmin {
            role: claim.name.into(),
            kind: claim.kind,
        });
    }
    let Some(role) = existing else {
        return Ok(Verdict::Create);
    };
    if !role.privileged.is_empty() {
        return Err(OwnershipError::Privileged {
            role: claim.name.into(),
            kind: claim.kind,
            attributes: role.privileged.clone(),
        });
    }
    if claim.kind == RoleKind::Group && role.can_login {
        return Err(OwnershipError::LoginGroup {
            role: claim.name.into(),
        });
    }
    let mark = role.comment.as_deref().and_then(Mark::parse);
    if let Some(mark) = &mark {
        if mark.database != database {
            return Err(OwnershipError::OtherDatabase {
                role: claim.name.into(),
                kind: claim.kind,
                database: mark.database.clone(),
                fix: match claim.kind {
                    RoleKind::User => OTHER_DB_USER_FIX,
                    RoleKind::Group => OTHER_DB_GROUP_FIX,
                },
            });
        }
        if mark.kind != claim.kind {
            return Err(OwnershipError::OtherKind {
                role: claim.name.into(),
                kind: claim.kind,
                marked: mark.kind,
            });
        }
        return match (&mark.secret, claim.secret) {
            (Some(marked), Some(wanted)) if marked != wanted => {
                if claim.proven {
                    Ok(Verdict::Adopt(format!(
                        "marked for secret {marked}, but this configuration's secret logs in as it"
                    )))
                } else if claim.adopt {
                    Ok(Verdict::Adopt(format!(
                        "marked for secret {marked}; taken over as the configuration says adopt"
                    )))
                } else {
                    Err(OwnershipError::OtherSecret {
                        role: claim.name.into(),
                        secret: marked.clone(),
                    })
                }
            }
            _ => Ok(Verdict::Manage),
        };
    }
    // Not marked: someone else's role, a role of an older db-setup, or one
    // the configuration provably holds.
    if claim.proven {
        return Ok(Verdict::Adopt(
            "not marked, but the configured secret already logs in as it".into(),
        ));
    }
    let foreign: Vec<&str> = role
        .members
        .iter()
        .filter(|m| !claim.own_members.contains(m))
        .map(String::as_str)
        .collect();
    if claim.kind == RoleKind::Group && foreign.is_empty() {
        return Ok(Verdict::Adopt(
            "not marked, and no role outside this configuration is a member of it".into(),
        ));
    }
    if claim.adopt {
        return Ok(Verdict::Adopt(
            "not marked; taken over as the configuration says adopt".into(),
        ));
    }
    Err(OwnershipError::NotOurs {
        role: claim.name.into(),
        kind: claim.kind,
        detail: if claim.kind == RoleKind::Group {
            format!(
                " and other roles are members of it ({})",
                foreign.join(", ")
            )
        } else {
            String::new()
        },
        fix: match claim.kind {
            RoleKind::User => USER_FIX,
            RoleKind::Group => GROUP_FIX,
        },
    })
}

/// Every error, one per line, for a single message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} role(s) refused: {}", .0.len(), .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Refused(pub Vec<OwnershipError>);

#[cfg(test)]
mod tests {
    use super::*;

    fn user<'a>(name: &'a str, secret: &'a str) -> Claim<'a> {
        Claim {
            name,
            kind: RoleKind::User,
            secret: Some(secret),
            adopt: false,
            proven: false,
            own_members: &[],
        }
    }

    fn marked(database: &str, kind: RoleKind, secret: Option<&str>) -> ExistingRole {
        ExistingRole {
            name: "r".into(),
            can_login: kind == RoleKind::User,
            comment: Some(
                Mark {
                    database: database.into(),
                    kind,
                    secret: secret.map(str::to_string),
                }
                .comment(),
            ),
            ..ExistingRole::default()
        }
    }

    #[test]
    fn marks_round_trip_and_other_comments_are_not_marks() {
        let m = Mark {
            database: "orders".into(),
            kind: RoleKind::User,
            secret: Some("arn:s".into()),
        };
        assert_eq!(
            m.comment(),
            r#"db-setup {"database":"orders","kind":"user","secret":"arn:s"}"#
        );
        assert_eq!(Mark::parse(&m.comment()), Some(m));
        assert_eq!(Mark::parse("reporting user, ask Jane"), None);
        assert_eq!(Mark::parse("db-setup {broken"), None);
    }

    #[test]
    fn a_missing_role_is_created_and_a_marked_one_managed() {
        assert_eq!(
            judge("a", "admin", &user("u", "arn:s"), None),
            Ok(Verdict::Create)
        );
        let mine = marked("a", RoleKind::User, Some("arn:s"));
        assert_eq!(
            judge("a", "admin", &user("u", "arn:s"), Some(&mine)),
            Ok(Verdict::Manage)
        );
    }

    #[test]
    fn a_role_of_another_database_is_refused_even_with_adopt_or_proof() {
        let theirs = marked("b", RoleKind::User, Some("arn:s"));
        let claim = Claim {
            adopt: true,
            proven: true,
            ..user("u", "arn:s")
        };
        let err = judge("a", "admin", &claim, Some(&theirs)).unwrap_err();
        assert!(
            matches!(err, OwnershipError::OtherDatabase { ref database, .. } if database == "b")
        );
        assert!(
            err.to_string()
                .contains("user u is managed by db-setup for database b")
        );
    }

    #[test]
    fn another_secret_of_the_same_database_needs_proof_or_adopt() {
        let other = marked("a", RoleKind::User, Some("arn:old"));
        let err = judge("a", "admin", &user("u", "arn:new"), Some(&other)).unwrap_err();
        assert!(
            err.to_string().contains("another secret (arn:old)"),
            "{err}"
        );
        let proven = Claim {
            proven: true,
            ..user("u", "arn:new")
        };
        assert!(matches!(
            judge("a", "admin", &proven, Some(&other)),
            Ok(Verdict::Adopt(_))
        ));
        let adopt = Claim {
            adopt: true,
            ..user("u", "arn:new")
        };
        assert!(matches!(
            judge("a", "admin", &adopt, Some(&other)),
            Ok(Verdict::Adopt(_))
        ));
    }

    #[test]
    fn an_unmarked_user_is_taken_only_with_proof_or_adopt() {
        let hand_made = ExistingRole {
            name: "u".into(),
            can_login: true,
            ..ExistingRole::default()
        };
        let err = judge("a", "admin", &user("u", "arn:s"), Some(&hand_made)).unwrap_err();
        assert!(matches!(err, OwnershipError::NotOurs { .. }));
        assert!(err.to_string().contains("\"adopt\": true"), "{err}");
        for claim in [
            Claim {
                proven: true,
                ..user("u", "arn:s")
            },
            Claim {
                adopt: true,
                ..user("u", "arn:s")
            },
        ] {
            assert!(matches!(
                judge("a", "admin", &claim, Some(&hand_made)),
                Ok(Verdict::Adopt(_))
            ));
        }
    }

    #[test]
    fn an_unmarked_group_is_adopted_only_when_nobody_else_is_in_it() {
        let own = vec!["u1".to_string(), "admin".to_string()];
        let group = |members: &[&str]| ExistingRole {
            name: "g".into(),
            members: members.iter().map(|m| m.to_string()).collect(),
            ..ExistingRole::default()
        };
        let claim = Claim {
            name: "g",
            kind: RoleKind::Group,
            secret: None,
            adopt: false,
            proven: false,
            own_members: &own,
        };
        assert!(matches!(
            judge("a", "admin", &claim, Some(&group(&["u1", "admin"]))),
            Ok(Verdict::Adopt(_))
        ));
        let err = judge("a", "admin", &claim, Some(&group(&["u1", "b_user"]))).unwrap_err();
        assert!(
            err.to_string()
                .contains("other roles are members of it (b_user)"),
            "{err}"
        );
        assert!(err.to_string().contains("DB_SETUP_ROLE_PREFIX"), "{err}");
        let adopt = Claim {
            adopt: true,
            ..claim.clone()
        };
        assert!(matches!(
            judge("a", "admin", &adopt, Some(&group(&["b_user"]))),
            Ok(Verdict::Adopt(_))
        ));
        let login = ExistingRole {
            can_login: true,
            ..group(&[])
        };
        assert!(matches!(
            judge("a", "admin", &claim, Some(&login)),
            Err(OwnershipError::LoginGroup { .. })
        ));
    }

    #[test]
    fn the_admin_and_privileged_roles_are_never_managed() {
        let claim = Claim {
            adopt: true,
            proven: true,
            ..user("master", "arn:s")
        };
        assert!(matches!(
            judge("a", "master", &claim, None),
            Err(OwnershipError::IsAdmin { .. })
        ));
        let powerful = ExistingRole {
            name: "u".into(),
            can_login: true,
            privileged: vec!["SUPERUSER", "BYPASSRLS"],
            ..marked("a", RoleKind::User, Some("arn:s"))
        };
        let err = judge(
            "a",
            "admin",
            &Claim {
                adopt: true,
                ..user("u", "arn:s")
            },
            Some(&powerful),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "user u exists with SUPERUSER, BYPASSRLS: db-setup never manages a privileged role as an application role; choose another name"
        );
    }

    #[test]
    fn a_group_marked_as_a_user_is_refused() {
        let as_user = marked("a", RoleKind::User, Some("arn:s"));
        let claim = Claim {
            name: "g",
            kind: RoleKind::Group,
            secret: None,
            adopt: false,
            proven: false,
            own_members: &[],
        };
        let as_user = ExistingRole {
            can_login: false,
            ..as_user
        };
        assert!(matches!(
            judge("a", "admin", &claim, Some(&as_user)),
            Err(OwnershipError::OtherKind { .. })
        ));
    }
}
