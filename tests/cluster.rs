//! The province job on a Ballista cluster of tally processes (`--features distributed`): a
//! scheduler and two executors started as real processes on loopback, and `tally run --cluster`
//! compared byte for byte with the same run in one process, over local files and over the S3 test
//! server; and the ways a cluster fails a run (no executor, executor lost, no scheduler), each
//! within a bound, with the sinks as they were and FAILED in the state store.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `tally cluster ARGS` as a background process, its output in `log`.
fn cluster_process(args: &[&str], log: &Path) -> Running {
    let log = std::fs::File::create(log).unwrap();
    Running(
        Command::new(assert_cmd::cargo::cargo_bin("tally"))
            .current_dir(repo())
            .args(["--quiet", "-v", "cluster"])
            .args(args)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("tally cluster starts"),
    )
}

/// A scheduler and its executors, stopped when dropped.
struct Cluster {
    url: String,
    scheduler_port: u16,
    logs: tempfile::TempDir,
    executors: Vec<Running>,
    _scheduler: Running,
}

impl Cluster {
    /// A scheduler with `executors` executors of two slots each, all registered.
    fn start(executors: usize) -> Cluster {
        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let scheduler = cluster_process(
            &["scheduler", "--bind", &format!("127.0.0.1:{port}")],
            &logs.path().join("scheduler.log"),
        );
        wait_for_port(port, "the scheduler");
        let mut cluster = Cluster {
            url: format!("df://127.0.0.1:{port}"),
            scheduler_port: port,
            logs,
            executors: Vec::new(),
            _scheduler: scheduler,
        };
        for _ in 0..executors {
            cluster.add_executor();
        }
        cluster
    }

    fn add_executor(&mut self) {
        let n = self.executors.len();
        let port = free_port();
        let work = self.logs.path().join(format!("work-{n}"));
        std::fs::create_dir_all(&work).unwrap();
        self.executors.push(cluster_process(
            &[
                "executor",
                "--scheduler",
                &format!("127.0.0.1:{}", self.scheduler_port),
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--slots",
                "2",
                "--work-dir",
                work.to_str().unwrap(),
            ],
            &self.logs.path().join(format!("executor-{n}.log")),
        ));
        wait_for_port(port, "an executor");
        self.wait_for_log(&format!("executor-{n}.log"), "Starting poll work loop");
    }

    /// Waits until `file` (a process's log) says `text`.
    fn wait_for_log(&self, file: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = std::fs::read_to_string(self.logs.path().join(file)).unwrap_or_default();
            if log.contains(text) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{file} never said `{text}`:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for entry in std::fs::read_dir(self.logs.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "log") {
                all.push_str(&format!(
                    "== {}\n{}\n",
                    path.display(),
                    std::fs::read_to_string(&path).unwrap_or_default()
                ));
            }
        }
        all
    }
}

/// A generated province of several stores and versions, validated CSV and Parquet.
fn generated_province(dir: &Path, code: &str) -> (PathBuf, PathBuf) {
    ok(&[
        "generate",
        "--out",
        dir.to_str().unwrap(),
        "--province",
        code,
        "--transactions",
        "40K",
        "--stores",
        "9",
        "--items",
        "300",
        "--versions",
        "3",
        "--forms",
        "validated,parquet",
    ]);
    (dir.join("validated"), dir.join("parquet"))
}

/// stdout of a run and its summary JSON's reading figures.
fn run_with_summary(run: JobRun, dir: &Path, name: &str) -> (String, [u64; 3]) {
    let summary = dir.join(format!("{name}.json"));
    let out = run
        .args(&["--summary-json", summary.to_str().unwrap()])
        .ok();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let figures = ["rows_in", "bytes_in", "bad_rows"].map(|k| {
        json.pointer(&format!("/run/{k}"))
            .and_then(|v| v.as_u64())
            .unwrap_or_else(|| panic!("summary has no {k}: {json}"))
    });
    (out, figures)
}

#[test]
fn the_province_job_on_a_cluster_prints_exactly_the_bytes_of_a_local_run() {
    let dir = tempfile::tempdir().unwrap();
    let (csv, parquet) = generated_province(dir.path(), "QC");
    // A malformed row in one validated file: both runs must skip and count it.
    let victim = std::fs::read_dir(&csv)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "csv"))
        .unwrap();
    let mut text = std::fs::read_to_string(&victim).unwrap();
    text.push_str("s1,not-money,4,it1,2026-03-01\n");
    std::fs::write(&victim, text).unwrap();

    let cluster = Cluster::start(2);
    for (input, name) in [(&csv, "csv"), (&parquet, "parquet")] {
        let run = || {
            job_run("jobs/province_sales.sql", "QC", input)
                .dry_run()
                .format("csv")
                .args(&["--max-bad-rows", "5"])
        };
        let (local, local_figures) = run_with_summary(run(), dir.path(), &format!("{name}-local"));
        let (clustered, cluster_figures) = run_with_summary(
            run().args(&["--cluster", &cluster.url, "--cluster-partitions", "5"]),
            dir.path(),
            &format!("{name}-cluster"),
        );
        assert!(
            local.lines().count() > 1000,
            "{name}: {} lines",
            local.lines().count()
        );
        assert!(
            local == clustered,
            "{name}: the cluster's rows differ from the local run's\n{}",
            cluster.logs()
        );
        assert_eq!(
            cluster_figures, local_figures,
            "{name}: rows, bytes, bad rows read"
        );
    }
    // The CSV input's bad row was counted on an executor, and the tolerance holds for the sum.
    let err = job_run("jobs/province_sales.sql", "QC", &csv)
        .dry_run()
        .args(&["--cluster", &cluster.url])
        .fails();
    assert!(
        err.contains("not-money") || err.contains("bad input rows"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_province_job_on_a_cluster_reads_the_s3_test_server() {
    let (val, local, clustered, logs) = tokio::task::spawn_blocking(|| {
        let val = validated_sample_on_s3("cluster");
        let cluster = Cluster::start(2);
        let run = || {
            job_run("province_sales", "WI", &val)
                .dry_run()
                .format("csv")
        };
        let local = run().ok();
        let clustered = run().args(&["--cluster", &cluster.url]).ok();
        (val.clone(), local, clustered, cluster.logs())
    })
    .await
    .unwrap();
    assert_eq!(
        project(&csv_rows(&local), RESULT_COLUMNS),
        expected_sample()
    );
    assert!(local == clustered, "the cluster's rows differ\n{logs}");
    assert!(
        clustered.contains(&format!("{val}/WI-201-1500.csv")),
        "{clustered}"
    );
}

/// Runs `province`'s job over `val` into a Hudi table, a SQLite warehouse and a SQLite state store
/// through `cluster_url`, calling `during` while it runs; expects failure within `bound`, checks
/// that nothing was written and FAILED was recorded, and returns stderr.
async fn failed_cluster_run(
    cluster_url: &str,
    province: &str,
    val: &Path,
    bound: Duration,
    during: impl FnOnce(),
) -> String {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let warehouse = dir.path().join("warehouse.db");
    let state = format!("sqlite://{}", dir.path().join("state.db").display());
    let started = Instant::now();
    let run = job_run("province_sales", province, val)
        .table(table.to_str().unwrap())
        .warehouse(&format!("sqlite://{}", warehouse.display()))
        .state(&state)
        .args(&["--cluster", cluster_url, "--cluster-timeout", "5s"]);
    let running = tokio::task::spawn_blocking(move || run.fails());
    during();
    let err = running.await.unwrap();
    let took = started.elapsed();
    assert!(took < bound, "the run took {took:?}: {err}");
    // Sinks as they were: the table never created, the warehouse without rows.
    assert!(
        !table.join(".hoodie").exists(),
        "a Hudi table was written: {err}"
    );
    if warehouse.exists() {
        let (rows, _) = read_sqlite_warehouse(&warehouse).await;
        assert!(rows.is_empty(), "{rows:?}");
    }
    let recorded = only_run_failed(&state).await;
    assert!(
        recorded.contains("cluster") || recorded.contains("scheduler"),
        "{recorded}"
    );
    err
}

/// The bundled sample province, validated, in a temporary folder.
fn sample() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    (dir, val)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_without_executors_fails_the_run_within_the_timeout() {
    let cluster = Cluster::start(0);
    let (_dir, val) = sample();
    let err = failed_cluster_run(&cluster.url, "WI", &val, Duration::from_secs(90), || {}).await;
    assert!(err.contains("finished no stage within 5s"), "{err}");
    assert!(err.contains("Is any executor registered"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_killed_before_it_runs_the_jobs_tasks_fails_the_run_within_the_timeout() {
    let mut cluster = Cluster::start(1);
    // Registered, then gone: the scheduler still counts it until its heartbeat lapses.
    for executor in &mut cluster.executors {
        executor.0.kill().unwrap();
        executor.0.wait().unwrap();
    }
    let (_dir, val) = sample();
    let err = failed_cluster_run(&cluster.url, "WI", &val, Duration::from_secs(90), || {}).await;
    assert!(
        err.contains("finished no stage") || err.contains("executors were lost"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_executor_killed_mid_job_fails_the_run_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    ok(&[
        "generate",
        "--out",
        dir.path().to_str().unwrap(),
        "--province",
        "MB",
        "--transactions",
        "1.2M",
        "--stores",
        "20",
        "--forms",
        "validated",
    ]);
    let mut cluster = Cluster::start(1);
    let log = cluster.logs.path().join("executor-0.log");
    let executor = cluster.executors.pop().unwrap();
    let val = dir.path().join("validated");
    let err = failed_cluster_run(
        &cluster.url,
        "MB",
        &val,
        Duration::from_secs(90),
        move || {
            // Killed as soon as it has taken a task of the job.
            let deadline = Instant::now() + Duration::from_secs(60);
            while !std::fs::read_to_string(&log)
                .unwrap_or_default()
                .contains("Received task")
            {
                assert!(Instant::now() < deadline, "the executor never took a task");
                std::thread::sleep(Duration::from_millis(20));
            }
            drop(executor);
        },
    )
    .await;
    assert!(
        err.contains("finished no stage") || err.contains("cannot fetch the rows"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_scheduler_fails_the_run_at_once() {
    let url = format!("df://127.0.0.1:{}", free_port());
    let (_dir, val) = sample();
    let err = failed_cluster_run(&url, "WI", &val, Duration::from_secs(60), || {}).await;
    assert!(
        err.contains("cannot reach the Ballista scheduler at df://127.0.0.1:"),
        "{err}"
    );
}

#[test]
fn cluster_flags_are_checked_before_anything_runs() {
    let err = job_run("province_sales", "WI", ".")
        .dry_run()
        .args(&["--cluster", "http://x:1"])
        .fails();
    assert!(
        err.contains("--cluster: `http://x:1` is not a cluster URL"),
        "{err}"
    );
    let err = fails(&["cluster", "executor", "--scheduler", "nowhere"]);
    assert!(err.contains("--scheduler: `nowhere` has no port"), "{err}");
}
