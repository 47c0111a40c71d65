//! Helpers shared by the integration tests: running the real `tally` binary, writing raw files
//! with chosen times, and reading CSV output back.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use chrono::{DateTime, Utc};

/// The repository root (jobs/, samples/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tally` with the repository's jobs folder and no progress bars.
pub fn tally() -> Command {
    let mut cmd = Command::cargo_bin("tally").expect("tally binary");
    cmd.current_dir(repo())
        .arg("--quiet")
        .env_remove("TALLY_LOG");
    cmd
}

/// Runs tally with `args`, returning its output (whatever the exit status).
pub fn run(args: &[&str]) -> Output {
    tally().args(args).output().expect("tally runs")
}

/// Runs tally and insists on success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "tally {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs tally and insists on failure, returning stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "tally {args:?} should have failed; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

/// Writes a file and sets its modification time.
pub fn write_file(dir: &Path, name: &str, content: impl AsRef<[u8]>, time: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let time: DateTime<Utc> = time.parse().unwrap();
    tally::storage::set_local_mtime(&path, time).unwrap();
}

/// Parses CSV text with a header into rows of column → value.
pub fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The result rows reduced to the columns of `expected_columns`, as CSV lines, sorted.
pub fn project(rows: &[BTreeMap<String, String>], columns: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    r.get(*c)
                        .cloned()
                        .unwrap_or_else(|| panic!("no column {c}"))
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    lines.sort();
    lines
}

/// The columns of the province job's expected files.
pub const RESULT_COLUMNS: &[&str] = &[
    "province",
    "store_id",
    "item_id",
    "trans_date",
    "sale_amount",
    "tax_amount",
    "discount_amount",
];

/// `samples/expected_WI.csv` as sorted lines without its header.
pub fn expected_sample() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("samples/expected_WI.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().skip(1).map(str::to_string).collect();
    lines.sort();
    lines
}

/// Formats cents as a decimal with two places.
pub fn cents(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", v.abs() / 100, v.abs() % 100)
}
