//! `tally-lambda`: the event-driven layers as one AWS Lambda function (`provided.al2023`),
//! built with `--features lambda`. It answers three kinds of events:
//!
//! - S3 `ObjectCreated` on the raw prefix: the object is validated into the validated prefix;
//! - S3 `ObjectCreated` on the validated prefix: the object is tracked in the state store;
//! - an EventBridge scheduled event: a scheduler pass (EMR steps), then a monitor pass.
//!
//! Configuration comes from the environment: `TALLY_STATE` (a URL, `env:NAME` or a Secrets
//! Manager ARN), `TALLY_RAW_PREFIX`, `TALLY_VALIDATED_PREFIX`, and optionally
//! `TALLY_MAX_BAD_ROWS`, `TALLY_EMR_TAG` (`key=value`, default `edba=true`),
//! `TALLY_EMR_TALLY_PATH` (default `/usr/local/bin/tally`), `TALLY_STEP_STATE`,
//! `TALLY_LEASE_SECS` (default 300) and `TALLY_CRITERIA_TIMEOUT_SECS` (default 30). Logs are
//! JSON lines. A failure returns an error, so Lambda's retries and the dead-letter queue apply.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context};
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use aws_lambda_events::event::s3::S3Event;
use lambda_runtime::{service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use tally::control::events::{on_object_created, on_schedule, Folders};
use tally::control::{Executor, ScheduleOptions};
use tally::layout::LayoutSet;
use tally::secrets::resolve_url;
use tally::state::{s3_object_url, StateStore};

/// What every invocation shares: the configuration and the open state store.
struct Function {
    config: Folders,
    store: StateStore,
    schedule: ScheduleOptions,
    emr: aws_sdk_emr::Client,
}

fn env(name: &str) -> anyhow::Result<String> {
    std::env::var(name).with_context(|| format!("the function's environment has no {name}"))
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_string())
}

fn env_number(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(text) => text
            .trim()
            .parse()
            .with_context(|| format!("{name}=`{text}` is not a number")),
        Err(_) => Ok(default),
    }
}

impl Function {
    async fn from_env() -> anyhow::Result<Function> {
        let state_url = resolve_url(&env("TALLY_STATE")?)
            .await
            .context("cannot find the state store URL (TALLY_STATE)")?;
        let store = StateStore::connect(&state_url).await?;
        let aws = tally::aws::config_loader().load().await;
        let emr = aws_sdk_emr::Client::new(&aws);
        let (tag_key, tag_value) = env_or("TALLY_EMR_TAG", "edba=true")
            .split_once('=')
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .ok_or_else(|| anyhow!("TALLY_EMR_TAG must be key=value"))?;
        Ok(Function {
            config: Folders {
                raw: env("TALLY_RAW_PREFIX")?,
                validated: env("TALLY_VALIDATED_PREFIX")?,
                max_bad_rows: std::env::var("TALLY_MAX_BAD_ROWS")
                    .ok()
                    .map(|t| t.trim().parse())
                    .transpose()
                    .context("TALLY_MAX_BAD_ROWS is not a number")?,
                layouts: LayoutSet::embedded(),
            },
            store,
            schedule: ScheduleOptions {
                executor: Executor::Emr {
                    client: emr.clone(),
                    tag_key,
                    tag_value,
                    tally_path: env_or("TALLY_EMR_TALLY_PATH", "/usr/local/bin/tally"),
                },
                state_url,
                step_state: std::env::var("TALLY_STEP_STATE").ok(),
                lease: Duration::from_secs(env_number("TALLY_LEASE_SECS", 300)?),
                criteria_timeout: Duration::from_secs(env_number(
                    "TALLY_CRITERIA_TIMEOUT_SECS",
                    30,
                )?),
            },
            emr,
        })
    }

    /// One invocation: S3 records, or a scheduled event.
    async fn handle_event(&self, event: LambdaEvent<Value>) -> anyhow::Result<Value> {
        let payload = event.payload;
        if payload.get("Records").is_some() {
            let s3: S3Event =
                serde_json::from_value(payload).context("not an S3 event notification")?;
            let mut actions = Vec::with_capacity(s3.records.len());
            for record in &s3.records {
                let (Some(bucket), Some(key)) = (
                    record.s3.bucket.name.as_deref(),
                    record.s3.object.key.as_deref(),
                ) else {
                    return Err(anyhow!("an S3 record has no bucket name or object key"));
                };
                let url = s3_object_url(bucket, key);
                let action =
                    on_object_created(&self.config, &self.store, &url, record.event_time).await?;
                tracing::info!(url = %url, action = ?action, "object handled");
                actions.push(action);
            }
            return Ok(json!({ "objects": actions }));
        }
        if payload.get("detail-type").is_some() {
            let scheduled: EventBridgeEvent<Value> =
                serde_json::from_value(payload).context("not an EventBridge event")?;
            tracing::info!(detail_type = %scheduled.detail_type, "scheduled pass");
            let pass = on_schedule(&self.store, &self.schedule, &self.emr).await?;
            return Ok(serde_json::to_value(pass)?);
        }
        Err(anyhow!(
            "unknown event: neither S3 records nor an EventBridge scheduled event"
        ))
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TALLY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_current_span(false)
        .without_time()
        .init();
    let function = Arc::new(Function::from_env().await.map_err(|e| format!("{e:#}"))?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let function = Arc::clone(&function);
        async move { function.handle(event).await }
    }))
    .await
}

impl Function {
    /// One invocation, its error logged and returned to the runtime as its text.
    async fn handle(self: Arc<Self>, event: LambdaEvent<Value>) -> Result<Value, Error> {
        self.handle_event(event).await.map_err(|e| {
            // Logged, then returned: Lambda retries the event and, past its retries, sends it to
            // the dead-letter queue.
            tracing::error!(error = %format!("{e:#}"), "event failed");
            Error::from(format!("{e:#}"))
        })
    }
}
