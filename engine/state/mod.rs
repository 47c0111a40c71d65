//! The state store: which files were validated, which jobs exist, and every run's outcome.
//!
//! `sqlite://PATH` (the local default), `mysql://` (MySQL/MariaDB, as on RDS) or `postgres://`,
//! through sqlx. The schema (`sql/state/<backend>.sql`) keeps the reference implementation's
//! `ingested_file_status` and `aggr_job_configuration` columns and adds `job_runs`, which a run
//! fills itself: RUNNING when it starts (with a heartbeat while it works), then COMPLETED with its
//! counts or FAILED with the error. A run that dies stops its heartbeat; [`StateStore::expire_stale`]
//! marks such runs FAILED so no RUNNING row stays forever.
//!
//! Every value is a bound parameter; the SQL text is fixed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{AssertSqlSafe, MySql, Pool, Postgres, Sqlite};

const SQLITE_SCHEMA: &str = include_str!("../../sql/state/sqlite.sql");
const POSTGRES_SCHEMA: &str = include_str!("../../sql/state/postgres.sql");
const MYSQL_SCHEMA: &str = include_str!("../../sql/state/mysql.sql");

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state store {url}: {message}")]
    Store { url: String, message: String },
    #[error("state store URL `{0}` is not sqlite://, mysql:// or postgres://")]
    Unsupported(String),
}

/// A run's final figures.
#[derive(Debug, Clone, Default)]
pub struct RunCounts {
    pub rows_in: u64,
    pub bad_rows: u64,
    pub rows_out: u64,
    pub hudi_instant: Option<String>,
}

/// One `job_runs` row.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    pub run_id: String,
    pub job: String,
    pub province: Option<String>,
    pub status: String,
    pub rows_in: Option<i64>,
    pub bad_rows: Option<i64>,
    pub rows_out: Option<i64>,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<String>,
    pub hudi_instant: Option<String>,
}

/// A job's row in `aggr_job_configuration`.
#[derive(Debug, Clone)]
pub struct JobConfig {
    pub job_config_id: String,
    /// Glob over tracked file URLs (`s3://pos/validated/IL-*.csv`).
    pub input_pattern: String,
    pub min_file_count: i64,
    /// Extra criteria: one read-only SELECT that must return a row.
    pub criteria_sql: Option<String>,
    /// How to run it: `{"job": ..., "params": {...}, "input": ..., "sinks": {...}}`.
    pub params: serde_json::Value,
}

/// A row of `aggr_job_configuration` as the scheduler reads it.
#[derive(Debug, Clone)]
pub struct JobConfigRow {
    pub job_config_id: String,
    pub input_pattern: String,
    pub min_file_count: i64,
    pub criteria_sql: Option<String>,
    pub params: Option<String>,
    pub last_exec_status: Option<String>,
    pub last_run_timestamp: Option<String>,
    pub last_exec_stepid: Option<String>,
}

/// Accepts exactly one SELECT query (no writes, no DDL, no second statement).
pub fn check_read_only_select(sql: &str) -> Result<(), String> {
    use datafusion::sql::sqlparser::ast::Statement;
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::parser::Parser;
    let statements =
        Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| format!("not valid SQL: {e}"))?;
    match statements.as_slice() {
        [Statement::Query(q)] => {
            let text = q.to_string().to_ascii_uppercase();
            // A query can still write through a data-modifying CTE or lock rows.
            for word in [
                " FOR UPDATE",
                " FOR SHARE",
                "INSERT ",
                "UPDATE ",
                "DELETE ",
                " INTO ",
            ] {
                if text.contains(word) {
                    return Err(format!(
                        "only a plain SELECT is allowed (found `{}`)",
                        word.trim()
                    ));
                }
            }
            Ok(())
        }
        [_] => Err("only a SELECT is allowed".into()),
        _ => Err(format!(
            "exactly one statement is allowed, found {}",
            statements.len()
        )),
    }
}

/// Files from S3 event notifications (`ObjectCreated` records): their URLs and event times.
pub fn files_from_s3_event(json: &str) -> Result<Vec<(String, DateTime<Utc>)>, String> {
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("not an S3 event notification: {e}"))?;
    let records = value["Records"]
        .as_array()
        .ok_or("not an S3 event notification: no Records array")?;
    records
        .iter()
        .map(|r| {
            let bucket = r["s3"]["bucket"]["name"]
                .as_str()
                .ok_or("a record has no s3.bucket.name")?;
            let key = r["s3"]["object"]["key"]
                .as_str()
                .ok_or("a record has no s3.object.key")?;
            // Keys arrive URL-encoded, with `+` for spaces.
            let key = url::form_urlencoded::parse(format!("k={key}").as_bytes())
                .next()
                .map(|(_, v)| v.to_string())
                .unwrap_or_default();
            let time = r["eventTime"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(Utc::now);
            Ok((format!("s3://{bucket}/{key}"), time))
        })
        .collect()
}

enum Backend {
    Sqlite(Pool<Sqlite>),
    Postgres(Pool<Postgres>),
    MySql(Pool<MySql>),
}

/// A connected state store.
pub struct StateStore {
    backend: Backend,
    /// The URL without its password, for messages.
    url: String,
}

/// UTC time as the store keeps it: `YYYY-MM-DD HH:MM:SS.ffffff` (text order is time order).
pub fn store_time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

/// `?` placeholders to PostgreSQL's `$1, $2, ...`.
fn numbered(sql: &str) -> String {
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
enum Arg {
    Text(Option<String>),
    Int(Option<i64>),
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

impl StateStore {
    /// Connects and applies the schema.
    pub async fn connect(url: &str) -> Result<StateStore, StateError> {
        let shown = redact(url);
        let err = |e: &dyn std::fmt::Display| StateError::Store {
            url: shown.clone(),
            message: e.to_string(),
        };
        let backend = if let Some(path) = url.strip_prefix("sqlite://") {
            if let Some(parent) = std::path::Path::new(path).parent() {
                if !parent.as_os_str().is_empty() {
                    std::fs::create_dir_all(parent).map_err(|e| err(&e))?;
                }
            }
            let options = url
                .parse::<SqliteConnectOptions>()
                .map_err(|e| err(&e))?
                .create_if_missing(true)
                .busy_timeout(Duration::from_secs(30));
            Backend::Sqlite(
                SqlitePoolOptions::new()
                    .max_connections(2)
                    .connect_with(options)
                    .await
                    .map_err(|e| err(&e))?,
            )
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(url)
                    .await
                    .map_err(|e| err(&e))?,
            )
        } else if url.starts_with("mysql://") || url.starts_with("mariadb://") {
            let url = url.replacen("mariadb://", "mysql://", 1);
            Backend::MySql(
                MySqlPoolOptions::new()
                    .max_connections(2)
                    .connect(&url)
                    .await
                    .map_err(|e| err(&e))?,
            )
        } else {
            return Err(StateError::Unsupported(shown));
        };
        let store = StateStore {
            backend,
            url: shown,
        };
        store.migrate().await?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Store {
            url: self.url.clone(),
            message: e.to_string(),
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
                .map_err(|e| self.err(format!("cannot apply the schema: {e}")))?;
        }
        Ok(())
    }

    /// Runs one statement with bound arguments; returns the rows affected.
    async fn execute(&self, sql: &str, args: &[Arg]) -> Result<u64, sqlx::Error> {
        Ok(match &self.backend {
            Backend::Sqlite(p) => bind_all!(sqlx::query(AssertSqlSafe(sql.to_string())), args)
                .execute(p)
                .await?
                .rows_affected(),
            Backend::MySql(p) => bind_all!(sqlx::query(AssertSqlSafe(sql.to_string())), args)
                .execute(p)
                .await?
                .rows_affected(),
            Backend::Postgres(p) => bind_all!(sqlx::query(AssertSqlSafe(numbered(sql))), args)
                .execute(p)
                .await?
                .rows_affected(),
        })
    }

    /// Records a run as RUNNING; returns its id.
    pub async fn start_run(
        &self,
        job: &str,
        job_config_id: Option<&str>,
        province: Option<&str>,
    ) -> Result<String, StateError> {
        let run_id = uuid::Uuid::new_v4().to_string();
        let now = store_time(Utc::now());
        let host = gethostname::gethostname().to_string_lossy().to_string();
        self.execute(
            "INSERT INTO job_runs (run_id, job, job_config_id, province, status, started_at, heartbeat_at, host) \
             VALUES (?, ?, ?, ?, 'RUNNING', ?, ?, ?)",
            &[
                Arg::Text(Some(run_id.clone())),
                Arg::Text(Some(job.to_string())),
                Arg::Text(job_config_id.map(str::to_string)),
                Arg::Text(province.map(str::to_string)),
                Arg::Text(Some(now.clone())),
                Arg::Text(Some(now.clone())),
                Arg::Text(Some(host)),
            ],
        )
        .await
        .map_err(|e| self.err(format!("cannot record the run: {e}")))?;
        self.set_job_status(job_config_id, "RUNNING", &now).await?;
        Ok(run_id)
    }

    /// Says the run is still alive.
    pub async fn heartbeat(&self, run_id: &str) -> Result<(), StateError> {
        self.execute(
            "UPDATE job_runs SET heartbeat_at = ? WHERE run_id = ? AND status = 'RUNNING'",
            &[
                Arg::Text(Some(store_time(Utc::now()))),
                Arg::Text(Some(run_id.to_string())),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Records a run's success and its counts.
    pub async fn complete_run(
        &self,
        run_id: &str,
        job_config_id: Option<&str>,
        counts: &RunCounts,
    ) -> Result<(), StateError> {
        let now = store_time(Utc::now());
        self.execute(
            "UPDATE job_runs SET status = 'COMPLETED', rows_in = ?, bad_rows = ?, rows_out = ?, \
             hudi_instant = ?, finished_at = ?, heartbeat_at = ? WHERE run_id = ?",
            &[
                Arg::Int(Some(counts.rows_in as i64)),
                Arg::Int(Some(counts.bad_rows as i64)),
                Arg::Int(Some(counts.rows_out as i64)),
                Arg::Text(counts.hudi_instant.clone()),
                Arg::Text(Some(now.clone())),
                Arg::Text(Some(now.clone())),
                Arg::Text(Some(run_id.to_string())),
            ],
        )
        .await
        .map_err(|e| self.err(format!("cannot record the run's completion: {e}")))?;
        self.set_job_status(job_config_id, "COMPLETED", &now).await
    }

    /// Records a run's failure with the error text.
    pub async fn fail_run(
        &self,
        run_id: &str,
        job_config_id: Option<&str>,
        error: &str,
    ) -> Result<(), StateError> {
        let now = store_time(Utc::now());
        self.execute(
            "UPDATE job_runs SET status = 'FAILED', error = ?, finished_at = ?, heartbeat_at = ? WHERE run_id = ?",
            &[
                Arg::Text(Some(error.to_string())),
                Arg::Text(Some(now.clone())),
                Arg::Text(Some(now.clone())),
                Arg::Text(Some(run_id.to_string())),
            ],
        )
        .await
        .map_err(|e| self.err(format!("cannot record the run's failure: {e}")))?;
        self.set_job_status(job_config_id, "FAILED", &now).await
    }

    async fn set_job_status(
        &self,
        job_config_id: Option<&str>,
        status: &str,
        now: &str,
    ) -> Result<(), StateError> {
        let Some(id) = job_config_id else {
            return Ok(());
        };
        self.execute(
            "UPDATE aggr_job_configuration SET last_exec_status = ?, last_run_timestamp = ? WHERE job_config_id = ?",
            &[
                Arg::Text(Some(status.to_string())),
                Arg::Text(Some(now.to_string())),
                Arg::Text(Some(id.to_string())),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Marks RUNNING runs whose heartbeat is older than `lease` as FAILED; returns how many.
    pub async fn expire_stale(&self, lease: Duration) -> Result<u64, StateError> {
        let now = Utc::now();
        let cutoff = store_time(now - chrono::Duration::from_std(lease).unwrap_or_default());
        self.execute(
            "UPDATE job_runs SET status = 'FAILED', finished_at = ?, \
             error = 'no heartbeat: the run stopped without reporting (killed or lost)' \
             WHERE status = 'RUNNING' AND heartbeat_at < ?",
            &[Arg::Text(Some(store_time(now))), Arg::Text(Some(cutoff))],
        )
        .await
        .map_err(|e| self.err(e))
    }

    /// The most recent runs, newest first.
    pub async fn recent_runs(&self, limit: i64) -> Result<Vec<RunRecord>, StateError> {
        let sql = "SELECT run_id, job, province, status, rows_in, bad_rows, rows_out, started_at, \
                   finished_at, error, hudi_instant FROM job_runs ORDER BY started_at DESC LIMIT ?";
        macro_rules! fetch {
            ($pool:expr, $sql:expr) => {{
                use sqlx::Row;
                sqlx::query(AssertSqlSafe($sql))
                    .bind(limit)
                    .fetch_all($pool)
                    .await
                    .map_err(|e| self.err(e))?
                    .iter()
                    .map(|r| RunRecord {
                        run_id: r.get(0),
                        job: r.get(1),
                        province: r.get(2),
                        status: r.get(3),
                        rows_in: r.get(4),
                        bad_rows: r.get(5),
                        rows_out: r.get(6),
                        started_at: r.get(7),
                        finished_at: r.get(8),
                        error: r.get(9),
                        hudi_instant: r.get(10),
                    })
                    .collect()
            }};
        }
        Ok(match &self.backend {
            Backend::Sqlite(p) => fetch!(p, sql.to_string()),
            Backend::MySql(p) => fetch!(p, sql.to_string()),
            Backend::Postgres(p) => fetch!(p, numbered(sql)),
        })
    }

    /// Records validated files: inserts or refreshes each file's validation time and status, and
    /// resets `submitted_jobs` (a new version of the file has not been submitted anywhere yet).
    pub async fn track_files(&self, files: &[(String, DateTime<Utc>)]) -> Result<u64, StateError> {
        let upsert = match &self.backend {
            Backend::MySql(_) => {
                "INSERT INTO ingested_file_status (file_url, submitted_jobs, last_update_status, last_validated_timestamp) \
                 VALUES (?, '[]', 'VALIDATED', ?) ON DUPLICATE KEY UPDATE submitted_jobs = '[]', \
                 last_update_status = 'VALIDATED', last_validated_timestamp = VALUES(last_validated_timestamp)"
            }
            _ => {
                "INSERT INTO ingested_file_status (file_url, submitted_jobs, last_update_status, last_validated_timestamp) \
                 VALUES (?, '[]', 'VALIDATED', ?) ON CONFLICT (file_url) DO UPDATE SET submitted_jobs = '[]', \
                 last_update_status = 'VALIDATED', last_validated_timestamp = excluded.last_validated_timestamp"
            }
        };
        let mut n = 0;
        for (url, time) in files {
            n += self
                .execute(
                    upsert,
                    &[
                        Arg::Text(Some(url.clone())),
                        Arg::Text(Some(store_time(*time))),
                    ],
                )
                .await
                .map_err(|e| self.err(format!("cannot track {url}: {e}")))?
                .min(1);
        }
        Ok(n)
    }

    /// Writes (or replaces) a job's configuration row, keeping its run history columns.
    pub async fn register_job(&self, config: &JobConfig) -> Result<(), StateError> {
        let upsert = match &self.backend {
            Backend::MySql(_) => {
                "INSERT INTO aggr_job_configuration (job_config_id, job_input_pattern, job_min_file_count, job_addl_criteria, job_params) \
                 VALUES (?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE job_input_pattern = VALUES(job_input_pattern), \
                 job_min_file_count = VALUES(job_min_file_count), job_addl_criteria = VALUES(job_addl_criteria), job_params = VALUES(job_params)"
            }
            _ => {
                "INSERT INTO aggr_job_configuration (job_config_id, job_input_pattern, job_min_file_count, job_addl_criteria, job_params) \
                 VALUES (?, ?, ?, ?, ?) ON CONFLICT (job_config_id) DO UPDATE SET job_input_pattern = excluded.job_input_pattern, \
                 job_min_file_count = excluded.job_min_file_count, job_addl_criteria = excluded.job_addl_criteria, job_params = excluded.job_params"
            }
        };
        self.execute(
            upsert,
            &[
                Arg::Text(Some(config.job_config_id.clone())),
                Arg::Text(Some(config.input_pattern.clone())),
                Arg::Int(Some(config.min_file_count)),
                Arg::Text(config.criteria_sql.clone()),
                Arg::Text(Some(config.params.to_string())),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.err(format!("cannot register job {}: {e}", config.job_config_id)))
    }

    /// Every job configuration row.
    pub async fn job_configs(&self) -> Result<Vec<JobConfigRow>, StateError> {
        let sql = "SELECT job_config_id, job_input_pattern, job_min_file_count, job_addl_criteria, job_params, \
                   last_exec_status, last_run_timestamp, last_exec_stepid FROM aggr_job_configuration ORDER BY job_config_id";
        macro_rules! fetch {
            ($pool:expr) => {{
                use sqlx::Row;
                sqlx::query(sql)
                    .fetch_all($pool)
                    .await
                    .map_err(|e| self.err(e))?
                    .iter()
                    .map(|r| JobConfigRow {
                        job_config_id: r.get(0),
                        input_pattern: r.get(1),
                        min_file_count: r
                            .try_get::<i64, _>(2)
                            .unwrap_or_else(|_| r.get::<i32, _>(2) as i64),
                        criteria_sql: r.get(3),
                        params: r.get(4),
                        last_exec_status: r.get(5),
                        last_run_timestamp: r.get(6),
                        last_exec_stepid: r.get(7),
                    })
                    .collect()
            }};
        }
        Ok(match &self.backend {
            Backend::Sqlite(p) => fetch!(p),
            Backend::MySql(p) => fetch!(p),
            Backend::Postgres(p) => fetch!(p),
        })
    }

    /// Every tracked file and when it was validated.
    pub async fn tracked_files(&self) -> Result<Vec<(String, Option<String>)>, StateError> {
        let sql = "SELECT file_url, last_validated_timestamp FROM ingested_file_status";
        match &self.backend {
            Backend::Sqlite(p) => sqlx::query_as(sql).fetch_all(p).await,
            Backend::MySql(p) => sqlx::query_as(sql).fetch_all(p).await,
            Backend::Postgres(p) => sqlx::query_as(sql).fetch_all(p).await,
        }
        .map_err(|e| self.err(e))
    }

    /// Claims a job for one submission: true only for the one caller that moved it to RUNNING.
    pub async fn claim_job(&self, job_config_id: &str, step_id: &str) -> Result<bool, StateError> {
        let n = self
            .execute(
                "UPDATE aggr_job_configuration SET last_exec_status = 'RUNNING', last_exec_stepid = ? \
                 WHERE job_config_id = ? AND (last_exec_status IS NULL OR last_exec_status <> 'RUNNING')",
                &[
                    Arg::Text(Some(step_id.to_string())),
                    Arg::Text(Some(job_config_id.to_string())),
                ],
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(n == 1)
    }

    /// Sets a claimed job's final status when its submission failed before the run could report.
    pub async fn release_job(&self, job_config_id: &str, status: &str) -> Result<(), StateError> {
        self.set_job_status(Some(job_config_id), status, &store_time(Utc::now()))
            .await
    }

    /// Adds `job_config_id` to the `submitted_jobs` JSON list of each file a submission used.
    pub async fn mark_submitted(
        &self,
        files: &[String],
        job_config_id: &str,
    ) -> Result<(), StateError> {
        for url in files {
            let current: Option<Option<String>> = match &self.backend {
                Backend::Sqlite(p) => {
                    sqlx::query_scalar(
                        "SELECT submitted_jobs FROM ingested_file_status WHERE file_url = ?",
                    )
                    .bind(url)
                    .fetch_optional(p)
                    .await
                }
                Backend::MySql(p) => {
                    sqlx::query_scalar(
                        "SELECT submitted_jobs FROM ingested_file_status WHERE file_url = ?",
                    )
                    .bind(url)
                    .fetch_optional(p)
                    .await
                }
                Backend::Postgres(p) => {
                    sqlx::query_scalar(
                        "SELECT submitted_jobs FROM ingested_file_status WHERE file_url = $1",
                    )
                    .bind(url)
                    .fetch_optional(p)
                    .await
                }
            }
            .map_err(|e| self.err(e))?;
            let mut jobs: Vec<String> = current
                .flatten()
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            if !jobs.iter().any(|j| j == job_config_id) {
                jobs.push(job_config_id.to_string());
            }
            self.execute(
                "UPDATE ingested_file_status SET submitted_jobs = ?, last_update_status = 'SUBMITTED' WHERE file_url = ?",
                &[Arg::Text(Some(serde_json::to_string(&jobs).unwrap_or_default())), Arg::Text(Some(url.clone()))],
            )
            .await
            .map_err(|e| self.err(e))?;
        }
        Ok(())
    }

    /// Records where a claimed job was submitted (`clusterId:stepId` for EMR).
    pub async fn set_step_id(&self, job_config_id: &str, step_id: &str) -> Result<(), StateError> {
        self.execute(
            "UPDATE aggr_job_configuration SET last_exec_stepid = ? WHERE job_config_id = ?",
            &[
                Arg::Text(Some(step_id.to_string())),
                Arg::Text(Some(job_config_id.to_string())),
            ],
        )
        .await
        .map(|_| ())
        .map_err(|e| self.err(e))
    }

    /// Marks a job's RUNNING runs FAILED (its EMR step ended without the run reporting).
    pub async fn fail_running_runs_of(
        &self,
        job_config_id: &str,
        error: &str,
    ) -> Result<u64, StateError> {
        let now = store_time(Utc::now());
        self.execute(
            "UPDATE job_runs SET status = 'FAILED', error = ?, finished_at = ? WHERE job_config_id = ? AND status = 'RUNNING'",
            &[
                Arg::Text(Some(error.to_string())),
                Arg::Text(Some(now)),
                Arg::Text(Some(job_config_id.to_string())),
            ],
        )
        .await
        .map_err(|e| self.err(e))
    }

    /// Runs the extra criteria of a job: one read-only SELECT (anything else is refused) that
    /// must return a row within `timeout`.
    pub async fn criteria_met(&self, sql: &str, timeout: Duration) -> Result<bool, StateError> {
        check_read_only_select(sql).map_err(|e| self.err(format!("criteria refused: {e}")))?;
        let query = async {
            Ok::<bool, sqlx::Error>(match &self.backend {
                Backend::Sqlite(p) => {
                    let mut c = p.acquire().await?;
                    sqlx::query("PRAGMA query_only = ON")
                        .execute(&mut *c)
                        .await?;
                    let row = sqlx::query(AssertSqlSafe(sql.to_string()))
                        .fetch_optional(&mut *c)
                        .await;
                    sqlx::query("PRAGMA query_only = OFF")
                        .execute(&mut *c)
                        .await?;
                    row?.is_some()
                }
                Backend::Postgres(p) => {
                    let mut tx = p.begin().await?;
                    sqlx::query("SET TRANSACTION READ ONLY")
                        .execute(&mut *tx)
                        .await?;
                    sqlx::query(AssertSqlSafe(format!(
                        "SET LOCAL statement_timeout = {}",
                        timeout.as_millis()
                    )))
                    .execute(&mut *tx)
                    .await?;
                    let row = sqlx::query(AssertSqlSafe(sql.to_string()))
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.rollback().await?;
                    row.is_some()
                }
                Backend::MySql(p) => {
                    let mut c = p.acquire().await?;
                    sqlx::query("START TRANSACTION READ ONLY")
                        .execute(&mut *c)
                        .await?;
                    let row = sqlx::query(AssertSqlSafe(sql.to_string()))
                        .fetch_optional(&mut *c)
                        .await;
                    sqlx::query("ROLLBACK").execute(&mut *c).await?;
                    row?.is_some()
                }
            })
        };
        match tokio::time::timeout(timeout, query).await {
            Ok(result) => result.map_err(|e| self.err(format!("criteria failed: {e}"))),
            Err(_) => Err(self.err(format!(
                "criteria did not answer within {}s",
                timeout.as_secs_f64()
            ))),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_events_give_file_urls_and_times() {
        let event = r#"{"Records":[{"eventTime":"2026-03-01T10:00:00.000Z","s3":{"bucket":{"name":"pos"},"object":{"key":"validated/IL-101+v2.csv"}}}]}"#;
        let files = files_from_s3_event(event).unwrap();
        assert_eq!(files[0].0, "s3://pos/validated/IL-101 v2.csv");
        assert_eq!(store_time(files[0].1), "2026-03-01 10:00:00.000000");
        assert!(files_from_s3_event("{}").unwrap_err().contains("Records"));
    }

    #[test]
    fn criteria_must_be_one_read_only_select() {
        assert!(check_read_only_select(
            "SELECT 1 FROM ingested_file_status WHERE file_url LIKE '%Item%'"
        )
        .is_ok());
        for bad in [
            "DELETE FROM job_runs",
            "SELECT 1; DROP TABLE job_runs",
            "UPDATE aggr_job_configuration SET last_exec_status = 'x'",
            "SELECT * FROM job_runs FOR UPDATE",
            "WITH d AS (DELETE FROM job_runs RETURNING *) SELECT * FROM d",
            "not sql",
        ] {
            assert!(check_read_only_select(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn placeholders_are_numbered_for_postgres() {
        assert_eq!(numbered("a = ? AND b = ?"), "a = $1 AND b = $2");
    }

    #[test]
    fn passwords_never_reach_messages() {
        assert_eq!(redact("mysql://u:secret@h/db"), "mysql://u:****@h/db");
    }

    #[tokio::test]
    async fn a_run_is_recorded_from_start_to_finish_in_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s/state.db").display());
        let store = StateStore::connect(&url).await.unwrap();
        let ok = store.start_run("j", None, Some("IL")).await.unwrap();
        store
            .complete_run(
                &ok,
                None,
                &RunCounts {
                    rows_in: 5,
                    bad_rows: 1,
                    rows_out: 3,
                    hudi_instant: None,
                },
            )
            .await
            .unwrap();
        let bad = store.start_run("j", None, Some("IL")).await.unwrap();
        store.fail_run(&bad, None, "boom").await.unwrap();
        let stuck = store.start_run("j", None, None).await.unwrap();
        assert_eq!(
            store.expire_stale(Duration::from_secs(3600)).await.unwrap(),
            0
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            store.expire_stale(Duration::from_millis(1)).await.unwrap(),
            1
        );
        let runs = store.recent_runs(10).await.unwrap();
        let by_id = |id: &str| runs.iter().find(|r| r.run_id == id).unwrap().clone();
        assert_eq!(
            (by_id(&ok).status.as_str(), by_id(&ok).rows_out),
            ("COMPLETED", Some(3))
        );
        assert_eq!(by_id(&bad).error.as_deref(), Some("boom"));
        assert!(by_id(&stuck).error.unwrap().contains("no heartbeat"));
        // Connecting again applies nothing new and keeps the rows.
        let again = StateStore::connect(&url).await.unwrap();
        assert_eq!(again.recent_runs(10).await.unwrap().len(), 3);
    }
}
