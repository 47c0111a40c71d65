//! Where a run writes, as data: the sinks a run is asked for, opened inside the run so that a
//! target that cannot be opened (a warehouse reference whose secret is missing) fails the run
//! the state store records, like any other failure after it started.

use std::path::PathBuf;

use super::file::FileSink;
use super::hudi::{HudiSink, UpsertOptions};
use super::warehouse::WarehouseSink;
use super::Sink;
use crate::output::OutputFormat;
use crate::secrets::{resolve_url, Scrubber, SecretError};

/// One sink a run writes to.
pub enum SinkTarget {
    /// The job's Hudi table at this URL (created on the first write).
    Hudi { url: String, options: UpsertOptions },
    /// The job's warehouse table: a URL, or where it is (`env:NAME`, a Secrets Manager ARN).
    Warehouse {
        reference: String,
        /// Create the table when it is missing.
        create_table: bool,
    },
    /// A local file in an output format.
    File { path: PathBuf, format: OutputFormat },
    /// Any other sink (tests, extensions).
    Custom(Box<dyn Sink>),
}

impl SinkTarget {
    /// Opens the sink; a resolved URL's secrets join the scrubber before anything can print it.
    pub async fn open(self, scrub: &mut Scrubber) -> Result<Box<dyn Sink>, SecretError> {
        Ok(match self {
            SinkTarget::Hudi { url, options } => Box::new(HudiSink { url, options }),
            SinkTarget::Warehouse {
                reference,
                create_table,
            } => {
                scrub.add_url(&reference);
                let url = resolve_url(&reference).await?;
                scrub.add_url(&url);
                Box::new(WarehouseSink::new(&url, create_table))
            }
            SinkTarget::File { path, format } => Box::new(FileSink { path, format }),
            SinkTarget::Custom(sink) => sink,
        })
    }
}
