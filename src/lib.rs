//! db-setup: deploy-time PostgreSQL setup for AWS CDK stacks.
//!
//! The crate is a pure core (parsing, planning, role SQL, response bodies)
//! wrapped in a thin shell (PostgreSQL, Secrets Manager, HTTP). Start at
//! [`migrate`] for the migration engine.

pub mod db;
pub mod duration;
pub mod migrate;
pub mod secret;
