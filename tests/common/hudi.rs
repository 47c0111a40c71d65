//! Helpers for the Hudi tests: reading a table with hudi-rs (the independent reader, through
//! tests/hudi_read.py) and running the province job into a table.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use super::*;

/// Reads a table with hudi-rs.
pub fn hudi_rs(uri: &str) -> Value {
    let out = Command::new("python3")
        .arg(repo().join("tests/hudi_read.py"))
        .arg(uri)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "hudi-rs could not read {uri}:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("hudi_read.py prints JSON")
}

/// hudi-rs rows reduced to the result columns, sorted.
pub fn hudi_lines(table: &Value) -> Vec<String> {
    let rows: Vec<_> = table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.as_object()
                .unwrap()
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .collect();
    project(&rows, RESULT_COLUMNS)
}

pub fn record_keys(table: &Value) -> Vec<String> {
    table["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["_hoodie_record_key"].as_str().unwrap().to_string())
        .collect()
}

pub fn run_into(province: &str, val: &Path, table: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "run",
        "--job",
        "jobs/province_sales.sql",
        "--province",
        province,
        "--input",
        val.to_str().unwrap(),
        "--table",
        table,
    ];
    args.extend_from_slice(extra);
    tally().args(&args).output().unwrap()
}

pub fn run_ok(province: &str, val: &Path, table: &str, extra: &[&str]) -> String {
    let out = run_into(province, val, table, extra);
    assert!(
        out.status.success(),
        "run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

pub fn validate(raw: &Path, val: &Path) {
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
}

pub fn assert_no_duplicate_keys(table: &Value) {
    let mut keys = record_keys(table);
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n, "duplicate record keys");
}
