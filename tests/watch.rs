//! `tally watch`: the event-driven flow on one machine. Raw files copied into a folder lead, with
//! no other command, to validated files, tracked rows and a COMPLETED run whose SQLite warehouse
//! holds the expected rows.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use object_store::ObjectStoreExt;

/// The watcher process, stopped when the test ends however it ends.
struct Watching {
    _process: Running,
    log: std::path::PathBuf,
}

impl Watching {
    fn start(raw: &Path, validated: &Path, state: &str, log: &Path, extra: &[&str]) -> Watching {
        let file = std::fs::File::create(log).unwrap();
        let child = Command::new(assert_cmd::cargo::cargo_bin("tally"))
            .current_dir(repo())
            .args(["--quiet", "watch", "--raw"])
            .arg(raw)
            .arg("--validated")
            .arg(validated)
            .args(["--state", state, "--interval-ms", "200"])
            .args(extra)
            .env_remove("TALLY_LOG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("tally watch starts");
        Watching {
            _process: Running(child),
            log: log.to_path_buf(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// The URLs of the files the state store tracks, sorted.
async fn tracked_urls(state: &str) -> Vec<String> {
    tracked_files(state)
        .await
        .into_iter()
        .map(|(url, _)| url)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn files_dropped_into_the_raw_folder_end_in_the_warehouse_without_another_command() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, validated) = (dir.path().join("raw"), dir.path().join("validated"));
    std::fs::create_dir_all(&raw).unwrap();
    let state_db = dir.path().join("state.db");
    let state = format!("sqlite://{}", state_db.display());
    let warehouse_db = dir.path().join("warehouse.db");
    ok(&[
        "jobs",
        "register",
        "province_sales",
        "--config-id",
        "wi-watch",
        "--province",
        "WI",
        "--input",
        validated.to_str().unwrap(),
        "--min-files",
        "5",
        "--warehouse",
        &format!("sqlite://{}", warehouse_db.display()),
        "--state",
        &state,
    ]);
    let log = dir.path().join("watch.log");
    let watching = Watching::start(&raw, &validated, &state, &log, &[]);

    // A store system's uploads, one after another, with the times the stores sent them.
    for (name, bytes, time) in tally::demo::SAMPLE_FILES {
        write_file(&raw, name, bytes, time);
        std::thread::sleep(Duration::from_millis(100));
    }
    let last_file = Instant::now();
    let expected = expected_sample();
    let mut rows = Vec::new();
    while last_file.elapsed() < Duration::from_secs(60) {
        let status: serde_json::Value =
            serde_json::from_str(&ok(&["status", "--json", "--state", &state])).unwrap();
        let completed = status["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["job_config_id"] == "wi-watch" && j["last_status"] == "COMPLETED");
        if completed && warehouse_db.exists() {
            rows = read_sqlite_warehouse(&warehouse_db).await.0;
            if rows == expected {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let log = watching.log();
    assert_eq!(
        rows,
        expected,
        "no COMPLETED run with the expected rows within a minute of the last file; watch log:\n{log}"
    );
    println!(
        "the warehouse held the expected rows {:.1}s after the last file",
        last_file.elapsed().as_secs_f64()
    );

    // Every raw file was validated and tracked under the folder as registered; the bad row of
    // WI-203 went to the quarantine beside the validated files.
    let expected_tracked: Vec<String> = {
        let mut names: Vec<String> = tally::demo::SAMPLE_FILES
            .iter()
            .map(|(name, _, _)| {
                let stem = name.trim_end_matches(".tdf");
                format!("{}/{stem}.csv", validated.display())
            })
            .collect();
        names.sort();
        names
    };
    // The last files (another province's, the item master) may still be settling.
    let mut tracked = tracked_urls(&state).await;
    while tracked != expected_tracked && last_file.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        tracked = tracked_urls(&state).await;
    }
    assert_eq!(tracked, expected_tracked, "{}", watching.log());
    assert!(validated.join("_quarantine/WI-203.csv").exists());
    // The scheduler pass reports the run once the run has exited.
    let reported = Instant::now();
    while !watching.log().contains("submitted wi-watch")
        && reported.elapsed() < Duration::from_secs(10)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        watching.log().contains("submitted wi-watch"),
        "{}",
        watching.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_that_is_not_published_is_reported_and_the_loop_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, validated) = (dir.path().join("raw"), dir.path().join("validated"));
    std::fs::create_dir_all(&raw).unwrap();
    let state = format!("sqlite://{}", dir.path().join("state.db").display());
    let log = dir.path().join("watch.log");
    let watching = Watching::start(&raw, &validated, &state, &log, &["--max-bad-rows", "0"]);
    // WI-203 has a malformed row: with --max-bad-rows 0 it is not published.
    for (name, bytes, time) in tally::demo::SAMPLE_FILES {
        if ["WI-203.tdf", "WI-201.tdf"].contains(name) {
            write_file(&raw, name, bytes, time);
        }
    }
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        let log = watching.log();
        if log.contains("not published") && validated.join("WI-201.csv").exists() {
            assert!(!validated.join("WI-203.csv").exists(), "{log}");
            assert!(validated.join("_quarantine/WI-203.csv").exists());
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the refused file stopped the loop or was not reported:\n{}",
        watching.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_s3_folder_is_watched_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let base = prefix("watch");
    let (raw, validated) = (format!("{base}/raw"), format!("{base}/validated"));
    let state_db = dir.path().join("state.db");
    let state = format!("sqlite://{}", state_db.display());
    let log = dir.path().join("watch.log");
    let watching = Watching::start(Path::new(&raw), Path::new(&validated), &state, &log, &[]);
    let (name, bytes, _) = tally::demo::SAMPLE_FILES[0];
    let location = tally::storage::Location::create(&raw).await.unwrap();
    location
        .store
        .put(&location.child(name), bytes.to_vec().into())
        .await
        .unwrap();
    let expected = vec![format!("{validated}/WI-201.csv")];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if state_db.exists() && tracked_urls(&state).await == expected {
            assert_eq!(file_names(&validated).await, vec!["WI-201.csv".to_string()]);
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!(
        "the S3 upload was not validated and tracked:\n{}",
        watching.log()
    );
}
