//! `tally schedule --executor local`: the whole local loop (validate → track → schedule → run →
//! COMPLETED), each precondition failing on its own, a failing run, and two schedulers at once.

mod common;

use common::*;
use serde_json::Value;
use tally::state::StateStore;

struct Setup {
    _dir: tempfile::TempDir,
    state: String,
    val: std::path::PathBuf,
    table: std::path::PathBuf,
}

fn setup(state: Option<String>) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let state =
        state.unwrap_or_else(|| format!("sqlite://{}", dir.path().join("state.db").display()));
    let table = dir.path().join("table");
    Setup {
        state,
        val,
        table,
        _dir: dir,
    }
}

fn register(s: &Setup, criteria: &str) {
    ok(&[
        "jobs",
        "register",
        "province_sales",
        "--config-id",
        "wi-daily",
        "--province",
        "WI",
        "--input",
        s.val.to_str().unwrap(),
        "--min-files",
        "5",
        "--criteria",
        criteria,
        "--table",
        s.table.to_str().unwrap(),
        "--state",
        &s.state,
    ]);
}

fn track(s: &Setup, names: &[&str]) {
    let mut args = vec!["track".to_string()];
    for n in names {
        args.push("--file".into());
        args.push(s.val.join(n).display().to_string());
    }
    args.extend(["--state".into(), s.state.clone()]);
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(&refs);
}

fn schedule(s: &Setup) -> Value {
    serde_json::from_str(&ok(&[
        "schedule",
        "--executor",
        "local",
        "--state",
        &s.state,
        "--json",
    ]))
    .unwrap()
}

fn decision(d: &Value) -> (String, String) {
    (
        d[0]["outcome"].as_str().unwrap().to_string(),
        d[0]["detail"].as_str().unwrap().to_string(),
    )
}

const WI_FILES: [&str; 5] = [
    "WI-201.csv",
    "WI-201-1500.csv",
    "WI-202.csv",
    "WI-203.csv",
    "WI-204.csv",
];
const ITEM_CRITERIA: &str =
    "SELECT 1 FROM ingested_file_status WHERE file_url LIKE '%Item-Master-Data.csv'";

#[tokio::test(flavor = "multi_thread")]
async fn the_local_loop_runs_a_job_once_its_preconditions_hold() {
    let s = setup(None);
    register(&s, ITEM_CRITERIA);

    // Too few files.
    track(&s, &WI_FILES[..3]);
    let (outcome, detail) = decision(&schedule(&s));
    assert_eq!(outcome, "skipped");
    assert!(detail.contains("3 of 5 files"), "{detail}");

    // Enough files, but the extra criteria (an item master validated) return no row.
    track(&s, &WI_FILES);
    let (outcome, detail) = decision(&schedule(&s));
    assert_eq!(
        (outcome.as_str(), detail.as_str()),
        ("skipped", "the extra criteria returned no row")
    );

    // All preconditions hold: the job runs and reports COMPLETED itself.
    track(&s, &["Item-Master-Data.csv"]);
    let (outcome, _) = decision(&schedule(&s));
    assert_eq!(outcome, "submitted");
    let store = StateStore::connect(&s.state).await.unwrap();
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status.as_str(), runs[0].rows_out),
        ("COMPLETED", Some(expected_sample().len() as i64))
    );
    assert!(runs[0].hudi_instant.is_some());
    let config = &store.job_configs().await.unwrap()[0];
    assert_eq!(config.last_exec_status.as_deref(), Some("COMPLETED"));
    // The files it used now say which job they were submitted to.
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&s.state)
        .await
        .unwrap();
    let submitted: Vec<(String, String)> =
        sqlx::query_as("SELECT file_url, submitted_jobs FROM ingested_file_status")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    for (url, jobs) in &submitted {
        let expected = if url.ends_with("Item-Master-Data.csv") {
            "[]"
        } else {
            "[\"wi-daily\"]"
        };
        assert_eq!(jobs, expected, "{url}");
    }

    // Nothing was validated since that run: not submitted again.
    let (outcome, detail) = decision(&schedule(&s));
    assert_eq!(outcome, "skipped");
    assert!(
        detail.contains("not validated again since the last run"),
        "{detail}"
    );

    // New versions of every file: the job runs again.
    track(&s, &WI_FILES);
    let (outcome, _) = decision(&schedule(&s));
    assert_eq!(outcome, "submitted");
    assert_eq!(store.recent_runs(10).await.unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn criteria_that_could_write_are_refused() {
    let s = setup(None);
    register(&s, "DELETE FROM job_runs");
    track(&s, &WI_FILES);
    let (outcome, detail) = decision(&schedule(&s));
    assert_eq!(outcome, "failed");
    assert!(
        detail.contains("criteria refused") && detail.contains("only a SELECT"),
        "{detail}"
    );
    let store = StateStore::connect(&s.state).await.unwrap();
    assert!(store.recent_runs(10).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_run_is_recorded_failed() {
    let s = setup(None);
    register(&s, "SELECT 1");
    track(&s, &WI_FILES);
    // The files are tracked, but the folder is gone when the job runs.
    std::fs::remove_dir_all(&s.val).unwrap();
    let (outcome, detail) = decision(&schedule(&s));
    assert_eq!(outcome, "submitted");
    assert!(detail.contains("failed"), "{detail}");
    let store = StateStore::connect(&s.state).await.unwrap();
    let runs = store.recent_runs(10).await.unwrap();
    assert_eq!(runs[0].status, "FAILED");
    assert!(
        runs[0].error.as_deref().unwrap_or_default().contains("val"),
        "{:?}",
        runs[0].error
    );
    assert_eq!(
        store.job_configs().await.unwrap()[0]
            .last_exec_status
            .as_deref(),
        Some("FAILED")
    );
}

async fn two_schedulers_at_once_submit_once(state: Option<String>) {
    let s = setup(state);
    register(&s, "SELECT 1");
    track(&s, &WI_FILES);
    let spawn = || {
        tally()
            .args([
                "schedule",
                "--executor",
                "local",
                "--state",
                &s.state,
                "--json",
            ])
            .output()
    };
    let (a, b) = std::thread::scope(|scope| {
        let a = scope.spawn(spawn);
        let b = scope.spawn(spawn);
        (a.join().unwrap().unwrap(), b.join().unwrap().unwrap())
    });
    let outcomes: Vec<String> = [a, b]
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let d: Value = serde_json::from_slice(&o.stdout).unwrap();
            d[0]["outcome"].as_str().unwrap().to_string()
        })
        .collect();
    assert_eq!(
        outcomes.iter().filter(|o| *o == "submitted").count(),
        1,
        "{outcomes:?}"
    );
    let store = StateStore::connect(&s.state).await.unwrap();
    assert_eq!(store.recent_runs(10).await.unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_at_once_submit_once_on_sqlite() {
    two_schedulers_at_once_submit_once(None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_at_once_submit_once_on_postgres() {
    two_schedulers_at_once_submit_once(Some(fresh_postgres_schema("sched").await)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_schedulers_at_once_submit_once_on_mariadb() {
    two_schedulers_at_once_submit_once(Some(fresh_mysql_database("sched").await)).await;
}
