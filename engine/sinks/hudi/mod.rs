//! The Hudi copy-on-write sink: tables Athena, Spark and hudi-rs read, written without a JVM.
//!
//! - [`table`]: `hoodie.properties`, partitions, base files; [`keys`]: record keys and
//!   partition paths as Hudi's key generators make them; [`parts`]: rows numbered across the
//!   query's batches and the key arrays, found without copying them into one;
//! - [`timeline`]: instants and which base files they make visible;
//! - [`upsert`]: one copy-on-write write, staged then published, in steps: [`open`] the table,
//!   [`plan`] which file group each row goes to, [`merge`] each group's new base file,
//!   [`commit`] the instant (prepare → commit with its conflict check, or abort);
//! - [`lock`]: one writer at a time; [`heartbeat`]: which pending instants have a live writer;
//! - [`rollback`], [`clean`], [`archive`]: the timeline's housekeeping, each an instant of its own
//!   ([`instant_avro`] writes their Avro bodies);
//! - [`athena`]: DDL and partition registration.

pub mod archive;
pub mod athena;
pub mod clean;
pub mod commit;
pub mod heartbeat;
pub mod instant_avro;
pub mod keys;
pub mod lock;
pub mod merge;
pub mod open;
pub mod parts;
pub mod plan;
pub mod properties;
pub mod rollback;
pub mod runs_chunk;
pub mod schema;
pub mod string_runs;
pub mod table;
pub mod timeline;
pub mod upsert;

use async_trait::async_trait;

pub use table::{HudiTable, TableConfig, TableError};
pub use upsert::{UpsertFigures, UpsertOptions};

use super::{JobRows, Sink, SinkError, SinkReport, StagedWrite};

/// Upserts a job's rows into the Hudi table at a URL (created on first write).
#[derive(Debug, Clone)]
pub struct HudiSink {
    pub url: String,
    pub options: UpsertOptions,
}

#[async_trait]
impl Sink for HudiSink {
    async fn stage(&self, rows: &JobRows<'_>) -> Result<Box<dyn StagedWrite>, SinkError> {
        let started = std::time::Instant::now();
        let staged = upsert::stage_upsert(&self.url, rows, &self.options)
            .await
            .map_err(|e| SinkError {
                sink: "hudi",
                target: self.url.clone(),
                message: e.to_string(),
            })?;
        Ok(match staged {
            upsert::Staged::Instant(s) => s,
            upsert::Staged::Unchanged(unchanged) => {
                let (figures, table) = *unchanged;
                Box::new(NothingToCommit(upsert::report(&table, &figures, started)))
            }
        })
    }
}

/// A staged write with nothing in it: the rows matched the table already.
struct NothingToCommit(SinkReport);

#[async_trait]
impl StagedWrite for NothingToCommit {
    async fn publish(self: Box<Self>) -> Result<SinkReport, SinkError> {
        Ok(self.0)
    }
    async fn discard(self: Box<Self>) -> Result<(), SinkError> {
        Ok(())
    }
}
