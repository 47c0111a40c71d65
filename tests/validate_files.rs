//! `tally validate` on the edge cases stores really send.

mod common;

use common::*;

fn validate(raw: &std::path::Path, out: &std::path::Path, extra: &[&str]) -> String {
    let mut args = vec![
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    ok(&args)
}

#[test]
fn the_first_data_row_is_kept_and_a_header_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    // No header: the first line is data and must survive (the reference implementation lost it).
    write_file(
        &raw,
        "IL-1.tdf",
        "v1\t1.00\t4\ti1\t2026-01-01\nv1\t2.00\t4\ti2\t2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    // A header line after junk.
    write_file(
        &raw,
        "IL-2.tdf",
        "---- junk\nstore\tamount\tcode\titem\tdate\nv2\t3.00\t4\ti1\t2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    validate(&raw, &out, &[]);
    assert_eq!(
        std::fs::read_to_string(out.join("IL-1.csv")).unwrap(),
        "v1,1.00,4,i1,2026-01-01\nv1,2.00,4,i2,2026-01-01\n"
    );
    assert_eq!(
        std::fs::read_to_string(out.join("IL-2.csv")).unwrap(),
        "v2,3.00,4,i1,2026-01-01\n"
    );
}

#[test]
fn crlf_bom_junk_blank_and_quoting_are_handled() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    write_file(
        &raw,
        "CA-9.tdf",
        b"\xef\xbb\xbfv9\t1.50\t5\ti1\t2026-01-01\tsay \"hi\"\tx,y\r\n\r\n------ additional invalid data\r\nv9\t2.50\t6\ti1\t2026-01-01\r\n".as_slice(),
        "2026-01-01T10:00:00Z",
    );
    let report = validate(&raw, &out, &["--json"]);
    let csv = std::fs::read_to_string(out.join("CA-9.csv")).unwrap();
    assert_eq!(
        csv,
        "v9,1.50,5,i1,2026-01-01,\"say \"\"hi\"\"\",\"x,y\"\nv9,2.50,6,i1,2026-01-01\n"
    );
    let report: serde_json::Value = serde_json::from_str(&report).unwrap();
    let file = &report["files"][0];
    assert_eq!(file["rows"], 2);
    assert_eq!(file["junk_lines"], 1);
    assert_eq!(file["blank_lines"], 1);
    assert_eq!(file["header_lines"], 0);
    assert_eq!(file["lines"], 4);
}

#[test]
fn bad_rows_are_quarantined_with_file_line_and_reason() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    write_file(
        &raw,
        "IL-3.tdf",
        "v3\t1.00\t4\ti1\t2026-01-01\nv3\tabc\t4\ti1\t2026-01-01\nv3\t1.00\t4.5\ti1\t2026-01-01\nv3\t1.00\t4\ti1\t2026-13-01\nv3\t1.00\t4\nv3\t1.005\t4\ti1\t2026-01-01\nv3\t2.00\t4\ti1\t2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    validate(&raw, &out, &[]);
    assert_eq!(
        std::fs::read_to_string(out.join("IL-3.csv")).unwrap(),
        "v3,1.00,4,i1,2026-01-01\nv3,2.00,4,i1,2026-01-01\n"
    );
    let quarantine = std::fs::read_to_string(out.join("_quarantine/IL-3.csv")).unwrap();
    let rows = csv_rows(&quarantine);
    let lines: Vec<&str> = rows.iter().map(|r| r["line"].as_str()).collect();
    assert_eq!(lines, ["2", "3", "4", "5", "6"]);
    assert!(
        rows[0]["reason"].contains("`amount`"),
        "{}",
        rows[0]["reason"]
    );
    assert!(rows[1]["reason"].contains("not an integer"));
    assert!(rows[2]["reason"].contains("not a date"));
    assert!(rows[3]["reason"].contains("expected at least 5 fields, found 3"));
    assert!(rows[4]["reason"].contains("more than 2 decimal places"));
    assert!(rows[0]["file"].ends_with("IL-3.tdf"));
    assert_eq!(rows[0]["raw"], "v3\tabc\t4\ti1\t2026-01-01");
}

#[test]
fn too_many_bad_rows_fail_the_file_and_publish_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    write_file(
        &raw,
        "IL-4.tdf",
        "v4\tx\t4\ti1\t2026-01-01\nv4\ty\t4\ti1\t2026-01-01\nv4\t1.00\t4\ti1\t2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    write_file(
        &raw,
        "IL-5.tdf",
        "v5\t1.00\t4\ti1\t2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    let err = fails(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
        "--max-bad-rows",
        "1",
    ]);
    assert!(err.contains("not published"), "{err}");
    assert!(!out.join("IL-4.csv").exists());
    assert!(out.join("IL-5.csv").exists());
    assert!(out.join("_quarantine/IL-4.csv").exists());
    // Within the limit, the file is published.
    validate(&raw, &out, &["--max-bad-rows", "2"]);
    assert!(out.join("IL-4.csv").exists());
}

#[test]
fn empty_files_and_the_item_master_use_their_own_rules() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    write_file(&raw, "IL-6.tdf", "", "2026-01-01T10:00:00Z");
    write_file(
        &raw,
        "Item-Master-Data.tdf",
        "item_id\titem_name\tdate\ni101\tChicken Nuggets\t2016-06-01\tsome-data\ni201\tChoclate Frosty\tnot-a-date\n",
        "2026-01-01T06:00:00Z",
    );
    let report: serde_json::Value =
        serde_json::from_str(&validate(&raw, &out, &["--json"])).unwrap();
    assert_eq!(std::fs::read_to_string(out.join("IL-6.csv")).unwrap(), "");
    assert_eq!(
        std::fs::read_to_string(out.join("Item-Master-Data.csv")).unwrap(),
        "i101,Chicken Nuggets,2016-06-01,some-data\n"
    );
    let item = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["layout"] == "item_master")
        .unwrap();
    assert_eq!(item["header_lines"], 1);
    assert_eq!(item["bad_rows"], 1);
}

#[test]
fn the_raw_file_time_is_carried_to_the_output() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    write_file(
        &raw,
        "IL-7.tdf",
        "v7\t1.00\t4\ti1\t2026-01-01\n",
        "2026-02-03T04:05:06Z",
    );
    validate(&raw, &out, &[]);
    let modified: chrono::DateTime<chrono::Utc> = std::fs::metadata(out.join("IL-7.csv"))
        .unwrap()
        .modified()
        .unwrap()
        .into();
    assert_eq!(modified.to_rfc3339(), "2026-02-03T04:05:06+00:00");
}

#[test]
fn a_quarantine_left_by_an_earlier_run_is_removed_once_the_file_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    write_file(
        &raw,
        "IL-8.tdf",
        "v8\tx\t4\ti1\t2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    validate(&raw, &out, &[]);
    assert!(out.join("_quarantine/IL-8.csv").exists());
    write_file(
        &raw,
        "IL-8.tdf",
        "v8\t1.00\t4\ti1\t2026-01-01\n",
        "2026-01-01T11:00:00Z",
    );
    validate(&raw, &out, &[]);
    assert!(!out.join("_quarantine/IL-8.csv").exists());
}

#[test]
fn a_large_file_streams_through_with_every_row_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    let mut text = String::new();
    for i in 0..200_000u32 {
        text.push_str(&format!(
            "s{}\t{}.{:02}\t{}\ti{}\t2026-01-{:02}\textra\n",
            i % 7,
            i % 1000,
            i % 100,
            4 + i % 3,
            i % 50,
            1 + i % 28
        ));
        if i % 10_000 == 0 {
            text.push_str("------ additional invalid data\n");
        }
    }
    write_file(&raw, "IL-9.tdf", &text, "2026-01-01T10:00:00Z");
    let report: serde_json::Value =
        serde_json::from_str(&validate(&raw, &out, &["--json"])).unwrap();
    assert_eq!(report["files"][0]["rows"], 200_000);
    assert_eq!(report["files"][0]["junk_lines"], 20);
    let written = std::fs::read_to_string(out.join("IL-9.csv")).unwrap();
    assert_eq!(written.lines().count(), 200_000);
}

#[test]
fn no_input_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let err = fails(&[
        "validate",
        "--input",
        dir.path().to_str().unwrap(),
        "--output",
        dir.path().join("v").to_str().unwrap(),
    ]);
    assert!(err.contains("no .tdf files"), "{err}");
}

#[test]
fn nul_bytes_and_endless_lines_are_quarantined_not_loaded() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, out) = (dir.path().join("raw"), dir.path().join("val"));
    write_file(
        &raw,
        "IL-5.tdf",
        "v5\t1.00\t4\ti1\t2026-01-01\nv5\t2.00\t4\ti\x001\t2026-01-01\nv5\t3.00\t4\ti1\t2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    // A file that is one line of 3 MiB (no newline at all): held to the cap, not read whole.
    let mut endless = b"v6\t1.00\t4\ti1\t2026-01-01\t".to_vec();
    endless.resize(3 << 20, b'x');
    write_file(&raw, "IL-6.tdf", &endless, "2026-01-01T10:00:00Z");
    validate(&raw, &out, &[]);
    assert_eq!(
        std::fs::read_to_string(out.join("IL-5.csv")).unwrap(),
        "v5,1.00,4,i1,2026-01-01\nv5,3.00,4,i1,2026-01-01\n"
    );
    let rows = csv_rows(&String::from_utf8_lossy(
        &std::fs::read(out.join("_quarantine/IL-5.csv")).unwrap(),
    ));
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["line"], "2");
    assert!(
        rows[0]["reason"].contains("NUL byte (byte 12)"),
        "{}",
        rows[0]["reason"]
    );

    assert_eq!(std::fs::read(out.join("IL-6.csv")).unwrap(), b"");
    let q = std::fs::read(out.join("_quarantine/IL-6.csv")).unwrap();
    let rows = csv_rows(&String::from_utf8_lossy(&q));
    assert_eq!(rows.len(), 1);
    assert!(
        rows[0]["reason"].contains("line longer than 1048576 bytes (3145728 bytes"),
        "{}",
        rows[0]["reason"]
    );
    assert_eq!(rows[0]["raw"].len(), 1 << 20);
}
