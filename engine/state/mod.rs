//! The state store: which files were validated, which jobs exist, and every run's outcome.
//!
//! `sqlite://PATH` (the local default), `mysql://` (MySQL/MariaDB, as on RDS) or `postgres://`,
//! through sqlx. The schema (`sql/state/<backend>.sql`) keeps the reference implementation's
//! `ingested_file_status` and `aggr_job_configuration` columns and adds `job_runs`, which a run
//! fills itself: RUNNING when it starts (with a heartbeat while it works), then COMPLETED with its
//! counts or FAILED with the error.
//!
//! One file per table: [`files`] (tracked input files), [`jobs`] (configurations, claims, retry
//! state), [`runs`] (the run history); [`criteria`] checks and runs a job's extra criteria.
//!
//! Invariants:
//! - every value is a bound parameter; the SQL text is fixed;
//! - a job's `last_run_timestamp` is the *watermark* of its last COMPLETED run: the time that run
//!   listed its inputs, so a file validated while a run was going is not counted as processed;
//!   a FAILED run never moves it;
//! - no job stays RUNNING without a live run: runs whose heartbeat stopped and claims that never
//!   became a run are released as FAILED by [`StateStore::expire_stale`];
//! - the URL kept for messages is redacted ([`crate::secrets::redact_url`]).

pub mod criteria;
pub mod files;
pub mod jobs;
pub mod runs;

use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{MySql, Pool, Postgres, Sqlite};

pub use criteria::{check_read_only_select, CriteriaError, SqlDialect};
pub use files::{files_from_s3_event, s3_object_url};
pub use jobs::{JobConfig, JobConfigRow, JobParams, RetryPolicy};
pub use runs::{Expired, RunCounts, RunRecord, RunStatus};

use crate::secrets::redact_url;

const SQLITE_SCHEMA: &str = include_str!("../../sql/state/sqlite.sql");
const POSTGRES_SCHEMA: &str = include_str!("../../sql/state/postgres.sql");
const MYSQL_SCHEMA: &str = include_str!("../../sql/state/mysql.sql");

/// Columns added after the first schema, for stores created before them:
/// (table, column, declaration). The CREATE TABLE statements in `sql/state/` carry them too.
const ADDED_COLUMNS: &[(&str, &str, &str)] = &[
    (
        "aggr_job_configuration",
        "failed_attempts",
        "INTEGER NOT NULL DEFAULT 0",
    ),
    ("aggr_job_configuration", "last_failed_at", "VARCHAR(32)"),
    ("aggr_job_configuration", "claimed_at", "VARCHAR(32)"),
    ("job_runs", "inputs_listed_at", "VARCHAR(32)"),
];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {url}: {context}: {source}")]
    Query {
        url: String,
        context: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("state store {url}: {message}")]
    Store { url: String, message: String },
    #[error("state store {url}: criteria refused: {source}")]
    CriteriaRefused {
        url: String,
        #[source]
        source: CriteriaError,
    },
    #[error("state store URL `{0}` is not sqlite://, mysql:// or postgres://")]
    Unsupported(String),
}

pub(crate) enum Backend {
    Sqlite(Pool<Sqlite>),
    Postgres(Pool<Postgres>),
    MySql(Pool<MySql>),
}

/// A connected state store.
pub struct StateStore {
    pub(crate) backend: Backend,
    /// The full URL (criteria open their own connection with it).
    pub(crate) connect_url: String,
    /// The URL without its secrets, for messages.
    pub(crate) url: String,
}

/// UTC time as the store keeps it: `YYYY-MM-DD HH:MM:SS.ffffff` (text order is time order).
pub fn store_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// Reads a time written by [`store_time`].
pub fn parse_store_time(text: &str) -> Option<DateTime<Utc>> {
    NaiveDateTime::parse_from_str(text.trim(), "%Y-%m-%d %H:%M:%S%.f")
        .ok()
        .map(|t| t.and_utc())
}

/// `?` placeholders to PostgreSQL's `$1, $2, ...`.
pub(crate) fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 8);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push_str(&format!("${n}"));
        } else {
            out.push(c);
        }
    }
    out
}

/// A bound value.
#[derive(Clone)]
pub(crate) enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
}

impl Arg {
    pub(crate) fn text(v: impl Into<String>) -> Arg {
        Arg::Text(Some(v.into()))
    }
}

macro_rules! bind_all {
    ($query:expr, $args:expr) => {{
        let mut q = $query;
        for a in $args {
            q = match a {
                Arg::Text(v) => q.bind(v.clone()),
                Arg::Int(v) => q.bind(*v),
            };
        }
        q
    }};
}

/// Runs `$body` with `$pool` bound to the backend's pool and `$sql` to the statement text in
/// that backend's placeholder style.
macro_rules! on_backend {
    ($store:expr, $text:expr, |$pool:ident, $sql:ident| $body:expr) => {
        match &$store.backend {
            $crate::state::Backend::Sqlite($pool) => {
                let $sql = sqlx::AssertSqlSafe($text.to_string());
                $body
            }
            $crate::state::Backend::MySql($pool) => {
                let $sql = sqlx::AssertSqlSafe($text.to_string());
                $body
            }
            $crate::state::Backend::Postgres($pool) => {
                let $sql = sqlx::AssertSqlSafe($crate::state::numbered($text));
                $body
            }
        }
    };
}

impl StateStore {
    /// Connects and applies the schema.
    pub async fn connect(url: &str) -> Result<StateStore, StateError> {
        let shown = redact_url(url);
        let err = |context: &str, source: sqlx::Error| StateError::Query {
            url: shown.clone(),
            context: context.to_string(),
            source,
        };
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(parent) = std::path::Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| StateError::Store {
                        url: shown.clone(),
                        message: format!("cannot create {}: {e}", parent.display()),
                    })?;
                }
            }
            let options = url
                .parse::<SqliteConnectOptions>()
                .map_err(|e| err("not a SQLite URL", e))?
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(30));
            Backend::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(options)
                    .await
                    .map_err(|e| err("cannot connect", e))?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                    .map_err(|e| err("cannot connect", e))?,
            )
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            Backend::MySql(
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .connect(&url)
                    .await
                    .map_err(|e| err("cannot connect", e))?,
            )
        } else {
            return Err(StateError::Unsupported(shown));
        };
        let store = StateStore {
            backend,
            connect_url: url.replacen("mariadb://", "mysql://", 1),
            url: shown,
        };
        store.migrate().await?;
        Ok(store)
    }

    pub(crate) fn query_err(&self, context: impl Into<String>, source: sqlx::Error) -> StateError {
        StateError::Query {
            url: self.url.clone(),
            context: context.into(),
            source,
        }
    }

    pub(crate) fn dialect(&self) -> SqlDialect {
        match &self.backend {
            Backend::Sqlite(_) => SqlDialect::Sqlite,
            Backend::Postgres(_) => SqlDialect::Postgres,
            Backend::MySql(_) => SqlDialect::MySql,
        }
    }

    async fn migrate(&self) -> Result<(), StateError> {
        let schema = match &self.backend {
            Backend::Sqlite(_) => SQLITE_SCHEMA,
            Backend::Postgres(_) => POSTGRES_SCHEMA,
            Backend::MySql(_) => MYSQL_SCHEMA,
        };
        // Comments first (they may hold `;`), then one statement per `;`.
        let without_comments: String = schema
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let statements = without_comments.split(';').filter(|s| !s.trim().is_empty());
        for statement in statements {
            self.execute(statement, &[])
                .await
                .map_err(|e| self.query_err("cannot apply the schema", e))?;
        }
        for (table, column, declaration) in ADDED_COLUMNS {
            self.ensure_column(table, column, declaration).await?;
        }
        Ok(())
    }

    /// Adds a column to a store made before it existed. Portable across the three backends
    /// (MySQL has no `ADD COLUMN IF NOT EXISTS`), and safe when two processes migrate at once.
    async fn ensure_column(
        &self,
        table: &str,
        column: &str,
        declaration: &str,
    ) -> Result<(), StateError> {
        let probe = format!("SELECT {column} FROM {table} WHERE 1 = 0");
        if self.execute(&probe, &[]).await.is_ok() {
            return Ok(());
        }
        let add = format!("ALTER TABLE {table} ADD COLUMN {column} {declaration}");
        if let Err(e) = self.execute(&add, &[]).await {
            // Another process may have added it meanwhile.
            if self.execute(&probe, &[]).await.is_err() {
                return Err(self.query_err(format!("cannot add {table}.{column}"), e));
            }
        }
        Ok(())
    }

    /// Runs one statement with bound arguments; returns the rows affected.
    pub(crate) async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(on_backend!(self, sql, |p, text| bind_all!(
            sqlx::query(text),
            args
        )
        .execute(p)
        .await?
        .rows_affected()))
    }

    /// Runs one query with bound arguments and returns its rows as text columns (integers
    /// converted), so callers need not repeat the per-backend fetch.
    pub(crate) async fn fetch_texts(
        &self,
        sql: &str,
        args: &[Arg],
    ) -> Result<Vec<Vec<Option<String>>>, sqlx::Error> {
        macro_rules! rows {
            ($rows:expr) => {{
                use sqlx::Row;
                $rows
                    .iter()
                    .map(|r| {
                        (0..r.columns().len())
                            .map(|i| {
                                r.try_get::<Option<String>, _>(i)
                                    .ok()
                                    .flatten()
                                    .or_else(|| {
                                        r.try_get::<Option<i64>, _>(i)
                                            .ok()
                                            .flatten()
                                            .map(|v| v.to_string())
                                    })
                                    .or_else(|| {
                                        r.try_get::<Option<i32>, _>(i)
                                            .ok()
                                            .flatten()
                                            .map(|v| v.to_string())
                                    })
                            })
                            .collect()
                    })
                    .collect()
            }};
        }
        Ok(on_backend!(self, sql, |p, text| {
            let fetched = bind_all!(sqlx::query(text), args).fetch_all(p).await?;
            rows!(fetched)
        }))
    }

    /// Closes the connections.
    pub async fn close(self) {
        match self.backend {
            Backend::Sqlite(p) => p.close().await,
            Backend::Postgres(p) => p.close().await,
            Backend::MySql(p) => p.close().await,
        }
    }
}

/// Column `i` of a [`StateStore::fetch_texts`] row.
pub(crate) fn col(row: &[Option<String>], i: usize) -> Option<String> {
    row.get(i).cloned().flatten()
}

/// Column `i` as an integer.
pub(crate) fn col_int(row: &[Option<String>], i: usize) -> Option<i64> {
    col(row, i).and_then(|v| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[test]
    fn store_times_read_back() {
        let t = parse_store_time("2026-03-01 10:00:00.250000").unwrap();
        assert_eq!(store_time(t), "2026-03-01 10:00:00.250000");
        assert!(parse_store_time("yesterday").is_none());
    }

    #[tokio::test]
    async fn a_store_made_before_the_added_columns_gains_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("old.db").display());
        {
            use sqlx::Connection;
            let options = url
                .parse::<SqliteConnectOptions>()
                .unwrap()
                .create_if_missing(true);
            let mut c = sqlx::SqliteConnection::connect_with(&options)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TABLE aggr_job_configuration (job_config_id TEXT PRIMARY KEY, \
                 job_input_pattern TEXT NOT NULL, job_min_file_count INTEGER NOT NULL DEFAULT 1, \
                 job_addl_criteria TEXT, job_params TEXT, last_exec_stepid TEXT, \
                 last_exec_status TEXT, last_run_timestamp TEXT)",
            )
            .execute(&mut c)
            .await
            .unwrap();
        }
        let store = StateStore::connect(&url).await.unwrap();
        store
            .execute(
                "SELECT failed_attempts, last_failed_at, claimed_at FROM aggr_job_configuration",
                &[],
            )
            .await
            .unwrap();
        // Connecting again changes nothing.
        StateStore::connect(&url).await.unwrap();
    }
}
