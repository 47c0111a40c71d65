//! `tally status` and `tally serve` after a mix of completed, failed and waiting jobs, on SQLite,
//! PostgreSQL and MariaDB (real servers, started by tests/run.sh), and the page rendered by a real
//! headless Chromium (Debian's package), with a screenshot kept in target/test-artifacts/.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command as StdCommand, Stdio};

use common::*;
use serde_json::Value;

/// Three jobs: `wi-daily` COMPLETED, `wi-broken` FAILED (its table path is a file), `il-daily`
/// waiting for files that never came. Returns the state store URL.
async fn mixed_store(backend: &str, dir: &Path) -> String {
    let val = validated_sample(dir);
    let state = fresh_state_store(backend, &dir.join("state.db"), "status").await;
    let not_a_folder = dir.join("not-a-folder");
    std::fs::write(&not_a_folder, "a file where the table should be").unwrap();
    let register = |id: &str, province: &str, min: &str, extra: &[&str]| {
        let mut args = vec![
            "jobs",
            "register",
            "province_sales",
            "--config-id",
            id,
            "--province",
            province,
            "--input",
            val.to_str().unwrap(),
            "--min-files",
            min,
            "--state",
            &state,
        ];
        args.extend_from_slice(extra);
        ok(&args);
    };
    let table = dir.join("table");
    register("wi-daily", "WI", "5", &["--table", table.to_str().unwrap()]);
    register(
        "wi-broken",
        "WI",
        "5",
        &["--table", not_a_folder.to_str().unwrap()],
    );
    register("il-daily", "IL", "3", &[]);
    let mut track = vec!["track".to_string()];
    for name in [
        "WI-201.csv",
        "WI-201-1500.csv",
        "WI-202.csv",
        "WI-203.csv",
        "WI-204.csv",
    ] {
        track.extend(["--file".into(), val.join(name).display().to_string()]);
    }
    track.extend(["--state".into(), state.clone()]);
    ok(&track.iter().map(String::as_str).collect::<Vec<_>>());
    ok(&["schedule", "--executor", "local", "--state", &state]);
    state
}

/// What the text view and the rendered page must both say: each job, its last status, the
/// failed run's error, and why the third job waits.
const FACTS: [&str; 7] = [
    "wi-daily",
    "COMPLETED",
    "wi-broken",
    "FAILED",
    "not-a-folder",
    "il-daily",
    "waiting: 0 of 3 files tracked",
];

fn job<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["job_config_id"] == id)
        .unwrap_or_else(|| panic!("no job {id} in {report}"))
}

/// The facts every view must carry.
fn assert_facts(report: &Value) {
    let done = job(report, "wi-daily");
    assert_eq!(done["last_status"], "COMPLETED");
    assert_eq!(done["last_run"]["status"], "COMPLETED");
    assert!(done["last_run"]["rows_out"].as_i64().unwrap() > 0);
    let broken = job(report, "wi-broken");
    assert_eq!(broken["last_status"], "FAILED");
    assert_eq!(broken["failed_attempts"], 1);
    assert_eq!(broken["next_retry"], 1);
    let error = broken["last_run"]["error"].as_str().unwrap();
    assert!(error.contains("not-a-folder"), "{error}");
    let waiting = job(report, "il-daily");
    assert_eq!(waiting["ready"], false);
    assert_eq!(waiting["last_status"], Value::Null);
    let reason = waiting["waiting_reason"].as_str().unwrap();
    assert!(reason.contains("0 of 3 files tracked"), "{reason}");
    assert!(report["recent_runs"].as_array().unwrap().len() >= 2);
}

async fn status_on(backend: &str) {
    let dir = tempfile::tempdir().unwrap();
    let state = mixed_store(backend, dir.path()).await;
    let text = ok(&["status", "--state", &state]);
    for fact in FACTS {
        assert!(text.contains(fact), "`{fact}` missing from:\n{text}");
    }
    let json: Value = serde_json::from_str(&ok(&["status", "--state", &state, "--json"])).unwrap();
    assert_facts(&json);
    // One job alone.
    let one: Value = serde_json::from_str(&ok(&[
        "status", "--state", &state, "--json", "--job", "il-daily",
    ]))
    .unwrap();
    assert_eq!(one["jobs"].as_array().unwrap().len(), 1);
    let err = fails(&["status", "--state", &state, "--job", "nope"]);
    assert!(err.contains("no job configuration `nope`"), "{err}");
    // No password of the store appears.
    if let Some(password) = url::Url::parse(&state)
        .ok()
        .and_then(|u| u.password().map(str::to_string))
    {
        assert!(!text.contains(&password));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_on_sqlite() {
    status_on("sqlite").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_on_postgres() {
    status_on("postgres").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_on_mariadb() {
    status_on("mysql").await;
}

/// A running `tally serve`, stopped when dropped.
struct Server {
    _process: Running,
    address: String,
}

fn serve(state: &str) -> Server {
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("tally"))
        .current_dir(repo())
        .args([
            "serve",
            "--state",
            state,
            "--bind",
            "127.0.0.1:0",
            "--refresh-secs",
            "30",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let address = loop {
        let line = lines
            .next()
            .expect("tally serve printed its address")
            .unwrap();
        if let Some(rest) = line.split("http://").nth(1) {
            break rest.split('/').next().unwrap().to_string();
        }
    };
    Server {
        _process: Running(child),
        address,
    }
}

/// One HTTP/1.1 request; returns the status code and the body.
fn request(address: &str, method: &str, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).unwrap();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

fn chromium() -> String {
    std::env::var("TALLY_TEST_CHROMIUM").unwrap_or_else(|_| {
        panic!("TALLY_TEST_CHROMIUM is not set: run the suite with tests/run.sh, which installs Debian's chromium")
    })
}

/// Chromium headless with the flags this sandbox needs (no network beyond loopback).
fn headless(profile: &Path, extra: &[String], url: &str) -> std::process::Output {
    StdCommand::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1400,900",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_shows_the_same_facts_in_a_real_browser_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let state = mixed_store("sqlite", dir.path()).await;
    let server = serve(&state);
    let (code, body) = request(&server.address, "GET", "/api/status");
    assert_eq!(code, 200);
    let api: Value = serde_json::from_str(&body).unwrap();
    assert_facts(&api);
    // Read-only: every other method is refused.
    for method in ["POST", "PUT", "DELETE", "PATCH"] {
        for path in ["/", "/api/status"] {
            let (code, _) = request(&server.address, method, path);
            assert_eq!(code, 405, "{method} {path}");
        }
    }
    // The page as Chromium renders it.
    let url = format!("http://{}/", server.address);
    let dom = headless(&dir.path().join("profile"), &["--dump-dom".into()], &url);
    assert!(
        dom.status.success(),
        "{}",
        String::from_utf8_lossy(&dom.stderr)
    );
    let dom = String::from_utf8_lossy(&dom.stdout);
    for fact in FACTS {
        assert!(
            dom.contains(fact),
            "`{fact}` missing from the rendered page:\n{dom}"
        );
    }
    let artifacts: PathBuf = repo().join("target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let out = headless(
        &dir.path().join("profile2"),
        &[format!("--screenshot={}", shot.display())],
        &url,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    // Serving changed nothing: the runs and jobs are as they were.
    let after: Value = serde_json::from_str(&ok(&["status", "--state", &state, "--json"])).unwrap();
    assert_eq!(after["recent_runs"], api["recent_runs"]);
}
