//! `tally run --state URL` records its own runs, on SQLite, PostgreSQL and MariaDB (servers started
//! by tests/run.sh): COMPLETED with the run's counts, or FAILED with the error text.

mod common;

use common::*;
use sqlx::{AssertSqlSafe, Connection};
use tally::state::StateStore;

/// A fresh, empty state store per test and backend.
async fn fresh_store(backend: &str, dir: &std::path::Path) -> String {
    fresh_state_store(backend, &dir.join("state/state.db"), "state").await
}

async fn completed_and_failed_runs_are_recorded(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state = fresh_store(backend, dir.path()).await;
    let val = validated_sample(dir.path());
    let out = dir.path().join("rows.csv");
    job_run("province_sales", "WI", &val)
        .output(&out)
        .state(&state)
        .ok();
    let result_rows = std::fs::read_to_string(&out).unwrap().lines().count() as i64 - 1;
    let missing = dir.path().join("no-such-folder");
    let err = job_run("province_sales", "WI", &missing)
        .output(&out)
        .state(&state)
        .fails();

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
    let val = validated_sample(dir.path());
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
    let val = validated_sample(dir.path());
    job_run("province_sales", "WI", &val)
        .dry_run()
        .state(&format!("sqlite://{}", db.display()))
        .ok();
    assert!(!db.exists());
}

/// Reads one text column of a table through the state store's own backend connection string.
async fn query_texts(state: &str, sql: &str) -> Vec<String> {
    use sqlx::Row;
    let rows: Vec<String> = if state.starts_with("sqlite://") {
        let mut c = sqlx::SqliteConnection::connect(state).await.unwrap();
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else if state.starts_with("postgres://") {
        let mut c = sqlx::PgConnection::connect(state).await.unwrap();
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    } else {
        let mut c = sqlx::MySqlConnection::connect(state).await.unwrap();
        sqlx::query(AssertSqlSafe(sql.to_string()))
            .fetch_all(&mut c)
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    };
    let mut rows = rows;
    rows.sort();
    rows
}

async fn files_are_tracked_and_jobs_registered(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state = fresh_store(backend, dir.path()).await;
    ok(&[
        "track",
        "--file",
        "s3://pos/validated/IL-101.csv",
        "--file",
        "s3://pos/validated/IL-111.csv",
        "--state",
        &state,
    ]);
    let event = dir.path().join("event.json");
    std::fs::write(
        &event,
        r#"{"Records":[{"eventTime":"2026-03-01T10:00:00.000Z","s3":{"bucket":{"name":"pos"},"object":{"key":"validated/IL-101.csv"}}},
                       {"eventTime":"2026-03-01T10:05:00.000Z","s3":{"bucket":{"name":"pos"},"object":{"key":"validated/Item+Master.csv"}}}]}"#,
    )
    .unwrap();
    ok(&[
        "track",
        "--s3-event",
        event.to_str().unwrap(),
        "--state",
        &state,
    ]);
    let files = query_texts(&state, "SELECT CONCAT(file_url, '|', last_validated_timestamp, '|', submitted_jobs) FROM ingested_file_status").await;
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(
        files.contains(&"s3://pos/validated/IL-101.csv|2026-03-01 10:00:00.000000|[]".to_string()),
        "{files:?}"
    );
    assert!(
        files
            .iter()
            .any(|f| f.starts_with("s3://pos/validated/Item Master.csv|2026-03-01 10:05:00")),
        "{files:?}"
    );

    ok(&[
        "jobs",
        "register",
        "province_sales",
        "--config-id",
        "il-daily",
        "--province",
        "IL",
        "--input",
        "s3://pos/validated/",
        "--min-files",
        "2",
        "--criteria",
        "SELECT 1",
        "--table",
        "s3://lake/sales",
        "--state",
        &state,
    ]);
    // Registering again updates the row instead of adding one.
    ok(&[
        "jobs",
        "register",
        "province_sales",
        "--config-id",
        "il-daily",
        "--province",
        "IL",
        "--input",
        "s3://pos/validated",
        "--min-files",
        "13",
        "--state",
        &state,
    ]);
    let jobs = query_texts(&state, "SELECT CONCAT(job_config_id, '|', job_input_pattern, '|', TRIM(CAST(job_min_file_count AS CHAR(8)))) FROM aggr_job_configuration").await;
    assert_eq!(
        jobs,
        ["il-daily|s3://pos/validated/{IL-*.csv,IL-*.parquet}|13"]
    );
    let params = query_texts(&state, "SELECT job_params FROM aggr_job_configuration").await;
    let params: serde_json::Value = serde_json::from_str(&params[0]).unwrap();
    assert_eq!(params["job"], "province_sales");
    assert_eq!(params["params"]["province"], "IL");
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_tracks_files_and_registers_jobs() {
    files_are_tracked_and_jobs_registered("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_tracks_files_and_registers_jobs() {
    files_are_tracked_and_jobs_registered("postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn mariadb_tracks_files_and_registers_jobs() {
    files_are_tracked_and_jobs_registered("mysql").await;
}
