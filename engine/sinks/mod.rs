//! Sinks: where a job's rows go. Each sits behind one small trait with a two-phase protocol, so a
//! run can prepare every sink before it makes any of them visible:
//!
//! 1. [`Sink::stage`] writes whatever it can without readers seeing it (a Hudi instant's base
//!    files, a warehouse staging table) and returns a [`StagedWrite`];
//! 2. [`StagedWrite::publish`] makes it visible in one atomic step (the Hudi `.commit` file, the
//!    warehouse transaction's COMMIT), or [`StagedWrite::discard`] removes every trace.
//!
//! Publishing several sinks cannot be one atomic step. [`deliver`] publishes them in order and,
//! when one fails after another was published, discards every write not yet published and
//! returns [`DeliveryError::Partial`] naming what was published: the run is recorded FAILED with
//! that text, and since every sink upserts idempotently (an equal or older row never replaces a
//! stored one), the next run of the same inputs, which the scheduler retries, brings the sinks
//! back into agreement.
//!
//! A sink may also start before the query ends ([`Sink::observe`]: the SQLite warehouse loads
//! rows as they are made); what it writes early is staged like the rest, invisible until
//! published.
//!
//! The sinks: [`hudi`] (copy-on-write tables), [`warehouse`] (SQLite, PostgreSQL, Redshift) and
//! [`file`] (a local file). [`target`] names them as data, so a run opens them inside its
//! recorded lifetime.

pub mod file;
pub mod hudi;
pub mod target;
pub mod warehouse;

use async_trait::async_trait;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use serde::Serialize;

use crate::job::{JobDefinition, RowObserver};

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
    pub details: SinkDetails,
}

/// What each kind of sink reports beyond its summary line. Serialized without a tag: the
/// summary JSON of a run holds each sink's own fields under `details`.
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum SinkDetails {
    Hudi {
        figures: hudi::UpsertFigures,
        /// `ALTER TABLE ... ADD PARTITION` statements Athena needs for the partitions created.
        athena_add_partitions: Vec<String>,
    },
    Warehouse {
        table: String,
        rows: u64,
        /// Rows inserted or replaced (known over a connection, not through the Data API).
        #[serde(skip_serializing_if = "Option::is_none")]
        changed: Option<u64>,
        /// The Data API statement that loaded the rows.
        #[serde(skip_serializing_if = "Option::is_none")]
        statement_id: Option<String>,
    },
    File {
        path: String,
        rows: u64,
        bytes: u64,
    },
}

impl SinkReport {
    /// The Hudi instant this sink committed, if it is a Hudi sink that committed one.
    pub fn hudi_instant(&self) -> Option<&str> {
        match &self.details {
            SinkDetails::Hudi { figures, .. } => figures.instant.as_deref(),
            _ => None,
        }
    }

    /// Statements someone must run after this write (Athena's new partitions).
    pub fn follow_up_sql(&self) -> &[String] {
        match &self.details {
            SinkDetails::Hudi {
                athena_add_partitions,
                ..
            } => athena_add_partitions,
            _ => &[],
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{sink} sink ({target}): {message}")]
pub struct SinkError {
    pub sink: &'static str,
    pub target: String,
    pub message: String,
}

impl SinkError {
    /// A sink error whose message is `cause` and its sources ([`crate::error_chain`]) after an
    /// optional context: the library keeps typed causes, the run's summary a line.
    pub fn caused_by(
        sink: &'static str,
        target: impl Into<String>,
        context: Option<&str>,
        cause: &(dyn std::error::Error + 'static),
    ) -> SinkError {
        let chain = crate::error_chain(cause);
        SinkError {
            sink,
            target: target.into(),
            message: match context {
                Some(context) => format!("{context}: {chain}"),
                None => chain,
            },
        }
    }
}

/// One destination for a job's rows.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Writes the rows invisibly; nothing changes for readers until the result is published.
    async fn stage(&self, rows: &JobRows<'_>) -> Result<Box<dyn StagedWrite>, SinkError>;

    /// A sink that can start writing while the query still runs returns the observer the run
    /// shows the rows to as they are made; its `stage` then finishes that write (the rows it
    /// is given are the ones observed). Most sinks write everything in `stage`.
    fn observe(&self, _job: &JobDefinition) -> Option<Box<dyn RowObserver>> {
        None
    }
}

/// Rows written but not yet visible.
#[async_trait]
pub trait StagedWrite: Send {
    /// Makes the write visible in one atomic step.
    async fn publish(self: Box<Self>) -> Result<SinkReport, SinkError>;
    /// Removes everything the write staged.
    async fn discard(self: Box<Self>) -> Result<(), SinkError>;
}

/// Why a delivery failed, and whether any sink was already published.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Nothing was published: every sink is as it was.
    #[error(transparent)]
    NothingPublished(SinkError),
    /// Some sinks were published before another failed: they disagree until the same inputs
    /// run again.
    #[error(
        "{failed}; already published: {}; the sinks disagree until these inputs run again \
         (a scheduled job retries them)",
        published.join(", ")
    )]
    Partial {
        published: Vec<String>,
        #[source]
        failed: SinkError,
    },
}

impl DeliveryError {
    /// Sinks published before the failure (`hudi s3://...`).
    pub fn published(&self) -> &[String] {
        match self {
            DeliveryError::NothingPublished(_) => &[],
            DeliveryError::Partial { published, .. } => published,
        }
    }
}

/// Delivers a job's rows to every sink: stages all of them first, and publishes only when every
/// stage succeeded; otherwise discards what was staged, so a failed run leaves each sink as it
/// was. A publish that fails discards every write not yet published (see the module docs).
pub async fn deliver(
    rows: &JobRows<'_>,
    sinks: &[Box<dyn Sink>],
) -> Result<Vec<SinkReport>, DeliveryError> {
    // Sinks stage at the same time (a warehouse's statements run on its connection's thread
    // while the Hudi table encodes its files); the first failure, in sink order, is the error.
    let mut staged: Vec<Box<dyn StagedWrite>> = Vec::with_capacity(sinks.len());
    let mut failed: Option<SinkError> = None;
    for result in futures::future::join_all(sinks.iter().map(|sink| sink.stage(rows))).await {
        match result {
            Ok(s) => staged.push(s),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        discard_all(staged).await;
        return Err(DeliveryError::NothingPublished(e));
    }
    let mut reports: Vec<SinkReport> = Vec::with_capacity(staged.len());
    let mut pending = staged.into_iter();
    while let Some(next) = pending.next() {
        let result = if !reports.is_empty() && crate::failpoint_error("between-publishes") {
            discard_all(vec![next]).await;
            Err(SinkError {
                sink: "delivery",
                target: "-".into(),
                message: "failpoint `between-publishes`: the next publish failed".into(),
            })
        } else {
            next.publish().await
        };
        match result {
            Ok(report) => reports.push(report),
            Err(failed) => {
                discard_all(pending.collect()).await;
                if reports.is_empty() {
                    return Err(DeliveryError::NothingPublished(failed));
                }
                let published = reports
                    .iter()
                    .map(|r| format!("{} {}", r.sink, r.target))
                    .collect();
                return Err(DeliveryError::Partial { published, failed });
            }
        }
    }
    Ok(reports)
}

async fn discard_all(staged: Vec<Box<dyn StagedWrite>>) {
    for s in staged {
        if let Err(d) = s.discard().await {
            tracing::error!(error = %d, "could not discard a staged write");
        }
    }
}
