//! The Lambda boundary: the function invokes itself asynchronously to
//! continue a chain of invocations (see [`crate::continuation`]).

use std::future::Future;
use std::pin::Pin;

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

/// A boxed future, so that the handler can hold any [`Invoker`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Starts an asynchronous invocation of a function.
pub trait Invoker: Send + Sync + 'static {
    /// Queues `payload` for `function` (name or ARN) and returns once Lambda
    /// accepted it; the error is Lambda's message.
    fn invoke_async<'a>(
        &'a self,
        function: &'a str,
        payload: String,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// The function to invoke for an invocation of `invoked_arn`
/// (`arn:aws:lambda:<region>:<account>:function:<name>[:qualifier]`): its
/// name, with the qualifier when there is one (the same version or alias),
/// which the SDK resolves in the function's own account and region, as
/// Lambda and the local emulator (which knows functions by name only) both
/// accept. When `invoked_arn` is no function ARN (`cargo lambda watch` sends
/// a placeholder), `own_name` (`AWS_LAMBDA_FUNCTION_NAME`) when known.
pub fn function_name(invoked_arn: &str, own_name: Option<&str>) -> String {
    let parts: Vec<&str> = invoked_arn.split(':').collect();
    match parts.as_slice() {
        ["arn", _, "lambda", _, _, "function", name] if !name.is_empty() => name.to_string(),
        ["arn", _, "lambda", _, _, "function", name, qualifier] if !name.is_empty() => {
            format!("{name}:{qualifier}")
        }
        _ => own_name.unwrap_or(invoked_arn).to_string(),
    }
}

/// A short account of an Invoke failure: what Lambda said, or why it could
/// not be reached.
fn describe<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> String
where
    R: std::fmt::Debug,
{
    match e {
        SdkError::ServiceError(service) => {
            let err = service.err();
            format!(
                "Lambda refused the Invoke call: {} ({})",
                err.message().unwrap_or("no message"),
                err.code().unwrap_or("no error code")
            )
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            "the Lambda API could not be reached (in isolated subnets the function needs a Lambda interface \
             endpoint, or a NAT route)"
                .to_string()
        }
        other => format!("the Invoke call failed: {other}"),
    }
}

/// [`Invoker`] over the AWS SDK (`lambda:InvokeFunction`, `InvocationType=Event`).
pub struct LambdaInvoker {
    client: aws_sdk_lambda::Client,
}

impl LambdaInvoker {
    /// Wraps a client built once in `main`.
    pub fn new(client: aws_sdk_lambda::Client) -> Self {
        LambdaInvoker { client }
    }
}

impl Invoker for LambdaInvoker {
    fn invoke_async<'a>(
        &'a self,
        function: &'a str,
        payload: String,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let sent = self
                .client
                .invoke()
                .function_name(function)
                .invocation_type(InvocationType::Event)
                .payload(Blob::new(payload.into_bytes()))
                .send()
                .await
                .map_err(|e| describe(&e))?;
            match sent.status_code() {
                202 => Ok(()),
                other => Err(format!(
                    "Lambda answered status {other} instead of 202 (accepted)"
                )),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::function_name;

    #[test]
    fn the_function_is_invoked_by_its_name() {
        let own = Some("own");
        assert_eq!(
            function_name(
                "arn:aws:lambda:eu-west-1:123456789012:function:db-setup",
                own
            ),
            "db-setup"
        );
        assert_eq!(
            function_name(
                "arn:aws:lambda:eu-west-1:123456789012:function:db-setup:live",
                own
            ),
            "db-setup:live"
        );
        assert_eq!(function_name("function-arn", own), "own");
        assert_eq!(function_name("function-arn", None), "function-arn");
        assert_eq!(function_name("arn:aws:lambda:x:1:function:", own), "own");
    }
}
