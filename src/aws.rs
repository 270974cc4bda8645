//! What the AWS boundaries ([`crate::secrets`], [`crate::snapshot`]) share:
//! an AccessDenied retried while IAM propagates, and the text of an SDK
//! error (its code and message, never a request's content).

use std::future::Future;
use std::time::Duration;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use tracing::warn;

/// An AccessDenied is retried this many times (IAM changes made in the same
/// deploy can take seconds to reach the function), after 1 s, then 2 s.
pub const ACCESS_DENIED_RETRIES: u32 = 2;

/// Runs `call` (`operation` on `resource`) until it succeeds, fails
/// otherwise, or has been denied `retries` times more than once; `denied`
/// tells an AccessDenied. Each retry is logged.
pub(crate) async fn retry_denied<T, Er, Fut>(
    retries: u32,
    denied: impl Fn(&Er) -> bool,
    resource: &str,
    operation: &'static str,
    mut call: impl FnMut() -> Fut,
) -> Result<T, Er>
where
    Fut: Future<Output = Result<T, Er>>,
{
    let mut attempt = 0;
    loop {
        match call().await {
            Err(e) if denied(&e) && attempt < retries => {
                attempt += 1;
                warn!(
                    resource,
                    operation, attempt, "access denied, retrying (IAM may still be propagating)"
                );
                tokio::time::sleep(Duration::from_secs(attempt.into())).await;
            }
            result => return result,
        }
    }
}

/// The error code AWS returned, if any.
pub(crate) fn code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<String> {
    e.code().map(str::to_string)
}

/// What the service or the network said: `code: message`, else the error chain.
pub(crate) fn message<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    match (e.code(), e.message()) {
        (Some(c), Some(m)) => format!("{c}: {m}"),
        (Some(c), None) => c.to_string(),
        _ => crate::db::error_chain(e),
    }
}
