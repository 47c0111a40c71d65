//! Flags every command takes (job folder, layouts, logging, progress) and the logging setup.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

#[derive(Args)]
pub struct GlobalArgs {
    /// Folder of job definitions (*.sql); jobs built into tally are used when absent.
    #[arg(long, global = true, env = "TALLY_JOBS_DIR", default_value = "jobs")]
    pub jobs_dir: PathBuf,
    /// File layouts to use instead of the built-in jobs/layouts.toml.
    #[arg(long, global = true, env = "TALLY_LAYOUTS")]
    pub layouts: Option<PathBuf>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More logging (-v info, -vv debug); TALLY_LOG=<filter> sets it precisely.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// No progress bars.
    #[arg(short, long, global = true)]
    pub quiet: bool,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Structured logs on stderr (`tracing`), as text or JSON lines; colours only on a terminal.
pub fn init_logging(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match global.verbose {
        0 => "warn",
        1 => "info,tally=info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("TALLY_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match global.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
