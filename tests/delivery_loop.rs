//! The event-driven loop keeps delivering (issue 10): a failed run is retried without new uploads,
//! with backoff and a limit; the watermark is the input listing time; stuck jobs are released;
//! the two sinks converge after a failure between their publishes; hostile criteria never run;
//! no password leaves the process. State-store behaviour is checked on SQLite, PostgreSQL and
//! MariaDB (servers started by tests/run.sh).

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;
use tally::state::StateStore;

const WI_FILES: [&str; 5] = [
    "WI-201.csv",
    "WI-201-1500.csv",
    "WI-202.csv",
    "WI-203.csv",
    "WI-204.csv",
];

async fn fresh_store(backend: &str, dir: &Path) -> String {
    fresh_state_store(backend, &dir.join("state.db"), "loop").await
}

struct Loop {
    dir: tempfile::TempDir,
    state: String,
    val: PathBuf,
}

impl Loop {
    async fn new(backend: &str) -> Loop {
        let dir = tempfile::tempdir().unwrap();
        let val = validated_sample(dir.path());
        let state = fresh_store(backend, dir.path()).await;
        Loop { dir, state, val }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn register(&self, extra: &[&str]) {
        let mut args = vec![
            "jobs",
            "register",
            "province_sales",
            "--config-id",
            "wi-daily",
            "--province",
            "WI",
            "--input",
            self.val.to_str().unwrap(),
            "--min-files",
            "5",
            "--state",
            &self.state,
        ];
        args.extend_from_slice(extra);
        ok(&args);
    }

    fn track(&self) {
        let mut args = vec!["track".to_string()];
        for n in WI_FILES {
            args.extend(["--file".into(), self.val.join(n).display().to_string()]);
        }
        args.extend(["--state".into(), self.state.clone()]);
        ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    }

    /// One `tally schedule --json` pass (with extra environment), as JSON and raw output.
    fn schedule_with(&self, extra: &[&str], env: &[(&str, &str)]) -> (Value, String) {
        let mut cmd = tally();
        cmd.args([
            "schedule",
            "--executor",
            "local",
            "--state",
            &self.state,
            "--json",
        ])
        .args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "schedule failed: {stderr}");
        (
            serde_json::from_str(&stdout).unwrap(),
            format!("{stdout}\n{stderr}"),
        )
    }

    fn schedule(&self) -> Value {
        self.schedule_with(&[], &[]).0
    }

    async fn store(&self) -> StateStore {
        StateStore::connect(&self.state).await.unwrap()
    }
}

/// The decision for `wi-daily` (a pass may also list released jobs first).
fn decision(d: &Value) -> (String, String) {
    let d = d
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|d| d["job_config_id"] == "wi-daily")
        .expect("a decision for wi-daily");
    (
        d["outcome"].as_str().unwrap().to_string(),
        d["detail"].as_str().unwrap().to_string(),
    )
}

/// The warehouse table's rows in the expected file's columns, sorted.
async fn warehouse_rows(db: &Path) -> Vec<String> {
    use sqlx::Connection;
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let rows: Vec<(String, String, String, String, String, String, String)> = sqlx::query_as(
        "SELECT province, store_id, item_id, trans_date, CAST(sale_amount AS TEXT), \
         CAST(tax_amount AS TEXT), CAST(discount_amount AS TEXT) FROM store_item_daily_sales",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let mut lines: Vec<String> = rows
        .into_iter()
        .map(|(a, b, c, d, e, f, g)| [a, b, c, d, e, f, g].join(","))
        .collect();
    lines.sort();
    lines
}

/// The warehouse rows, or none when the database or its table does not exist.
async fn warehouse_rows_if_any(db: &Path) -> Vec<String> {
    use sqlx::Connection;
    if !db.exists() {
        return Vec::new();
    }
    let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = 'store_item_daily_sales'",
    )
    .fetch_one(&mut c)
    .await
    .unwrap();
    if tables == 0 {
        return Vec::new();
    }
    warehouse_rows(db).await
}

/// The Hudi table's rows in the expected file's columns, sorted (read by `tally query`).
fn hudi_rows(table: &Path) -> Vec<String> {
    let out = ok(&[
        "query",
        "--table",
        table.to_str().unwrap(),
        "--format",
        "csv",
        "SELECT province, store_id, item_id, trans_date, sale_amount, tax_amount, discount_amount FROM store_item_daily_sales",
    ]);
    project(&csv_rows(&out), RESULT_COLUMNS)
}

async fn a_failed_run_is_retried_once_the_warehouse_opens(backend: &str) {
    let l = Loop::new(backend).await;
    // The warehouse's folder is a file: it cannot be opened.
    let blocker = l.path("wh");
    std::fs::write(&blocker, "not a folder").unwrap();
    let db = blocker.join("warehouse.db");
    let warehouse = format!("sqlite://{}", db.display());
    l.register(&["--warehouse", &warehouse]);
    l.track();

    let (outcome, detail) = decision(&l.schedule());
    assert_eq!(outcome, "submitted", "{detail}");
    assert!(detail.contains("failed"), "{detail}");
    let store = l.store().await;
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs[0].status, "FAILED");
    assert!(
        runs[0].error.as_deref().unwrap().contains("cannot create"),
        "{:?}",
        runs[0].error
    );
    let job = store.job_config("wi-daily").await.unwrap();
    assert_eq!(
        (job.last_exec_status.as_deref(), job.failed_attempts),
        (Some("FAILED"), 1)
    );
    assert_eq!(job.last_run_timestamp, None, "a failure sets no watermark");

    // The warehouse can be opened now; no file is tracked again.
    std::fs::remove_file(&blocker).unwrap();
    let (outcome, detail) = decision(&l.schedule());
    assert_eq!(outcome, "submitted", "{detail}");
    assert!(detail.contains("retry 1"), "{detail}");
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].rows_out),
        ("COMPLETED", Some(expected_sample().len() as i64))
    );
    assert_eq!(warehouse_rows(&db).await, expected_sample());
    let job = store.job_config("wi-daily").await.unwrap();
    assert_eq!(
        (job.last_exec_status.as_deref(), job.failed_attempts),
        (Some("COMPLETED"), 0)
    );
    // The watermark is when the run listed its inputs, before it finished.
    let watermark = job.last_run_timestamp.clone().unwrap();
    assert_eq!(Some(&watermark), runs[0].inputs_listed_at.as_ref());
    assert!(watermark < runs[0].finished_at.clone().unwrap());

    // And with nothing new, nothing runs.
    let (outcome, detail) = decision(&l.schedule());
    assert_eq!(outcome, "skipped", "{detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_after_a_warehouse_outage_on_sqlite() {
    a_failed_run_is_retried_once_the_warehouse_opens("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_after_a_warehouse_outage_on_postgres() {
    a_failed_run_is_retried_once_the_warehouse_opens("postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retried_after_a_warehouse_outage_on_mariadb() {
    a_failed_run_is_retried_once_the_warehouse_opens("mysql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_back_off_stop_at_the_limit_and_rearm_on_new_files() {
    let l = Loop::new("sqlite").await;
    let blocker = l.path("wh");
    std::fs::write(&blocker, "x").unwrap();
    let warehouse = format!("sqlite://{}", blocker.join("w.db").display());
    l.register(&[
        "--warehouse",
        &warehouse,
        "--max-retries",
        "2",
        "--retry-backoff-secs",
        "2",
    ]);
    l.track();
    assert_eq!(decision(&l.schedule()).0, "submitted"); // attempt 1 fails
    assert_eq!(decision(&l.schedule()).0, "submitted"); // retry 1 at once, fails
    let (outcome, detail) = decision(&l.schedule());
    assert_eq!(outcome, "skipped");
    assert!(detail.contains("retry 2 of 2 is due at"), "{detail}");

    // The backoff passed: retry 2 runs and fails; then it gives up.
    let store = l.store().await;
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert_eq!(decision(&l.schedule()).0, "submitted");
    let (outcome, detail) = decision(&l.schedule());
    assert_eq!(outcome, "skipped");
    assert!(
        detail.contains("gave up after 3 failed attempts"),
        "{detail}"
    );
    assert_eq!(store.recent_runs(10).await.unwrap().len(), 3);

    // New versions of the files re-arm it.
    std::fs::remove_file(&blocker).unwrap();
    l.track();
    assert_eq!(decision(&l.schedule()).0, "submitted");
    assert_eq!(store.recent_runs(1).await.unwrap()[0].status, "COMPLETED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_validated_while_a_run_listed_its_inputs_is_not_counted_as_processed() {
    let l = Loop::new("sqlite").await;
    let warehouse = format!("sqlite://{}", l.path("w.db").display());
    l.register(&["--warehouse", &warehouse]);
    l.track();
    assert_eq!(decision(&l.schedule()).0, "submitted");
    let store = l.store().await;
    let run = store.recent_runs(1).await.unwrap().remove(0);
    let listed = tally::state::parse_store_time(&run.inputs_listed_at.unwrap()).unwrap();
    let finished = tally::state::parse_store_time(&run.finished_at.unwrap()).unwrap();
    assert!(listed < finished);
    // Every store uploads again; the files' validation times fall after the listing but before
    // the run finished (as if their uploads raced the run). They were not all read: run again.
    let during = listed + (finished - listed) / 2;
    // Track through the library with the exact times.
    let files: Vec<(String, chrono::DateTime<chrono::Utc>)> = WI_FILES
        .iter()
        .map(|f| (l.val.join(f).display().to_string(), during))
        .collect();
    store.track_files(&files).await.unwrap();
    let (outcome, detail) = decision(&l.schedule());
    assert_eq!(outcome, "submitted", "{detail}");
}

async fn stuck_jobs_are_released(backend: &str) {
    let l = Loop::new(backend).await;
    let warehouse = format!("sqlite://{}", l.path("w.db").display());
    l.register(&["--warehouse", &warehouse]);
    l.track();
    let store = l.store().await;

    // A scheduler claimed the job and died before starting the run.
    assert!(store.claim_job("wi-daily", "local:gone:1").await.unwrap());
    let (d, _) = l.schedule_with(&["--lease-secs", "3600"], &[]);
    assert_eq!(decision(&d), ("skipped".into(), "already RUNNING".into()));
    let (d, _) = l.schedule_with(&["--lease-secs", "0"], &[]);
    let outcomes: Vec<&str> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["released", "submitted"], "{d}");
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs[0].status, "COMPLETED");
    assert!(runs[1]
        .error
        .as_deref()
        .unwrap()
        .contains("claimed by local:gone:1"));

    // A run that started and died (no heartbeat): released, then retried.
    l.track();
    let run = store
        .start_run("province_sales", Some("wi-daily"), Some("WI"))
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (d, _) = l.schedule_with(&["--lease-secs", "1"], &[]);
    assert_eq!(d[0]["outcome"], "released", "{d}");
    assert_eq!(decision(&d).0, "submitted", "{d}");
    let runs = store.recent_runs(10).await.unwrap();
    let dead = runs.iter().find(|r| r.run_id == run).unwrap();
    assert_eq!(dead.status, "FAILED");
    assert_eq!(runs[0].status, "COMPLETED");
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_jobs_are_released_on_sqlite() {
    stuck_jobs_are_released("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_jobs_are_released_on_postgres() {
    stuck_jobs_are_released("postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stuck_jobs_are_released_on_mariadb() {
    stuck_jobs_are_released("mysql").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn both_sinks_converge_after_a_failure_between_their_publishes() {
    let l = Loop::new("sqlite").await;
    let table = l.path("table");
    let db = l.path("w.db");
    let warehouse = format!("sqlite://{}", db.display());
    l.register(&[
        "--table",
        table.to_str().unwrap(),
        "--warehouse",
        &warehouse,
    ]);
    l.track();

    // The Hudi commit lands; the warehouse publish then fails.
    let (d, _) = l.schedule_with(&[], &[("TALLY_FAILPOINT", "between-publishes=error")]);
    assert_eq!(decision(&d).0, "submitted");
    let store = l.store().await;
    let run = store.recent_runs(1).await.unwrap().remove(0);
    assert_eq!(run.status, "FAILED");
    let error = run.error.unwrap();
    assert!(
        error.contains("already published: hudi") && error.contains("disagree"),
        "{error}"
    );
    assert_eq!(hudi_rows(&table), expected_sample());
    // The staged warehouse write was discarded: no table, or an empty one.
    assert!(warehouse_rows_if_any(&db).await.is_empty());

    // The next pass retries and both sinks agree.
    assert_eq!(decision(&l.schedule()).0, "submitted");
    assert_eq!(store.recent_runs(1).await.unwrap()[0].status, "COMPLETED");
    assert_eq!(hudi_rows(&table), expected_sample());
    assert_eq!(warehouse_rows(&db).await, expected_sample());

    // A run killed between the publishes: the scheduler records it, the retry converges.
    l.track();
    let (d, _) = l.schedule_with(&[], &[("TALLY_FAILPOINT", "between-publishes")]);
    assert!(decision(&d).1.contains("failed"), "{d}");
    let job = store.job_config("wi-daily").await.unwrap();
    assert_eq!(job.last_exec_status.as_deref(), Some("FAILED"));
    assert_eq!(decision(&l.schedule()).0, "submitted");
    assert_eq!(store.recent_runs(1).await.unwrap()[0].status, "COMPLETED");
    assert_eq!(warehouse_rows(&db).await, expected_sample());
    assert_eq!(hudi_rows(&table), expected_sample());
}

/// The reproductions.
const HOSTILE: [&str; 4] = [
    "SELECT 1 FROM job_runs WHERE 1=0 /* /* */; PRAGMA query_only=OFF; DELETE FROM aggr_job_configuration; -- */",
    "SELECT 1; DELETE FROM aggr_job_configuration",
    "WITH d AS (DELETE FROM aggr_job_configuration RETURNING *) SELECT * FROM d",
    "SELECT 1 /*! ; DELETE FROM aggr_job_configuration */",
];

async fn hostile_criteria_never_run(backend: &str) {
    for criteria in HOSTILE {
        let l = Loop::new(backend).await;
        l.register(&[
            "--criteria",
            criteria,
            "--table",
            l.path("t").to_str().unwrap(),
        ]);
        l.track();
        let (outcome, detail) = decision(&l.schedule());
        assert_eq!(outcome, "failed", "{criteria}: {detail}");
        assert!(detail.contains("criteria refused"), "{detail}");
        let store = l.store().await;
        assert_eq!(store.job_configs().await.unwrap().len(), 1, "{criteria}");
        assert!(
            store.recent_runs(10).await.unwrap().is_empty(),
            "{criteria}"
        );
        assert!(!l.path("t").exists(), "the job was not run");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_criteria_never_run_on_sqlite() {
    hostile_criteria_never_run("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_criteria_never_run_on_postgres() {
    hostile_criteria_never_run("postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_criteria_never_run_on_mariadb() {
    hostile_criteria_never_run("mysql").await;
}

/// A criteria query that runs past its time limit is stopped by the server, not only abandoned
/// by the client (which would say "did not answer").
async fn slow_criteria_are_stopped_by_the_server(backend: &str, slow: &str) {
    let l = Loop::new(backend).await;
    l.register(&["--criteria", slow, "--table", l.path("t").to_str().unwrap()]);
    l.track();
    let started = std::time::Instant::now();
    let (d, _) = l.schedule_with(&["--criteria-timeout-secs", "1"], &[]);
    let (outcome, detail) = decision(&d);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
    assert!(
        outcome == "failed" || outcome == "skipped",
        "{outcome}: {detail}"
    );
    assert!(!detail.contains("did not answer"), "{detail}");
    assert!(l.store().await.recent_runs(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_criteria_are_stopped_on_sqlite() {
    slow_criteria_are_stopped_by_the_server(
        "sqlite",
        "WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 2000000000) SELECT 1 FROM c WHERE n = 0",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_criteria_are_stopped_on_postgres() {
    slow_criteria_are_stopped_by_the_server("postgres", "SELECT 1 FROM pg_sleep(30)").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_criteria_are_stopped_on_mariadb() {
    slow_criteria_are_stopped_by_the_server(
        "mysql",
        "SELECT 1 FROM ingested_file_status WHERE SLEEP(30) = 1",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_password_leaves_the_process() {
    // A fresh schema (the URL sets its search path), with the password added two ways.
    let base = fresh_postgres_schema("secrets").await;
    let with_user_info = base.replacen("postgres@", "postgres:UserInfoS3cret@", 1);
    assert_ne!(with_user_info, base, "{base}");
    let in_query = format!("{base}&password=QueryS3cret");
    // A warehouse that cannot be reached, so the errors get a chance to quote it.
    let port = base
        .split("@127.0.0.1:")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap()
        .to_string();
    let unreachable = base.replacen(&format!(":{port}/"), ":1/", 1).replacen(
        "postgres@",
        "postgres:DeadS3cret@",
        1,
    ) + "&password=DeadQueryS3cret";
    let secrets = [
        "UserInfoS3cret",
        "QueryS3cret",
        "DeadS3cret",
        "DeadQueryS3cret",
    ];
    let clean = |text: &str, what: &str| {
        for s in secrets {
            assert!(!text.contains(s), "{what} shows {s}:\n{text}");
        }
    };

    // tally run, succeeding and failing.
    let l = Loop::new("sqlite").await;
    for url in [&with_user_info, &in_query] {
        let out = job_run("province_sales", "WI", &l.val)
            .warehouse(url)
            .state(&l.state)
            .run();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        clean(&String::from_utf8_lossy(&out.stdout), "run stdout");
        clean(&String::from_utf8_lossy(&out.stderr), "run stderr");
    }
    let out = job_run("province_sales", "WI", &l.val)
        .warehouse(&unreachable)
        .state(&l.state)
        .run();
    assert!(!out.status.success());
    clean(&String::from_utf8_lossy(&out.stdout), "failed run stdout");
    clean(&String::from_utf8_lossy(&out.stderr), "failed run stderr");

    // tally schedule and schedule --json, with the password in the registered warehouse.
    l.register(&["--warehouse", &unreachable]);
    l.track();
    let (_, text) = l.schedule_with(&[], &[]);
    clean(&text, "schedule --json");
    let out = tally()
        .args(["schedule", "--executor", "local", "--state", &l.state])
        .output()
        .unwrap();
    clean(&String::from_utf8_lossy(&out.stdout), "schedule");
    clean(&String::from_utf8_lossy(&out.stderr), "schedule stderr");

    let store = l.store().await;
    let runs = store.recent_runs(20).await.unwrap();
    assert!(runs.iter().filter(|r| r.status == "FAILED").count() >= 2);
    for r in &runs {
        clean(r.error.as_deref().unwrap_or_default(), "job_runs.error");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_odd_file_in_the_folder_does_not_stop_the_province() {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let expected = job_run("province_sales", "WI", &val).dry_run().ok();
    std::fs::write(val.join("WI-9\u{1}9.csv"), "x\n").unwrap();
    std::os::unix::fs::symlink(dir.path().join("gone.csv"), val.join("WI-broken.csv")).unwrap();
    let out = job_run("province_sales", "WI", &val).dry_run().run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
    assert!(stderr.contains("skipped a file"), "{stderr}");
}
