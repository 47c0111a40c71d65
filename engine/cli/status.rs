//! `tally status` and `tally serve`: the state store's single view, on a terminal, as JSON, and
//! as a read-only page.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tally::control::status::{status, StatusReport};
use tally::control::status_page::{render_html, render_text};
use tally::state::StateStore;

use super::{connect_state, StateArgs};

pub const STATUS_HELP: &str = "Examples:\n  tally status --state sqlite://.tally/state.db\n  \
tally status --json --job IL-sales\n\n\
Read-only: the preconditions are the ones `tally schedule` checks, evaluated without claiming anything.";

pub const SERVE_HELP: &str =
    "Example:\n  tally serve --state sqlite://.tally/state.db --bind 127.0.0.1:8080\n\n\
GET only; nothing is written. Bound to loopback by default: the page has no login.";

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Only this job configuration.
    #[arg(long)]
    job: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Seconds a job's extra criteria may take.
    #[arg(long, default_value_t = 30)]
    criteria_timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    state: StateArgs,
    /// Address to listen on; loopback unless you mean otherwise (the page has no login).
    #[arg(long, default_value = "127.0.0.1:8080")]
    bind: String,
    /// Seconds between the page's reloads.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    refresh_secs: u64,
    /// Seconds a job's extra criteria may take.
    #[arg(long, default_value_t = 10)]
    criteria_timeout_secs: u64,
}

pub async fn run_status(args: &StatusArgs) -> Result<()> {
    let (store, url) = connect_state(&args.state.state).await?;
    let report = status(
        &store,
        &url,
        args.job.as_deref(),
        Duration::from_secs(args.criteria_timeout_secs),
        chrono::Utc::now(),
    )
    .await?;
    if let Some(id) = &args.job {
        if report.jobs.is_empty() {
            anyhow::bail!("no job configuration `{id}` in the state store");
        }
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", render_text(&report));
    }
    store.close().await;
    Ok(())
}

struct Served {
    store: StateStore,
    url: String,
    refresh_secs: u64,
    criteria_timeout: Duration,
}

impl Served {
    async fn report(&self) -> Result<StatusReport, Response> {
        status(
            &self.store,
            &self.url,
            None,
            self.criteria_timeout,
            chrono::Utc::now(),
        )
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot read the state store");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot read the state store; see the server's log\n",
            )
                .into_response()
        })
    }
}

async fn page(State(served): State<Arc<Served>>) -> Response {
    match served.report().await {
        Ok(report) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            render_html(&report, served.refresh_secs),
        )
            .into_response(),
        Err(response) => response,
    }
}

async fn api(State(served): State<Arc<Served>>) -> Response {
    match served.report().await {
        Ok(report) => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_string_pretty(&report).unwrap_or_default(),
        )
            .into_response(),
        Err(response) => response,
    }
}

/// The read-only server: `/` (the page) and `/api/status` (the JSON), GET only (axum answers
/// any other method with 405).
pub async fn run_serve(args: &ServeArgs) -> Result<()> {
    let (store, url) = connect_state(&args.state.state).await?;
    let served = Arc::new(Served {
        store,
        url,
        refresh_secs: args.refresh_secs,
        criteria_timeout: Duration::from_secs(args.criteria_timeout_secs),
    });
    let app = Router::new()
        .route("/", get(page))
        .route("/api/status", get(api))
        .with_state(served);
    let listener = tokio::net::TcpListener::bind(&args.bind)
        .await
        .with_context(|| format!("cannot listen on {}", args.bind))?;
    let address = listener.local_addr()?;
    eprintln!("tally serve: the status page is at http://{address}/ (JSON at /api/status)");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("the status server stopped")?;
    Ok(())
}
