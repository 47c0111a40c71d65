//! `tally track`: record validated files in the state store.

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;

use super::{connect_state, StateArgs};

pub const AFTER_HELP: &str = "Examples:\n  tally track --file s3://pos/validated/IL-101.csv --file s3://pos/validated/IL-111.csv\n  \
aws s3api ... | tally track --s3-event -\n\n\
Each file's validation time is set (now, or the event's time) and its submitted_jobs reset, since a new\n\
version of a cumulative file has not been submitted anywhere yet.";

#[derive(Args)]
pub struct TrackArgs {
    /// A validated file's URL (repeatable).
    #[arg(long = "file")]
    files: Vec<String>,
    /// S3 event notification JSON: a file path, or - for standard input.
    #[arg(long)]
    s3_event: Option<String>,
    #[command(flatten)]
    state: StateArgs,
}

pub async fn run(args: TrackArgs) -> Result<()> {
    let mut files: Vec<(String, DateTime<Utc>)> =
        args.files.iter().map(|f| (f.clone(), Utc::now())).collect();
    if let Some(source) = &args.s3_event {
        let text = if source == "-" {
            std::io::read_to_string(std::io::stdin())?
        } else {
            std::fs::read_to_string(source).with_context(|| format!("cannot read {source}"))?
        };
        files.extend(tally::state::files_from_s3_event(&text)?);
    }
    if files.is_empty() {
        bail!("nothing to track: pass --file URL or --s3-event FILE");
    }
    let (state, _) = connect_state(&args.state.state).await?;
    let n = state.track_files(&files).await?;
    state.close().await;
    eprintln!("tally track: {n} files recorded as validated");
    Ok(())
}
