//! The Lambda boundary: the function invokes itself asynchronously to
//! continue a chain of invocations (see [`crate::continuation`]).

use std::future::Future;
use std::pin::Pin;

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
                .map_err(|e| {
                    let e = aws_sdk_lambda::error::DisplayErrorContext(e);
                    e.to_string()
                })?;
            match sent.status_code() {
                202 => Ok(()),
                other => Err(format!(
                    "Lambda answered status {other} instead of 202 (accepted)"
                )),
            }
        })
    }
}
