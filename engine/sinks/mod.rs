//! Sinks: where a job's rows go. Each sits behind one small trait with a two-phase protocol, so a
//! run can prepare every sink before it makes any of them visible:
//!
//! 1. [`Sink::stage`] writes whatever it can without readers seeing it (a Hudi instant's base
//!    files, a warehouse staging table) and returns a [`StagedWrite`];
//! 2. [`StagedWrite::publish`] makes it visible in one atomic step (the Hudi `.commit` file, the
//!    warehouse transaction's COMMIT), or [`StagedWrite::discard`] removes every trace.

pub mod hudi;
pub mod warehouse;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde::Serialize;

use crate::job::JobDefinition;

/// A job's result rows, with the definition that says what they are.
pub struct JobRows<'a> {
    pub job: &'a JobDefinition,
    pub schema: SchemaRef,
    pub batches: &'a [RecordBatch],
}

/// What a sink did, for the run summary.
#[derive(Debug, Clone, Serialize)]
pub struct SinkReport {
    /// `hudi`, `warehouse`, ...
    pub sink: String,
    /// Where the rows went.
    pub target: String,
    /// One human line.
    pub summary: String,
    /// Sink-specific figures (instant, files written, partitions created, ...).
    pub details: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
#[error("{sink} sink ({target}): {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub target: String,
    pub message: String,
}

/// One destination for a job's rows.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Writes the rows invisibly; nothing changes for readers until the result is published.
    async fn stage(&self, rows: &JobRows<'_>) -> Result<Box<dyn StagedWrite>, SinkError>;
}

/// Rows written but not yet visible.
#[async_trait]
pub trait StagedWrite: Send {
    /// Makes the write visible in one atomic step.
    async fn publish(self: Box<Self>) -> Result<SinkReport, SinkError>;
    /// Removes everything the write staged.
    async fn discard(self: Box<Self>) -> Result<(), SinkError>;
}

/// Delivers a job's rows to every sink: stages all of them first, and publishes only when every
/// stage succeeded; otherwise discards what was staged, so a failed run leaves each sink as it
/// was.
pub async fn deliver(
    rows: &JobRows<'_>,
    sinks: &[Box<dyn Sink>],
) -> Result<Vec<SinkReport>, SinkError> {
    let mut staged: Vec<Box<dyn StagedWrite>> = Vec::with_capacity(sinks.len());
    for sink in sinks {
        match sink.stage(rows).await {
            Ok(s) => staged.push(s),
            Err(e) => {
                for s in staged {
                    if let Err(d) = s.discard().await {
                        tracing::error!(error = %d, "could not discard a staged write");
                    }
                }
                return Err(e);
            }
        }
    }
    let mut reports = Vec::with_capacity(staged.len());
    for s in staged {
        reports.push(s.publish().await?);
    }
    Ok(reports)
}
