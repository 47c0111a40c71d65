//! Running a job end to end, as one library operation: the job's rows computed over its input,
//! delivered to its sinks, and the run reported to the state store.
//!
//! ```no_run
//! # async fn example(request: tally::job::RunRequest) -> Result<(), tally::run::RunFailed> {
//! use tally::run::Run;
//! use tally::sinks::target::SinkTarget;
//!
//! let outcome = Run::new(request)
//!     .with_sink(SinkTarget::Warehouse {
//!         reference: "sqlite://warehouse.db".into(),
//!         create_table: true,
//!     })
//!     .await?;
//! println!("{} rows, Hudi instant {:?}", outcome.rows.summary.rows_out, outcome.hudi_instant());
//! # Ok(()) }
//! ```
//!
//! Invariants:
//! - with a state store ([`Run::report_to`]), the run records itself RUNNING before it reads
//!   anything, keeps a heartbeat while it works, and ends COMPLETED or FAILED; every failure
//!   after the start (a sink that cannot even be opened included) is recorded;
//! - sinks are staged all, then published (see [`crate::sinks::deliver`]): a run that fails
//!   before publishing leaves every sink as it was;
//! - no secret of the run's URLs appears in what it returns or stores: the failure's text, the
//!   error recorded in `job_runs.error` and the sink reports pass through one [`Scrubber`].

pub mod panic_report;

use std::collections::BTreeMap;
use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::{run_job, RunError, RunRequest, RunResult};
use crate::progress::Progress;
use crate::secrets::{Scrubber, SecretError};
use crate::sinks::target::SinkTarget;
use crate::sinks::{deliver, DeliveryError, JobRows, Sink, SinkReport};
use crate::state::{RunCounts, StateError, StateStore};

/// How often a running job tells the state store it is alive (its lease is a few of these).
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(30);

/// A job run: what to compute, where the rows go, who hears about it. Built with `with_*`
/// methods, started by `.await` (or [`Run::execute`]).
pub struct Run {
    request: RunRequest,
    targets: Vec<SinkTarget>,
    reporting: Option<Reporting>,
    progress: Progress,
    scrub: Scrubber,
}

/// The state store a run reports to.
struct Reporting {
    store: StateStore,
    /// The store's URL: the heartbeat keeps its own connection.
    url: String,
    job_config_id: Option<String>,
}

/// What a successful run did.
#[derive(Debug)]
pub struct RunOutcome {
    /// The run's id in the state store, when it reported to one.
    pub run_id: Option<String>,
    /// The rows and the figures of what was read.
    pub rows: RunResult,
    /// One report per sink, in the order they were given; targets carry no secret.
    pub sinks: Vec<SinkReport>,
    /// Taken just before the input was listed: the job's new watermark.
    pub inputs_listed_at: DateTime<Utc>,
    /// Knows the run's secrets, to mask anything else the caller prints.
    pub scrub: Scrubber,
}

impl RunOutcome {
    /// The Hudi instant the run committed, if it wrote a Hudi table and something changed.
    pub fn hudi_instant(&self) -> Option<&str> {
        self.sinks.iter().find_map(SinkReport::hudi_instant)
    }

    /// Statements to run after this one (Athena's `ALTER TABLE ... ADD PARTITION`).
    pub fn follow_up_sql(&self) -> impl Iterator<Item = &str> {
        self.sinks
            .iter()
            .flat_map(|r| r.follow_up_sql())
            .map(String::as_str)
    }

    /// The counts the state store keeps for a completed run.
    pub fn counts(&self) -> RunCounts {
        let s = &self.rows.summary;
        RunCounts {
            rows_in: s.rows_in,
            bad_rows: s.bad_rows,
            rows_out: s.rows_out,
            hudi_instant: self.hudi_instant().map(str::to_string),
            inputs_listed_at: Some(self.inputs_listed_at),
        }
    }
}

/// The step of a run that failed.
#[derive(Debug, thiserror::Error)]
pub enum RunStepError {
    /// A sink named by reference could not be found (`env:NAME` unset, a secret unreadable).
    #[error("cannot find the warehouse URL: {0}")]
    SinkReference(#[source] SecretError),
    #[error(transparent)]
    Job(#[from] RunError),
    #[error(transparent)]
    Delivery(#[from] DeliveryError),
    #[error(transparent)]
    State(#[from] StateError),
}

/// A failed run. Its text is the error with its causes, every secret masked: print it, not
/// [`cause`](Self::cause), whose text may hold the run's URLs.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RunFailed {
    /// The error and its causes on one line, secrets masked (what `job_runs.error` holds).
    pub message: String,
    /// The run's id in the state store, when it was recorded.
    pub run_id: Option<String>,
    /// What failed.
    pub cause: RunStepError,
}

impl Run {
    pub fn new(request: RunRequest) -> Run {
        Run {
            request,
            targets: Vec::new(),
            reporting: None,
            progress: Progress::hidden(),
            scrub: Scrubber::default(),
        }
    }

    /// Adds a sink; sinks are published in the order they are added.
    pub fn with_sink(mut self, target: SinkTarget) -> Run {
        self.targets.push(target);
        self
    }

    /// Reports the run to this state store (`url` is the store's own, resolved URL), on behalf
    /// of a job configuration row when one is given.
    pub fn report_to(mut self, store: StateStore, url: &str, job_config_id: Option<&str>) -> Run {
        self.scrub.add_url(url);
        self.reporting = Some(Reporting {
            store,
            url: url.to_string(),
            job_config_id: job_config_id.map(str::to_string),
        });
        self
    }

    /// Shows progress bars here.
    pub fn with_progress(mut self, progress: Progress) -> Run {
        self.progress = progress;
        self
    }

    /// Starts from a scrubber that already knows secrets (the caller's other URLs).
    pub fn with_scrubber(mut self, scrub: Scrubber) -> Run {
        self.scrub = scrub;
        self
    }

    /// Runs: reports RUNNING, computes, delivers, reports COMPLETED or FAILED.
    pub async fn execute(mut self) -> Result<RunOutcome, RunFailed> {
        let Some(reporting) = self.reporting.take() else {
            let mut scrub = self.scrub.clone();
            return self
                .compute_and_deliver(&mut scrub)
                .await
                .map_err(|cause| failed(cause, None, &scrub));
        };
        let province = self.request.params.get("province").cloned();
        let config_id = reporting.job_config_id.as_deref();
        let run_id = match reporting
            .store
            .start_run(&self.request.job.name, config_id, province.as_deref())
            .await
        {
            Ok(id) => id,
            Err(e) => return Err(failed(e.into(), None, &self.scrub)),
        };
        let heartbeat = spawn_heartbeat(reporting.url.clone(), run_id.clone());
        panic_report::running(panic_report::RunningRun {
            state_url: reporting.url.clone(),
            run_id: run_id.clone(),
            job_config_id: reporting.job_config_id.clone(),
            scrub: self.scrub.clone(),
        });
        let mut scrub = self.scrub.clone();
        let outcome = self.compute_and_deliver(&mut scrub).await;
        heartbeat.abort();
        let recorded = match &outcome {
            Ok(done) => {
                reporting
                    .store
                    .complete_run(&run_id, config_id, &done.counts())
                    .await
            }
            Err(e) => {
                let message = scrubbed_chain(e, &scrub);
                reporting.store.fail_run(&run_id, config_id, &message).await
            }
        };
        panic_report::finished(&run_id);
        reporting.store.close().await;
        let run_id = Some(run_id);
        match (outcome, recorded) {
            (Ok(mut done), Ok(())) => {
                done.run_id = run_id;
                Ok(done)
            }
            (Err(cause), _) => Err(failed(cause, run_id, &scrub)),
            (Ok(_), Err(e)) => Err(failed(e.into(), run_id, &scrub)),
        }
    }

    /// The run without its reporting: open the sinks, compute the rows, deliver them.
    async fn compute_and_deliver(self, scrub: &mut Scrubber) -> Result<RunOutcome, RunStepError> {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::with_capacity(self.targets.len());
        for target in self.targets {
            sinks.push(
                target
                    .open(scrub)
                    .await
                    .map_err(RunStepError::SinkReference)?,
            );
        }
        // Opening the sinks taught the scrubber their secrets: a panic's message is scrubbed of
        // them too.
        panic_report::knows(scrub);
        // Taken just before the input is listed: a file validated after it may or may not have
        // been read, so it counts as new for the next run (never as processed without being read).
        let inputs_listed_at = Utc::now();
        // Sinks that can write while the query runs see the rows as they are made.
        let observers: Vec<_> = sinks
            .iter()
            .filter_map(|sink| sink.observe(&self.request.job))
            .collect();
        let rows = run_job(&self.request, &self.progress, &observers).await?;
        drop(observers);
        let job_rows = JobRows {
            job: &self.request.job,
            schema: rows.schema.clone(),
            batches: &rows.batches,
        };
        // The sinks free and allocate buffers of the same sizes over and over: kept, not handed
        // back to the OS and faulted in again (crate::memory).
        let keep_freed_memory = crate::memory::KeepFreedMemory::new();
        let delivered = deliver(&job_rows, &sinks).await;
        drop(keep_freed_memory);
        let mut reports = delivered?;
        for r in &mut reports {
            r.target = scrub.scrub(&r.target).into_owned();
        }
        Ok(RunOutcome {
            run_id: None,
            rows,
            sinks: reports,
            inputs_listed_at,
            scrub: scrub.clone(),
        })
    }
}

impl IntoFuture for Run {
    type Output = Result<RunOutcome, RunFailed>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.execute())
    }
}

/// Keeps the run's heartbeat fresh on a connection of its own until aborted.
fn spawn_heartbeat(url: String, run_id: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(store) = StateStore::connect(&url).await else {
            return;
        };
        loop {
            tokio::time::sleep(HEARTBEAT_EVERY).await;
            if let Err(e) = store.heartbeat(&run_id).await {
                tracing::warn!(error = %e, "heartbeat failed");
            }
        }
    })
}

/// The error and its sources, `a: b: c`, with the run's secrets masked.
fn scrubbed_chain(e: &RunStepError, scrub: &Scrubber) -> String {
    scrub.scrub(&crate::error_chain(e)).into_owned()
}

fn failed(cause: RunStepError, run_id: Option<String>, scrub: &Scrubber) -> RunFailed {
    RunFailed {
        message: scrubbed_chain(&cause, scrub),
        run_id,
        cause,
    }
}

/// `name=value` pairs on one line, for summaries.
pub fn describe_params(params: &BTreeMap<String, String>) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}
