//! The Hudi sink, checked with an independent reader: hudi-rs (the `hudi` PyPI package, through
//! tests/hudi_read.py) must see exactly the expected snapshot after tally's runs.

mod common;

use std::path::Path;
use std::process::Command;

use common::hudi::*;
use common::*;
use serde_json::Value;

/// Two runs of a province (the second with later cumulative files of half the stores).
fn two_runs(dir: &Path, table: &str) -> (Province, std::path::PathBuf) {
    let (raw, val) = (dir.join("raw"), dir.join("val"));
    let mut province = Province::new("ZQ", 24, 6, 42);
    province.write_version(&raw, "0900", "2026-05-06T09:00:00Z", |_| true);
    validate(&raw, &val);
    // The S3 test server ignores conditional writes: one writer, said so.
    let single: &[&str] = if table.starts_with("s3://") {
        &["--hudi-single-writer"]
    } else {
        &[]
    };
    run_ok("ZQ", &val, table, single);
    province.write_version(&raw, "1500", "2026-05-06T15:00:00Z", |s| s % 2 == 0);
    validate(&raw, &val);
    run_ok("ZQ", &val, table, single);
    (province, val)
}

#[test]
fn two_runs_give_hudi_rs_exactly_the_expected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table_url = table.to_str().unwrap();
    let (province, _) = two_runs(dir.path(), table_url);

    let read = hudi_rs(table_url);
    assert_eq!(hudi_lines(&read), province.expected());
    assert_no_duplicate_keys(&read);
    assert_eq!(read["commits"].as_array().unwrap().len(), 2);
    assert_eq!(read["options"]["hoodie.table.version"], "6");
    assert_eq!(read["options"]["hoodie.timeline.layout.version"], "1");
    assert_eq!(read["options"]["hoodie.table.type"], "COPY_ON_WRITE");
    let key = &record_keys(&read)[0];
    assert!(
        key.starts_with("store_id:st")
            && key.contains(",item_id:it")
            && key.contains(",trans_date:2026-05-"),
        "{key}"
    );

    // tally query agrees with hudi-rs.
    let out = ok(&[
        "query",
        "--table",
        table_url,
        "--format",
        "csv",
        "SELECT * FROM store_item_daily_sales",
    ]);
    assert_eq!(
        project(&csv_rows(&out), RESULT_COLUMNS),
        province.expected()
    );

    // Base files: the five meta columns first; partition metadata in every partition.
    let hoodie = std::fs::read_to_string(table.join(".hoodie/hoodie.properties")).unwrap();
    assert!(hoodie.contains("hoodie.table.checksum=") && hoodie.contains("ComplexKeyGenerator"));
    let partition = table.join("2026-05-01");
    assert!(partition.join(".hoodie_partition_metadata").exists());
}

/// A job whose rows leave in descending key order: its record keys do not ascend, so the sink
/// keys them a second time and keeps them, to look for repeats (engine/sinks/hudi/upsert.rs).
#[test]
fn rows_out_of_key_order_make_the_same_table() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    let sql = std::fs::read_to_string(repo().join("jobs/province_sales.sql")).unwrap();
    let ordered = "ORDER BY newest.store_id, newest.item_id, newest.trans_date";
    assert!(sql.contains(ordered));
    let descending = sql.replace(
        ordered,
        "ORDER BY newest.store_id DESC, newest.item_id DESC, newest.trans_date DESC",
    );
    let job = dir.path().join("descending.sql");
    std::fs::write(&job, descending).unwrap();
    let table = dir.path().join("table");
    let table_url = table.to_str().unwrap();
    // A run into the table, its keys kept because they do not ascend, and hudi-rs's snapshot.
    let run_and_read = |val: &Path, expected: Vec<String>| {
        let args = [
            "run",
            "--job",
            job.to_str().unwrap(),
            "--province",
            "ZQ",
            "--input",
            val.to_str().unwrap(),
            "--table",
            table_url,
            "-vv",
        ];
        let out = tally().args(args).output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "run failed:\n{log}");
        assert!(log.contains("kept=true ascending=false"), "{log}");
        let read = hudi_rs(table_url);
        assert_eq!(hudi_lines(&read), expected);
        assert_no_duplicate_keys(&read);
    };
    let mut province = Province::new("ZQ", 12, 4, 7);
    province.write_version(&raw, "0900", "2026-05-06T09:00:00Z", |_| true);
    validate(&raw, &val);
    // Into new partitions: checked without keeping, found out of order, keyed again and kept.
    run_and_read(&val, province.expected());
    // Into stored partitions: kept from the start.
    province.write_version(&raw, "1500", "2026-05-06T15:00:00Z", |s| s % 2 == 0);
    validate(&raw, &val);
    run_and_read(&val, province.expected());
}

#[test]
fn rerunning_the_same_inputs_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table_url = table.to_str().unwrap();
    let (province, val) = two_runs(dir.path(), table_url);
    let before: Vec<_> = std::fs::read_dir(table.join(".hoodie"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let stderr = run_ok("ZQ", &val, table_url, &[]);
    assert!(stderr.contains("no changes"), "{stderr}");
    let after: Vec<_> = std::fs::read_dir(table.join(".hoodie"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before.len(), after.len());
    let read = hudi_rs(table_url);
    assert_eq!(read["commits"].as_array().unwrap().len(), 2);
    assert_eq!(hudi_lines(&read), province.expected());
}

#[test]
fn a_run_killed_mid_write_leaves_the_snapshot_and_the_rerun_completes() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    let table = dir.path().join("table");
    let table_url = table.to_str().unwrap();
    let mut province = Province::new("ZK", 12, 4, 7);
    province.write_version(&raw, "0900", "2026-05-06T09:00:00Z", |_| true);
    validate(&raw, &val);
    run_ok("ZK", &val, table_url, &[]);
    let first = hudi_rs(table_url);
    let first_rows = hudi_lines(&first);

    province.write_version(&raw, "1500", "2026-05-06T15:00:00Z", |s| s % 3 != 0);
    validate(&raw, &val);
    // Dies after writing base files, before the commit: as if killed.
    let killed = tally()
        .env("TALLY_FAILPOINT", "hudi-after-base-files")
        .args([
            "run",
            "--job",
            "province_sales",
            "--province",
            "ZK",
            "--input",
            val.to_str().unwrap(),
            "--table",
            table_url,
        ])
        .output()
        .unwrap();
    assert!(!killed.status.success());
    let pending: Vec<String> = std::fs::read_dir(table.join(".hoodie"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".inflight"))
        .collect();
    assert_eq!(
        pending.len(),
        2,
        "the killed run's instant is left inflight: {pending:?}"
    );
    // Readers still see the previous snapshot.
    let during = hudi_rs(table_url);
    assert_eq!(hudi_lines(&during), first_rows);
    assert_eq!(during["commits"].as_array().unwrap().len(), 1);

    // A killed local write can also leave temp files, on the timeline and in a partition;
    // readers ignore them.
    let killed_time = pending
        .iter()
        .map(|n| n.trim_end_matches(".inflight").to_string())
        .find(|t| !table.join(format!(".hoodie/{t}.commit")).exists())
        .unwrap();
    let partition_temp = table.join(format!("2026-05-01/x-0_0-0-0_{killed_time}.parquet#7"));
    std::fs::write(&partition_temp, "partial").unwrap();
    std::fs::write(table.join(".hoodie/29991231000000000.commit#1"), "{").unwrap();
    assert_eq!(hudi_rs(table_url)["commits"].as_array().unwrap().len(), 1);

    // The rerun rolls the leftover instant back, removes the temp file and completes.
    let stderr = run_ok("ZK", &val, table_url, &[]);
    assert!(!table.join(".hoodie/29991231000000000.commit#1").exists());
    assert!(!partition_temp.exists());
    assert!(stderr.contains("commit "), "{stderr}");
    let after = hudi_rs(table_url);
    assert_eq!(hudi_lines(&after), province.expected());
    assert_no_duplicate_keys(&after);
    assert_eq!(after["commits"].as_array().unwrap().len(), 2);
    let killed_instant = pending
        .iter()
        .map(|n| n.trim_end_matches(".inflight").to_string())
        .find(|t| !table.join(format!(".hoodie/{t}.commit")).exists())
        .unwrap();
    let leftovers = walk(&table)
        .into_iter()
        .filter(|p| p.contains(&killed_instant))
        .collect::<Vec<_>>();
    assert!(
        leftovers.is_empty(),
        "files of the killed instant remain: {leftovers:?}"
    );
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}

#[test]
fn an_older_source_never_overwrites_a_newer_one() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table_url = table.to_str().unwrap();
    let (new_val, old_val) = (dir.path().join("new"), dir.path().join("old"));
    write_file(
        &new_val,
        "ZO-1.csv",
        "s1,9.00,4,i1,2026-01-01\n",
        "2026-01-01T15:00:00Z",
    );
    write_file(
        &old_val,
        "ZO-1.csv",
        "s1,1.00,4,i1,2026-01-01\ns1,2.00,4,i2,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    run_ok("ZO", &new_val, table_url, &[]);
    let stderr = run_ok("ZO", &old_val, table_url, &[]);
    assert!(
        stderr.contains("1 inserts, 0 updates") && stderr.contains("1 older ignored"),
        "{stderr}"
    );
    let read = hudi_rs(table_url);
    assert_eq!(
        hudi_lines(&read),
        [
            "ZO,s1,i1,2026-01-01,9.00,0.00,0.00",
            "ZO,s1,i2,2026-01-01,2.00,0.00,0.00"
        ]
    );
}

#[test]
fn a_second_writer_fails_cleanly_and_a_dead_writers_lock_is_broken() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table_url = table.to_str().unwrap();
    let val = dir.path().join("val");
    write_file(
        &val,
        "ZL-1.csv",
        "s1,1.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    run_ok("ZL", &val, table_url, &[]);
    // A live writer: this test process, holding the lock.
    let held = hold_hudi_lock(&table, std::process::id());
    write_file(
        &val,
        "ZL-1.csv",
        "s1,2.00,4,i1,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    let out = run_into("ZL", &val, table_url, &["--hudi-lock-wait-secs", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another writer holds the table"),
        "{stderr}"
    );
    assert_eq!(hudi_rs(table_url)["commits"].as_array().unwrap().len(), 1);
    drop(held);
    // A dead writer's lock record (no such process on this host) holds nothing.
    hold_hudi_lock(&table, u32::MAX - 1);
    run_ok("ZL", &val, table_url, &[]);
    let read = hudi_rs(table_url);
    assert_eq!(hudi_lines(&read), ["ZL,s1,i1,2026-01-01,2.00,0.00,0.00"]);
}

#[test]
fn a_run_touching_one_partition_reads_and_rewrites_only_that_partition() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("table");
    let table_url = table.to_str().unwrap();
    let (val, late) = (dir.path().join("val"), dir.path().join("late"));
    let mut text = String::new();
    for day in 1..=28 {
        for store in 0..100 {
            for item in 0..5 {
                text.push_str(&format!(
                    "s{store},{day}.{item:02},4,i{item},2026-02-{day:02}\n"
                ));
            }
        }
    }
    write_file(&val, "ZP-1.csv", &text, "2026-02-28T09:00:00Z");
    run_ok("ZP", &val, table_url, &[]);
    // A late file for one day: one partition of 28 is touched.
    write_file(
        &late,
        "ZP-2.csv",
        "s3,99.00,4,i1,2026-02-14\ns3,1.00,5,i9,2026-02-14\n",
        "2026-02-28T15:00:00Z",
    );
    let summary = dir.path().join("summary.json");
    run_ok(
        "ZP",
        &late,
        table_url,
        &["--summary-json", summary.to_str().unwrap()],
    );
    let summary: Value = serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap();
    let figures = &summary["sinks"][0]["details"]["figures"];
    println!("one-partition run over a 28-partition table: {figures}");
    assert_eq!(figures["partitions_touched"], 1);
    assert_eq!(
        figures["key_files_read"], 1,
        "only the touched partition's keys are read"
    );
    assert_eq!(figures["files_rewritten"], 1);
    assert_eq!(figures["files_written"], 1);
    assert_eq!(
        (figures["updates"].as_u64(), figures["inserts"].as_u64()),
        (Some(1), Some(1))
    );
    let parquet_files = walk(&table)
        .into_iter()
        .filter(|p| p.ends_with(".parquet"))
        .count();
    assert_eq!(parquet_files, 29, "28 partitions' files plus one new slice");
    let read = hudi_rs(table_url);
    assert_eq!(read["rows"].as_array().unwrap().len(), 14_001);
    let changed = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["_hoodie_record_key"] == "store_id:s3,item_id:i1,trans_date:2026-02-14")
        .unwrap();
    assert_eq!(changed["sale_amount"], "99.00");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

/// Unzips a Spark-written reference table from `../shared/hudi-reference/` into `dir`.
fn reference_table(name: &str, dir: &Path) -> std::path::PathBuf {
    let zip = repo().join(format!("../shared/hudi-reference/{name}.zip"));
    assert!(zip.exists(), "{} is missing", zip.display());
    let unpacked = dir.join("unzipped");
    let status = Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])",
        ])
        .arg(&zip)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(status.success());
    let table = dir.join(name);
    copy_dir(&unpacked.join(name), &table);
    table
}

#[test]
fn tally_reads_spark_written_tables_like_hudi_rs() {
    for name in ["v6_simplekeygen_nonhivestyle", "v6_complexkeygen_hivestyle"] {
        let dir = tempfile::tempdir().unwrap();
        let table = reference_table(name, dir.path());
        let uri = table.to_str().unwrap();
        let expected = hudi_rs(uri);
        let out = ok(&[
            "query",
            "--table",
            uri,
            "--format",
            "csv",
            &format!("SELECT _hoodie_record_key, name, \"isActive\" FROM {name}"),
        ]);
        let mut got: Vec<String> = csv_rows(&out)
            .iter()
            .map(|r| {
                format!(
                    "{}|{}|{}",
                    r["_hoodie_record_key"], r["name"], r["isActive"]
                )
            })
            .collect();
        let mut want: Vec<String> = expected["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{}|{}|{}",
                    r["_hoodie_record_key"].as_str().unwrap(),
                    r["name"].as_str().unwrap(),
                    r["isActive"].as_str().unwrap().to_lowercase()
                )
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "{name}");
        assert_eq!(got.len(), 4);
    }
}

#[test]
fn tally_upserts_into_a_spark_written_table_and_hudi_rs_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let table = reference_table("v6_simplekeygen_nonhivestyle", dir.path());
    let uri = table.to_str().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("people.sql"),
        r#"/* tally:job
name = "people"
[input]
files = ["people-*.csv"]
columns = [
  { name = "id", type = "integer" },
  { name = "name", type = "string" },
  { name = "long_field", type = "integer" },
  { name = "byte_field", type = "integer" },
]
[output]
record_key = ["id"]
partition_field = "byteField"
precombine_field = "longField"
[sinks]
hudi_table = "v6_simplekeygen_nonhivestyle"
*/
SELECT CAST(id AS INT) AS id, name, long_field AS "longField", CAST(byte_field AS INT) AS "byteField"
FROM transactions
"#,
    )
    .unwrap();
    let val = dir.path().join("val");
    // Alice (id 1, partition 10) with a larger precombine value; Bob (id 2) with a smaller one;
    // Erin is new in partition 10; Frank starts partition 40.
    write_file(
        &val,
        "people-1.csv",
        "1,Alice Updated,9999999999,10\n2,Bob Older,1,20\n5,Erin,5,10\n6,Frank,6,40\n",
        "2026-01-01T00:00:00Z",
    );
    let out = tally()
        .args([
            "--jobs-dir",
            jobs.to_str().unwrap(),
            "run",
            "--job",
            "people",
            "--input",
            val.to_str().unwrap(),
            "--table",
            uri,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read = hudi_rs(uri);
    let mut names: Vec<String> = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["id"].as_str().unwrap(),
                r["name"].as_str().unwrap()
            )
        })
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "1:Alice Updated",
            "2:Bob",
            "3:Carol",
            "4:Diana",
            "5:Erin",
            "6:Frank"
        ]
    );
    assert_eq!(read["commits"].as_array().unwrap().len(), 3);
    assert_no_duplicate_keys(&read);
    // Rows not in the run keep their Spark-written values, nested columns included.
    let carol = read["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "Carol")
        .unwrap();
    assert!(carol["structField"].as_str().unwrap().contains("Carol"));
    assert!(table.join("40/.hoodie_partition_metadata").exists());
}

#[test]
fn athena_ddl_declares_exact_types() {
    let ddl = ok(&[
        "athena",
        "ddl",
        "--job",
        "province_sales",
        "--table",
        "s3://lake/store_item_daily_sales/",
    ]);
    assert!(
        ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `default`.`store_item_daily_sales`"),
        "{ddl}"
    );
    assert!(ddl.contains("`sale_amount` decimal(18,2)"), "{ddl}");
    assert!(ddl.contains("`source_time` timestamp"), "{ddl}");
    assert!(ddl.contains("PARTITIONED BY (`trans_date` date)"), "{ddl}");
    assert!(
        ddl.contains("org.apache.hudi.hadoop.HoodieParquetInputFormat"),
        "{ddl}"
    );
    assert!(
        ddl.contains("LOCATION 's3://lake/store_item_daily_sales'"),
        "{ddl}"
    );
}

#[test]
fn runs_print_partition_registration_for_new_partitions_only() {
    let dir = tempfile::tempdir().unwrap();
    let table = dir.path().join("t");
    let val = dir.path().join("val");
    write_file(
        &val,
        "ZA-1.csv",
        "s1,1.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    let out = tally()
        .args([
            "run",
            "--job",
            "province_sales",
            "--province",
            "ZA",
            "--input",
            val.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ADD IF NOT EXISTS PARTITION (`trans_date` = '2026-01-01')"),
        "{stdout}"
    );
    write_file(
        &val,
        "ZA-1.csv",
        "s1,2.00,4,i1,2026-01-01\ns1,2.00,4,i1,2026-01-02\n",
        "2026-01-01T10:00:00Z",
    );
    let out = tally()
        .args([
            "run",
            "--job",
            "province_sales",
            "--province",
            "ZA",
            "--input",
            val.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("'2026-01-02'") && !stdout.contains("'2026-01-01'"),
        "{stdout}"
    );
}

#[test]
fn two_runs_into_a_table_on_s3() {
    let bucket = std::env::var("TALLY_TEST_S3_BUCKET")
        .expect("TALLY_TEST_S3_BUCKET is not set: run the suite with tests/run.sh, which starts the S3 test server");
    let table = format!(
        "s3://{bucket}/hudi-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let dir = tempfile::tempdir().unwrap();
    let (province, _) = two_runs(dir.path(), &table);
    let read = hudi_rs(&table);
    assert_eq!(hudi_lines(&read), province.expected());
    assert_no_duplicate_keys(&read);
    assert_eq!(read["commits"].as_array().unwrap().len(), 2);
    let out = ok(&[
        "query",
        "--table",
        &table,
        "--format",
        "csv",
        "SELECT * FROM store_item_daily_sales",
    ]);
    assert_eq!(
        project(&csv_rows(&out), RESULT_COLUMNS),
        province.expected()
    );
    // Without --hudi-single-writer, a store that ignores conditional writes is refused, and the
    // table is left as it was.
    let val = dir.path().join("val");
    let out = run_into("ZQ", &val, &table, &["--hudi-lock-wait-secs", "1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not honor conditional writes")
            && stderr.contains("--hudi-single-writer"),
        "{stderr}"
    );
    assert_eq!(hudi_rs(&table)["commits"].as_array().unwrap().len(), 2);
}

/// A bug's panic ends the process (the release build aborts on panic; `TALLY_ABORT_ON_PANIC=1`
/// makes this build do the same): the panic hook records the run FAILED with the panic's message
/// first, and the sinks stay as a killed run leaves them (no commit, no warehouse rows).
#[tokio::test]
async fn a_panic_records_the_run_failed_before_the_process_ends() {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let table = dir.path().join("table");
    let warehouse = dir.path().join("warehouse.db");
    let state = format!("sqlite://{}", dir.path().join("state.db").display());
    let out = job_run("province_sales", "IL", &val)
        .table(table.to_str().unwrap())
        .warehouse(&format!("sqlite://{}", warehouse.display()))
        .state(&state)
        .env("TALLY_FAILPOINT", "hudi-after-base-files=panic")
        .env("TALLY_ABORT_ON_PANIC", "1")
        .run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the run is recorded FAILED in the state store"),
        "{stderr}"
    );
    let recorded = only_run_failed(&state).await;
    assert!(
        recorded.starts_with("tally panicked: panicked at ")
            && recorded.contains("failpoint `hudi-after-base-files` reached")
            && !recorded.contains('\n'),
        "{recorded}"
    );
    let commits: Vec<String> = std::fs::read_dir(table.join(".hoodie"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".commit"))
        .collect();
    assert!(commits.is_empty(), "{commits:?}");
    // The warehouse's load never committed: no table (the file may exist, empty).
    if warehouse.exists() {
        let tables: i64 = rusqlite::Connection::open(&warehouse)
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0);
    }
}
