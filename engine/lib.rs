//! # tally
//!
//! A batch aggregation engine for event-driven retail analytics, built to replace a Spark step on
//! EMR. Franchise stores send cumulative point-of-sale files through the day; once a province has
//! reported, tally reads its validated files, runs a SQL-defined job on Apache DataFusion, and
//! writes exactly one row per record key to its sinks.
//!
//! The modules follow the pipeline:
//!
//! | stage | module |
//! |---|---|
//! | raw files → validated CSV | [`validate`], using the declared [`layout`]s and exact [`values`] |
//! | where files live (local, S3) | [`storage`] |
//! | validated files → one table | [`sources`] |
//! | SQL job definitions and execution | [`job`] |
//! | sinks: Hudi copy-on-write tables, warehouses, files | [`sinks`] |
//! | a run end to end: job → sinks, reported to the state store | [`run`] |
//! | SQL over a table's snapshot | [`query`] |
//! | runs, files and jobs on record | [`state`] |
//! | URLs that carry secrets: references, redaction | [`secrets`] |
//! | when jobs run (scheduling) | [`control`] |
//! | printing rows | [`output`] |
//! | the bundled end-to-end demo | [`demo`] |
//! | synthetic provinces for benchmarks | [`generate`] |
//!
//! Running the province job over a folder of validated files into a Hudi table and a SQLite
//! warehouse, reported to a state store:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use tally::job::{JobCatalog, RunRequest};
//! use tally::layout::LayoutSet;
//! use tally::run::Run;
//! use tally::sinks::target::SinkTarget;
//! use tally::state::StateStore;
//!
//! let job = JobCatalog::new("jobs", LayoutSet::embedded()).find("province_sales")?;
//! let request = RunRequest {
//!     job,
//!     params: [("province".to_string(), "IL".to_string())].into(),
//!     input: "validated/".to_string(),
//!     max_bad_rows: 0,
//!     memory_limit: None,
//!     cluster: None,
//! };
//! let state_url = "sqlite://.tally/state.db";
//! let outcome = Run::new(request)
//!     .with_sink(SinkTarget::Hudi {
//!         url: "tables/store_item_daily_sales".into(),
//!         options: Default::default(),
//!     })
//!     .with_sink(SinkTarget::Warehouse {
//!         reference: "sqlite://warehouse.db".into(),
//!         create_table: true,
//!     })
//!     .report_to(StateStore::connect(state_url).await?, state_url, None)
//!     .await?;
//! println!("{}", outcome.rows.summary.line());
//! # Ok(()) }
//! ```

pub mod aws;
pub mod cluster;
pub mod control;
pub mod demo;
pub mod generate;
pub mod job;
pub mod layout;
pub mod memory;
pub mod output;
pub mod progress;
pub mod query;
pub mod run;
pub mod secrets;
pub mod sinks;
pub mod sources;
pub mod state;
pub mod storage;
pub mod validate;
pub mod values;

/// An error and its sources on one line, `a: b: c`, as `anyhow` prints a chain: what a run
/// records and shows. A source whose text the line before already holds (a `transparent` variant,
/// a message quoting its cause) is not repeated.
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut next = e.source();
    while let Some(cause) = next {
        let text = cause.to_string();
        if !parts.last().is_some_and(|last| last.contains(&text)) {
            parts.push(text);
        }
        next = cause.source();
    }
    parts.join(": ")
}

/// Test hook for crash-safety tests: when `TALLY_FAILPOINT` names this point, the process dies
/// here at once, as if killed, leaving whatever it had written.
pub fn failpoint(name: &str) {
    let Ok(value) = std::env::var("TALLY_FAILPOINT") else {
        return;
    };
    if value == name {
        eprintln!("tally: failpoint `{name}` reached: aborting");
        std::process::abort();
    }
    // `NAME=panic`: a bug's panic, here.
    if value.strip_prefix(name) == Some("=panic") {
        panic!("failpoint `{name}` reached");
    }
    // `NAME=pause:FILE`: create FILE, then wait here until it is removed (a paused writer).
    if let Some(marker) = value
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix("=pause:"))
    {
        eprintln!("tally: failpoint `{name}` reached: paused until {marker} is removed");
        if std::fs::write(marker, b"paused\n").is_ok() {
            while std::path::Path::new(marker).exists() {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
}

/// Test hook for crash-safety tests that walk every step: when `TALLY_FAILPOINT` is `NAME#N`,
/// the process dies at the N-th time it reaches `NAME` (before the N-th object write, say).
pub fn failpoint_counted(name: &str) {
    static REACHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let Ok(value) = std::env::var("TALLY_FAILPOINT") else {
        return;
    };
    let Some(n) = value
        .strip_prefix(name)
        .and_then(|rest| rest.strip_prefix('#'))
        .and_then(|n| n.parse::<usize>().ok())
    else {
        return;
    };
    let reached = REACHED.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
    if reached == n {
        eprintln!("tally: failpoint `{name}#{n}` reached: aborting");
        std::process::abort();
    }
}

/// Test hook for failure paths: true when `TALLY_FAILPOINT` is `NAME=error`, so the caller fails
/// here as if the operation after it had failed; `NAME` alone aborts, as [`failpoint`] does.
pub fn failpoint_error(name: &str) -> bool {
    failpoint(name);
    std::env::var("TALLY_FAILPOINT")
        .is_ok_and(|v| v.strip_suffix("=error").is_some_and(|n| n == name))
}
