//! A job's extra criteria: one read-only SELECT on the state store that must return a row.
//!
//! Criteria are text a user registered, run against the store that holds every job's state, so
//! they pass three independent guards:
//! 1. the text: no `;`, no comment markers (`--`, `/*`, `*/`, `#`) and no backslash anywhere,
//!    not even inside a string literal, so no lexer difference between this parser and the
//!    server's (nested comments, MySQL's `/*! ... */`, backslash escapes) can hide a second
//!    statement;
//! 2. the parse, in the backend's own dialect: exactly one query, with no data-modifying part
//!    (`WITH d AS (DELETE ...)`, `SELECT ... INTO`, `FOR UPDATE`);
//! 3. the connection: a dedicated one, opened read-only for this query and closed afterwards,
//!    with a server-side time limit (SQLite's progress handler, PostgreSQL's
//!    `statement_timeout`, MySQL's `max_execution_time` / MariaDB's `max_statement_time`) and a
//!    client-side one behind it.

use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::{Duration, Instant};

use datafusion::sql::sqlparser;
use sqlparser::ast::{Query, SetExpr, Statement, Visit, Visitor};
use sqlparser::dialect::{Dialect, MySqlDialect, PostgreSqlDialect, SQLiteDialect};
use sqlparser::parser::Parser;
use sqlx::{AssertSqlSafe, ConnectOptions, Connection};

use super::{StateError, StateStore};

/// The state store's SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlDialect {
    Sqlite,
    Postgres,
    MySql,
}

impl SqlDialect {
    fn parser_dialect(self) -> Box<dyn Dialect> {
        match self {
            SqlDialect::Sqlite => Box::new(SQLiteDialect {}),
            SqlDialect::Postgres => Box::new(PostgreSqlDialect {}),
            SqlDialect::MySql => Box::new(MySqlDialect {}),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CriteriaError {
    #[error("criteria may not contain `{0}` (not even in a string literal): one plain SELECT, without comments")]
    ForbiddenText(&'static str),
    #[error("not valid SQL: {0}")]
    NotSql(String),
    #[error("exactly one statement is allowed, found {0}")]
    Statements(usize),
    #[error("only a SELECT is allowed")]
    NotSelect,
    #[error("only a plain SELECT is allowed (found {0})")]
    Writes(&'static str),
}

/// What a criteria text may never contain, whatever the quoting.
const FORBIDDEN: &[&str] = &[";", "--", "/*", "*/", "#", "\\"];

/// Accepts exactly one read-only SELECT in `dialect` (see the module documentation).
pub fn check_read_only_select(sql: &str, dialect: SqlDialect) -> Result<(), CriteriaError> {
    if let Some(bad) = FORBIDDEN.iter().find(|f| sql.contains(**f)) {
        return Err(CriteriaError::ForbiddenText(bad));
    }
    if sql.chars().any(|c| c.is_control() && !c.is_whitespace()) {
        return Err(CriteriaError::ForbiddenText("a control character"));
    }
    let statements = Parser::parse_sql(dialect.parser_dialect().as_ref(), sql)
        .map_err(|e| CriteriaError::NotSql(e.to_string()))?;
    let statement = match statements.as_slice() {
        [one] => one,
        many => return Err(CriteriaError::Statements(many.len())),
    };
    if !matches!(statement, Statement::Query(_)) {
        return Err(CriteriaError::NotSelect);
    }
    match statement.visit(&mut ReadOnly) {
        ControlFlow::Break(found) => Err(CriteriaError::Writes(found)),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// Finds any part of a query that writes or locks.
struct ReadOnly;

impl ReadOnly {
    fn body(body: &SetExpr) -> ControlFlow<&'static str> {
        match body {
            SetExpr::Select(s) if s.into.is_some() => ControlFlow::Break("SELECT ... INTO"),
            SetExpr::SetOperation { left, right, .. } => {
                Self::body(left)?;
                Self::body(right)
            }
            SetExpr::Insert(_) => ControlFlow::Break("INSERT"),
            SetExpr::Update(_) => ControlFlow::Break("UPDATE"),
            SetExpr::Delete(_) => ControlFlow::Break("DELETE"),
            SetExpr::Merge(_) => ControlFlow::Break("MERGE"),
            _ => ControlFlow::Continue(()),
        }
    }
}

impl Visitor for ReadOnly {
    type Break = &'static str;

    fn pre_visit_statement(&mut self, statement: &Statement) -> ControlFlow<&'static str> {
        match statement {
            Statement::Query(_) => ControlFlow::Continue(()),
            _ => ControlFlow::Break("a statement that is not a query"),
        }
    }

    fn pre_visit_query(&mut self, query: &Query) -> ControlFlow<&'static str> {
        if !query.locks.is_empty() {
            return ControlFlow::Break("a locking clause (FOR UPDATE/SHARE)");
        }
        Self::body(&query.body)
    }
}

impl StateStore {
    /// Runs a job's extra criteria (checked first; anything but one read-only SELECT is refused)
    /// on a dedicated read-only connection; true when it returns a row within `timeout`.
    pub async fn criteria_met(&self, sql: &str, timeout: Duration) -> Result<bool, StateError> {
        check_read_only_select(sql, self.dialect()).map_err(|source| {
            StateError::CriteriaRefused {
                url: self.url.clone(),
                source,
            }
        })?;
        // The server enforces `timeout`; the client waits a little longer before it drops the
        // connection (dropping closes it, so nothing read-only or half-done is reused).
        let query = self.run_criteria(sql, timeout);
        match tokio::time::timeout(timeout + Duration::from_secs(2), query).await {
            Ok(result) => result.map_err(|e| self.query_err("criteria failed", e)),
            Err(_) => Err(StateError::Store {
                url: self.url.clone(),
                message: format!("criteria did not answer within {}s", timeout.as_secs_f64()),
            }),
        }
    }

    async fn run_criteria(&self, sql: &str, timeout: Duration) -> Result<bool, sqlx::Error> {
        let text = AssertSqlSafe(sql.to_string());
        match self.dialect() {
            SqlDialect::Sqlite => {
                let options = sqlx::sqlite::SqliteConnectOptions::from_str(&self.connect_url)?
                    .read_only(true)
                    .create_if_missing(false)
                    .busy_timeout(timeout);
                let mut c = options.connect().await?;
                let deadline = Instant::now() + timeout;
                c.lock_handle()
                    .await?
                    .set_progress_handler(1000, move || Instant::now() < deadline);
                let row = sqlx::query(text).fetch_optional(&mut c).await;
                c.close().await?;
                Ok(row?.is_some())
            }
            SqlDialect::Postgres => {
                let options = sqlx::postgres::PgConnectOptions::from_str(&self.connect_url)?
                    .options([
                        ("default_transaction_read_only", "on".to_string()),
                        (
                            "statement_timeout",
                            format!("{}", timeout.as_millis().max(1)),
                        ),
                    ]);
                let mut c = options.connect().await?;
                let mut tx = c.begin().await?;
                sqlx::query("SET TRANSACTION READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let row = sqlx::query(text).fetch_optional(&mut *tx).await;
                tx.rollback().await?;
                c.close().await?;
                Ok(row?.is_some())
            }
            SqlDialect::MySql => {
                let mut c = sqlx::MySqlConnection::connect(&self.connect_url).await?;
                let version: String = sqlx::query_scalar("SELECT VERSION()")
                    .fetch_one(&mut c)
                    .await?;
                let limit = if version.to_ascii_lowercase().contains("mariadb") {
                    format!(
                        "SET SESSION max_statement_time = {:.3}",
                        timeout.as_secs_f64().max(0.001)
                    )
                } else {
                    format!(
                        "SET SESSION max_execution_time = {}",
                        timeout.as_millis().max(1)
                    )
                };
                sqlx::query(AssertSqlSafe(limit)).execute(&mut c).await?;
                sqlx::query("SET SESSION TRANSACTION READ ONLY")
                    .execute(&mut c)
                    .await?;
                sqlx::query("START TRANSACTION READ ONLY")
                    .execute(&mut c)
                    .await?;
                let row = sqlx::query(text).fetch_optional(&mut c).await;
                sqlx::query("ROLLBACK").execute(&mut c).await?;
                c.close().await?;
                Ok(row?.is_some())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [SqlDialect; 3] = [SqlDialect::Sqlite, SqlDialect::Postgres, SqlDialect::MySql];

    #[test]
    fn one_plain_select_passes_in_every_dialect() {
        for d in ALL {
            check_read_only_select(
                "SELECT 1 FROM ingested_file_status WHERE file_url LIKE '%Item%'",
                d,
            )
            .unwrap();
            check_read_only_select(
                "WITH f AS (SELECT file_url FROM ingested_file_status) SELECT 1 FROM f",
                d,
            )
            .unwrap();
        }
    }

    #[test]
    fn anything_that_could_write_or_hide_is_refused() {
        for bad in [
            // The reproduction: SQLite does not nest comments.
            "SELECT 1 FROM job_runs WHERE 1=0 /* /* */; PRAGMA query_only=OFF; DELETE FROM aggr_job_configuration; -- */",
            "SELECT 1; DELETE FROM aggr_job_configuration",
            "SELECT 1 /*! ; DELETE FROM job_runs */",
            "SELECT 1 -- trailing comment",
            "SELECT 1 # mysql comment",
            "SELECT '\\'' ",
            "WITH d AS (DELETE FROM job_runs RETURNING *) SELECT * FROM d",
            "WITH u AS (UPDATE aggr_job_configuration SET last_exec_status = 'x' RETURNING 1) SELECT * FROM u",
            "DELETE FROM job_runs",
            "UPDATE aggr_job_configuration SET last_exec_status = 'x'",
            "SELECT * FROM job_runs FOR UPDATE",
            "SELECT * INTO copy FROM job_runs",
            "PRAGMA query_only = OFF",
            "not sql",
            "SELECT 1\u{0}",
        ] {
            for d in ALL {
                assert!(check_read_only_select(bad, d).is_err(), "{d:?}: {bad}");
            }
        }
    }

    #[test]
    fn the_reason_is_named() {
        let e = check_read_only_select("SELECT 1; DELETE FROM x", SqlDialect::Sqlite).unwrap_err();
        assert!(e.to_string().contains("`;`"), "{e}");
        let e = check_read_only_select(
            "WITH d AS (DELETE FROM job_runs RETURNING *) SELECT * FROM d",
            SqlDialect::Postgres,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("DELETE")
                || e.to_string().contains("not a query")
                || e.to_string().contains("SQL"),
            "{e}"
        );
    }
}
