//! SQL-defined jobs: their definitions ([`definition`]) and how they run ([`run`]).

pub mod definition;
pub mod run;

pub use definition::{DefinitionError, JobCatalog, JobDefinition, OutputSpec, SinkSpec};
pub use run::{
    explain_job, find_inputs, output_schema, run_job, RunError, RunRequest, RunResult, RunSummary,
};
