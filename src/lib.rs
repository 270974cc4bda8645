//! db-setup: deploy-time PostgreSQL setup for AWS CDK stacks, as a
//! CloudFormation custom resource Lambda.
//!
//! The flow, top-down from `main`:
//!
//! ```text
//! event JSON ─> event      what was asked: a CloudFormation request or a manual action
//!            ─> handler    decide, run under a deadline and a panic guard, answer
//!                 ├─> config    environment, validated once at start
//!                 ├─> secrets   Secrets Manager behind a trait; the RDS secret JSON
//!                 ├─> db        connecting: TLS, the RDS CA bundle, timeouts
//!                 ├─> migrate   embedded set → plan (pure) → runner (PostgreSQL) → report
//!                 ├─> users     role templates → SQL (pure); the credentials protocol
//!                 ├─> verify    declared schema items vs the catalog
//!                 └─> insight   maintenance findings from the catalog and statistics views
//!            ─> respond    the CloudFormation response (≤ 4096 bytes) and its delivery
//! ```
//! [`work`] ties the boundaries together for the handler.

pub mod config;
pub mod db;
pub mod defaults;
pub mod duration;
pub mod error;
pub mod event;
pub mod handler;
pub mod insight;
pub mod migrate;
pub mod pg;
pub mod redacted;
pub mod respond;
pub mod secrets;
pub mod users;
pub mod verify;
pub mod work;
