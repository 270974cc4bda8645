//! A stand-in for the work, for the handler's own guarantees: it succeeds,
//! hangs or panics as told, counting its calls.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use db_setup::config::ResponseMode;
use db_setup::continuation::Chain;
use db_setup::error::SetupError;
use db_setup::event::{Action, CfnRequest};
use db_setup::handler::{Deployed, Handler, Progress, Work};
use db_setup::respond::{Data, Responder};
use serde_json::Value;

#[derive(Clone, Copy)]
pub enum Behaviour {
    Succeed,
    Hang,
    Panic,
}

pub struct Scripted {
    pub behaviour: Behaviour,
    pub calls: Arc<AtomicUsize>,
}

impl Scripted {
    async fn run(&self, progress: Progress) -> Result<Data, SetupError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        progress.step("waiting for the migration lock");
        match self.behaviour {
            Behaviour::Succeed => Ok(Data {
                applied: Some(1),
                ..Data::default()
            }),
            Behaviour::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(Data::default())
            }
            Behaviour::Panic => panic!("a bug in the work"),
        }
    }
}

impl Work for Scripted {
    async fn deploy(
        &self,
        _request: CfnRequest,
        _chain: Chain,
        progress: Progress,
    ) -> Result<Deployed, SetupError> {
        self.run(progress).await.map(Deployed::Done)
    }

    async fn action(&self, _action: Action, progress: Progress) -> Result<Value, SetupError> {
        self.run(progress)
            .await
            .map(|data| serde_json::to_value(data).unwrap_or(Value::Null))
    }
}

/// A handler over a scripted work: margin 2 s, budget 300 s when the deadline is unknown.
pub fn handler(behaviour: Behaviour, mode: ResponseMode) -> (Handler<Scripted>, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut responder = Responder::new().expect("http client");
    responder.first_pause = Duration::from_millis(50);
    responder.allow_local = true;
    let h = Handler::new(
        Scripted {
            behaviour,
            calls: calls.clone(),
        },
        mode,
        responder,
        Duration::from_secs(2),
        Duration::from_secs(300),
    );
    (h, calls)
}

/// Milliseconds since the epoch, as Lambda writes deadlines.
pub fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
