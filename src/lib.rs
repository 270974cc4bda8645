//! db-setup: deploy-time PostgreSQL setup for AWS CDK stacks, as a
//! CloudFormation custom resource Lambda.
//!
//! The flow, top-down from `main`:
//!
//! ```text
//! event JSON ─> event      what was asked: a CloudFormation request or a manual action
//!            ─> handler    decide, run the Work under a deadline and a panic guard, answer
//!            ─> work       the production Work: reads the admin secret, connects, sequences the steps
//!                 ├─> config    environment, validated once at start (defaults: one home)
//!                 ├─> secrets   Secrets Manager behind a trait; the RDS secret JSON
//!                 ├─> db        connecting: TLS, the RDS CA bundle, timeouts, pipelining
//!                 ├─> snapshot  an RDS snapshot before migrating (opt-in), RDS behind a trait
//!                 ├─> migrate   embedded set → plan (pure) → runner (PostgreSQL) → report
//!                 ├─> users     ownership (pure) · role SQL (pure) · credentials protocol · apply
//!                 ├─> verify    declared schema items and the full catalog vs the database
//!                 ├─> insight   maintenance findings from the catalog and statistics views
//!                 └─> fleet     many databases: the bounded fan-out
//!            ─> respond    the CloudFormation response (≤ 4096 bytes) and its delivery
//!            ─> metrics    one CloudWatch EMF record per CloudFormation request
//! ```
//! Shared by all: [`aws`] (what the AWS boundaries share), [`pg`] (what PostgreSQL said, SQLSTATEs, quoting),
//! [`redacted`] (a string that is never printed), [`duration`], [`error`].

pub mod aws;
pub mod config;
pub mod continuation;
pub mod db;
pub mod defaults;
pub mod duration;
pub mod error;
pub mod event;
pub mod fleet;
pub mod handler;
pub mod insight;
pub mod invoke;
pub mod metrics;
pub mod migrate;
pub mod pg;
pub mod redacted;
pub mod respond;
pub mod secrets;
pub mod snapshot;
pub mod users;
pub mod verify;
pub mod work;
