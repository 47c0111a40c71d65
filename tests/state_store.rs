//! `tally run --state URL` records its own runs, on SQLite, PostgreSQL and MariaDB (servers started
//! by tests/run.sh): COMPLETED with the run's counts, or FAILED with the error text.

mod common;

use common::*;
use sqlx::{AssertSqlSafe, Connection};
use tally::state::StateStore;

fn env_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with tests/run.sh, which starts the servers")
    })
}

/// A fresh, empty state store per test and backend.
async fn fresh_store(backend: &str, dir: &std::path::Path) -> String {
    let name = format!(
        "t_state_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    match backend {
        "sqlite" => format!("sqlite://{}", dir.join("state/state.db").display()),
        "postgres" => {
            let base = env_url("TALLY_TEST_POSTGRES_URL");
            let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
            sqlx::query(AssertSqlSafe(format!("CREATE SCHEMA {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            format!("{base}?options=-c%20search_path%3D{name}")
        }
        "mysql" => {
            let base = env_url("TALLY_TEST_MYSQL_URL");
            let mut conn = sqlx::MySqlConnection::connect(&base).await.unwrap();
            sqlx::query(AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .unwrap();
            let (server, _) = base.rsplit_once('/').unwrap();
            format!("{server}/{name}")
        }
        other => panic!("unknown backend {other}"),
    }
}

async fn completed_and_failed_runs_are_recorded(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state = fresh_store(backend, dir.path()).await;
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    tally::demo::write_sample_files(&raw).unwrap();
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    let out = dir.path().join("rows.csv");
    ok(&[
        "run",
        "--job",
        "province_sales",
        "--province",
        "WI",
        "--input",
        val.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--state",
        &state,
    ]);
    let result_rows = std::fs::read_to_string(&out).unwrap().lines().count() as i64 - 1;
    let missing = dir.path().join("no-such-folder");
    let err = fails(&[
        "run",
        "--job",
        "province_sales",
        "--province",
        "WI",
        "--input",
        missing.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--state",
        &state,
    ]);

    let store = StateStore::connect(&state).await.unwrap();
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let completed = runs
        .iter()
        .find(|r| r.status == "COMPLETED")
        .expect("a COMPLETED run");
    assert_eq!(completed.rows_out, Some(result_rows));
    assert_eq!(completed.rows_out, Some(expected_sample().len() as i64));
    assert_eq!(completed.rows_in, Some(22));
    assert_eq!(completed.job, "province_sales");
    assert_eq!(completed.province.as_deref(), Some("WI"));
    assert!(completed.finished_at.is_some());
    let failed = runs
        .iter()
        .find(|r| r.status == "FAILED")
        .expect("a FAILED run");
    let text = failed.error.as_deref().unwrap_or_default();
    assert!(text.contains("no-such-folder"), "{text}");
    assert!(
        err.contains(text),
        "the stored error is what the user saw: {err}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_records_runs() {
    completed_and_failed_runs_are_recorded("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_records_runs() {
    completed_and_failed_runs_are_recorded("postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_records_runs() {
    completed_and_failed_runs_are_recorded("mysql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_updates_its_job_configuration_row() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let state = format!("sqlite://{}", db.display());
    StateStore::connect(&state).await.unwrap().close().await;
    let mut conn = sqlx::SqliteConnection::connect(&state).await.unwrap();
    sqlx::query("INSERT INTO aggr_job_configuration (job_config_id, job_input_pattern, job_min_file_count) VALUES ('wi-daily', 'WI-*.csv', 4)")
        .execute(&mut conn)
        .await
        .unwrap();
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    tally::demo::write_sample_files(&raw).unwrap();
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    let out = dir.path().join("rows.csv");
    ok(&[
        "run",
        "--job",
        "province_sales",
        "--province",
        "WI",
        "--input",
        val.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--state",
        &state,
        "--job-config-id",
        "wi-daily",
    ]);
    let (status, at): (String, Option<String>) = sqlx::query_as(
        "SELECT last_exec_status, last_run_timestamp FROM aggr_job_configuration WHERE job_config_id = 'wi-daily'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(status, "COMPLETED");
    assert!(at.is_some_and(|t| t.starts_with("20")));
}

#[test]
fn a_dry_run_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    tally::demo::write_sample_files(&raw).unwrap();
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    ok(&[
        "run",
        "--job",
        "province_sales",
        "--province",
        "WI",
        "--input",
        val.to_str().unwrap(),
        "--dry-run",
        "--state",
        &format!("sqlite://{}", db.display()),
    ]);
    assert!(!db.exists());
}
