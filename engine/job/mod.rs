//! SQL-defined jobs: their definitions ([`definition`]) and how their SQL runs over the input
//! files ([`execute`]), with the SQL functions tally adds ([`functions`]) and the plan rewrites
//! for inputs read in key order ([`ordering`]). Delivering the rows to sinks and reporting the run is [`crate::run`].

pub mod definition;
pub mod execute;
pub mod functions;
pub mod ordering;

pub use definition::{DefinitionError, JobCatalog, JobDefinition, OutputSpec, SinkSpec};
pub use execute::{
    explain_job, find_inputs, output_schema, run_job, RowObserver, RunError, RunRequest, RunResult,
    RunSummary,
};
