//! The Hudi writer under racing, killed and paused writers, over many runs, and with hostile keys.
//! Every check reads the table with hudi-rs (the independent reader) and inspects `.hoodie/` the
//! way Hudi's tools would: completed commits name only files that exist, nothing stays pending,
//! rollbacks and cleans are Avro instants (read back with fastavro), and the timeline is bounded.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};

use common::hudi::*;
use common::*;
use serde_json::Value;

/// Instant files directly in `.hoodie/`.
fn timeline_files(table: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(table.join(".hoodie"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().is_file())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.as_bytes().first().is_some_and(u8::is_ascii_digit))
        .collect();
    names.sort();
    names
}

/// Instants requested or started but never completed.
fn pending_instants(table: &Path) -> Vec<String> {
    let files = timeline_files(table);
    let completed: BTreeSet<(String, String)> = files
        .iter()
        .filter_map(|f| {
            let (time, action) = f.split_once('.')?;
            (!action.contains('.') && action != "inflight")
                .then(|| (time.to_string(), action.to_string()))
        })
        .collect();
    files
        .iter()
        .filter_map(|f| {
            let (time, rest) = f.split_once('.')?;
            let action = match rest {
                "inflight" | "commit.requested" => "commit",
                r => r.split_once('.').map(|(a, _)| a)?,
            };
            (!completed.contains(&(time.to_string(), action.to_string()))).then(|| f.clone())
        })
        .collect()
}

/// Every base file a completed commit names exists (of commits from `since` on: cleaning deletes
/// what only older snapshots read, as Hudi's does).
fn assert_committed_files_exist(table: &Path, since: &str) {
    for name in timeline_files(table)
        .iter()
        .filter(|n| n.ends_with(".commit") && n.as_str() >= since)
    {
        let json: Value =
            serde_json::from_slice(&std::fs::read(table.join(".hoodie").join(name)).unwrap())
                .unwrap();
        for stats in json["partitionToWriteStats"].as_object().unwrap().values() {
            for stat in stats.as_array().unwrap() {
                let path = stat["path"].as_str().unwrap();
                assert!(
                    table.join(path).exists(),
                    "{name} names {path}, which does not exist"
                );
            }
        }
    }
}

/// Reads an Avro instant with fastavro (an independent Avro reader) into JSON.
fn read_avro(path: &Path) -> Value {
    let script = "import fastavro, json, sys\n\
                  with open(sys.argv[1], 'rb') as f:\n\
                  \x20   r = fastavro.reader(f)\n\
                  \x20   print(json.dumps({'schema': r.writer_schema['name'], 'records': list(r)}))\n";
    let out = StdCommand::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fastavro cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// A table holding one row (`s1,i1` at 1.00), written from `dir/val`.
fn one_row_table(dir: &Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let (val, table) = (dir.join("val"), dir.join(name));
    write_file(
        &val,
        "ZR-1.csv",
        "s1,1.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    run_ok("ZR", &val, table.to_str().unwrap(), &[]);
    (val, table)
}

fn province_run_args<'a>(val: &'a Path, table: &'a Path) -> Vec<&'a str> {
    vec![
        "run",
        "--job",
        "jobs/province_sales.sql",
        "--province",
        "ZR",
        "--input",
        val.to_str().unwrap(),
        "--table",
        table.to_str().unwrap(),
    ]
}

#[test]
fn four_writers_racing_after_a_killed_one_leave_old_or_new_and_converge() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, val, table) = (
        dir.path().join("raw"),
        dir.path().join("val"),
        dir.path().join("t"),
    );
    let mut province = Province::new("ZR", 12, 4, 7);
    province.write_version(&raw, "0900", "2026-05-06T09:00:00Z", |_| true);
    validate(&raw, &val);
    run_ok("ZR", &val, table.to_str().unwrap(), &[]);
    let old = province.expected();
    assert_eq!(hudi_lines(&hudi_rs(table.to_str().unwrap())), old);

    province.write_version(&raw, "1500", "2026-05-06T15:00:00Z", |s| s % 2 == 1);
    validate(&raw, &val);
    let new = province.expected();
    assert_ne!(old, new);

    // A writer killed after writing its base files: its lock record, heartbeat and pending
    // instant stay behind.
    let killed = tally()
        .args(province_run_args(&val, &table))
        .env("TALLY_FAILPOINT", "hudi-after-base-files")
        .output()
        .unwrap();
    assert!(!killed.status.success());
    assert!(!pending_instants(&table).is_empty());
    assert!(table.join(".hoodie/.aux/tally-writer.lock").exists());

    // Four writers started at the same moment, while a reader keeps reading.
    let bin = assert_cmd::cargo::cargo_bin("tally");
    let writers: Vec<_> = (0..4)
        .map(|_| {
            StdCommand::new(&bin)
                .current_dir(repo())
                .arg("--quiet")
                .args(province_run_args(&val, &table))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut reads = 0;
    while reads < 3 {
        let seen = hudi_lines(&hudi_rs(table.to_str().unwrap()));
        assert!(seen == old || seen == new, "a reader saw a mixture");
        reads += 1;
    }
    let mut succeeded = 0;
    for writer in writers {
        let out = writer.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            succeeded += 1;
        } else {
            assert!(
                stderr.contains("another writer"),
                "a racing writer failed for another reason:\n{stderr}"
            );
        }
    }
    assert!(succeeded >= 1);
    assert_committed_files_exist(&table, "");
    let read = hudi_rs(table.to_str().unwrap());
    assert_no_duplicate_keys(&read);
    assert_eq!(hudi_lines(&read), new);

    // One more plain run converges with nothing pending.
    run_ok("ZR", &val, table.to_str().unwrap(), &[]);
    assert!(
        pending_instants(&table).is_empty(),
        "{:?}",
        pending_instants(&table)
    );
    assert_committed_files_exist(&table, "");
    assert_eq!(hudi_lines(&hudi_rs(table.to_str().unwrap())), new);

    // The killed writer's instant was rolled back as an instant of its own.
    let rollbacks: Vec<String> = timeline_files(&table)
        .into_iter()
        .filter(|n| n.ends_with(".rollback"))
        .collect();
    assert_eq!(rollbacks.len(), 1, "{:?}", timeline_files(&table));
    let rollback = read_avro(&table.join(".hoodie").join(&rollbacks[0]));
    assert_eq!(
        rollback["schema"],
        "org.apache.hudi.avro.model.HoodieRollbackMetadata"
    );
    let record = &rollback["records"][0];
    assert_eq!(record["commitsRollback"].as_array().unwrap().len(), 1);
    assert!(record["totalFilesDeleted"].as_i64().unwrap() >= 1);
}

#[test]
fn a_paused_writer_keeps_the_table_and_the_next_one_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (val, table) = one_row_table(dir.path(), "t");
    write_file(
        &val,
        "ZR-1.csv",
        "s1,2.00,4,i1,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    // A writer that stops after writing its base files (the failpoint pauses it until the
    // marker file is removed).
    let bin = assert_cmd::cargo::cargo_bin("tally");
    let marker = dir.path().join("paused");
    let paused = StdCommand::new(&bin)
        .current_dir(repo())
        .arg("--quiet")
        .args(province_run_args(&val, &table))
        .env(
            "TALLY_FAILPOINT",
            format!("hudi-after-base-files=pause:{}", marker.display()),
        )
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !marker.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never reached its pause"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // While it is stopped, another writer neither rolls its instant back nor writes.
    let out = run_into(
        "ZR",
        &val,
        table.to_str().unwrap(),
        &["--hudi-lock-wait-secs", "1"],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("another writer holds the table"),
        "{stderr}"
    );
    assert_eq!(
        hudi_lines(&hudi_rs(table.to_str().unwrap())),
        ["ZR,s1,i1,2026-01-01,1.00,0.00,0.00"]
    );
    // Resumed, it completes its commit.
    std::fs::remove_file(&marker).unwrap();
    let out = paused.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        hudi_lines(&hudi_rs(table.to_str().unwrap())),
        ["ZR,s1,i1,2026-01-01,2.00,0.00,0.00"]
    );
    assert!(pending_instants(&table).is_empty());
}

#[test]
fn two_hundred_runs_keep_the_timeline_bounded_with_clean_instants() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    let table = dir.path().join("t");
    let args = [
        "--hudi-retain-commits",
        "3",
        "--hudi-retain-minutes",
        "0",
        "--hudi-max-active-instants",
        "12",
    ];
    let mut most_timeline_files = 0;
    for run in 0..200u32 {
        // Each run brings a newer cumulative file, so each one commits.
        let cents = 100 + run;
        write_file(
            &val,
            "ZR-1.csv",
            format!(
                "s1,{}.{:02},4,i1,2026-01-01\ns2,1.00,4,i2,2026-01-02\n",
                cents / 100,
                cents % 100
            ),
            &format!("2026-01-01T{:02}:{:02}:00Z", 1 + run / 60, run % 60),
        );
        run_ok("ZR", &val, table.to_str().unwrap(), &args);
        most_timeline_files = most_timeline_files.max(timeline_files(&table).len());
    }
    // At most 12 completed instants (3 files each) stay active, plus the one being made.
    assert!(
        most_timeline_files <= 13 * 3,
        "{most_timeline_files} timeline files"
    );
    let last = 100 + 199;
    assert_eq!(
        hudi_lines(&hudi_rs(table.to_str().unwrap())),
        [
            format!(
                "ZR,s1,i1,2026-01-01,{}.{:02},0.00,0.00",
                last / 100,
                last % 100
            ),
            "ZR,s2,i2,2026-01-02,1.00,0.00,0.00".to_string()
        ]
    );
    assert!(pending_instants(&table).is_empty());
    // Old slices are cleaned: each of the two file groups keeps a handful, not 200.
    let base_files = std::fs::read_dir(table.join("2026-01-01"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".parquet"))
        .count();
    assert!(
        base_files <= 5,
        "{base_files} base files left in 2026-01-01"
    );
    // Cleans are Avro instants naming what they deleted, and archives hold the rest.
    let cleans: Vec<String> = timeline_files(&table)
        .into_iter()
        .filter(|n| n.ends_with(".clean"))
        .collect();
    assert!(!cleans.is_empty());
    let clean = read_avro(&table.join(".hoodie").join(cleans.last().unwrap()));
    assert_eq!(
        clean["schema"],
        "org.apache.hudi.avro.model.HoodieCleanMetadata"
    );
    let clean = &clean["records"][0];
    assert_eq!(clean["policy"], "KEEP_LATEST_COMMITS");
    assert!(clean["totalFilesDeleted"].as_i64().unwrap() >= 1);
    // Every snapshot from the earliest retained commit on is complete.
    assert_committed_files_exist(&table, clean["earliestCommitToRetain"].as_str().unwrap());
    // The archive holds the older commits, in files of about 1 MiB, not one per run.
    let archives: Vec<String> = std::fs::read_dir(table.join(".hoodie/archived"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    assert!(
        (1..=4).contains(&archives.len()),
        "{} archive files",
        archives.len()
    );
    let archived_commits = archives
        .iter()
        .flat_map(|a| a.lines())
        .filter(|l| l.contains(".commit\""))
        .count();
    assert!(
        archived_commits >= 180,
        "{archived_commits} commits archived"
    );
}

#[test]
fn ambiguous_or_missing_key_values_are_refused_not_merged() {
    let dir = tempfile::tempdir().unwrap();
    let (val, table) = one_row_table(dir.path(), "t");
    // A store id that would spell another row's complex key.
    write_file(
        &val,
        "ZR-2.csv",
        "\"s1,item_id:i1\",9.00,4,i9,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    let out = run_into("ZR", &val, table.to_str().unwrap(), &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("makes Hudi's complex key ambiguous") && stderr.contains("store_id"),
        "{stderr}"
    );
    assert_eq!(
        hudi_lines(&hudi_rs(table.to_str().unwrap())),
        ["ZR,s1,i1,2026-01-01,1.00,0.00,0.00"]
    );
    assert!(pending_instants(&table).is_empty());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

#[test]
fn a_writer_killed_before_any_object_write_leaves_old_or_new_and_the_rerun_converges() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, val, start) = (
        dir.path().join("raw"),
        dir.path().join("val"),
        dir.path().join("start"),
    );
    let mut province = Province::new("ZR", 4, 3, 11);
    province.write_version(&raw, "0900", "2026-05-06T09:00:00Z", |_| true);
    validate(&raw, &val);
    run_ok("ZR", &val, start.to_str().unwrap(), &[]);
    let old = province.expected();
    province.write_version(&raw, "1500", "2026-05-06T15:00:00Z", |s| s != 1);
    validate(&raw, &val);
    let new = province.expected();
    // Kill the writer before its 1st, 2nd, ... object write, each time from the same table,
    // until a run gets through all of them.
    let mut n = 1;
    loop {
        let table = dir.path().join(format!("t{n}"));
        copy_dir(&start, &table);
        let out = tally()
            .args(province_run_args(&val, &table))
            .env("TALLY_FAILPOINT", format!("hudi-write#{n}"))
            .output()
            .unwrap();
        let seen = hudi_rs(table.to_str().unwrap());
        assert_no_duplicate_keys(&seen);
        let seen = hudi_lines(&seen);
        if out.status.success() {
            assert_eq!(seen, new);
            break;
        }
        assert!(
            seen == old || seen == new,
            "killed before write {n}, a reader saw a mixture"
        );
        assert_committed_files_exist(&table, "");
        // The next plain run completes (or finds nothing to do) and leaves nothing pending.
        run_ok("ZR", &val, table.to_str().unwrap(), &[]);
        assert_eq!(
            hudi_lines(&hudi_rs(table.to_str().unwrap())),
            new,
            "after a kill before write {n}"
        );
        assert!(
            pending_instants(&table).is_empty(),
            "after a kill before write {n}"
        );
        n += 1;
        assert!(n < 100, "the run never got through");
    }
    assert!(
        n > 5,
        "only {n} object writes: the failpoint is not reached"
    );
}

#[test]
fn tables_tally_does_not_maintain_are_refused_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let (val, base) = one_row_table(dir.path(), "base");
    write_file(
        &val,
        "ZR-1.csv",
        "s1,2.00,4,i1,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    let cases: [(&str, &str, &str); 2] = [
        (
            "metadata",
            ".hoodie/metadata/.hoodie/hoodie.properties",
            "metadata table",
        ),
        (
            "clustering",
            ".hoodie/20990101000000000.replacecommit.requested",
            "replacecommit",
        ),
    ];
    for (name, planted, expected) in cases {
        let table = dir.path().join(name);
        copy_dir(&base, &table);
        let path = table.join(planted);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "").unwrap();
        let before = timeline_files(&table);
        let out = run_into("ZR", &val, table.to_str().unwrap(), &[]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}");
        assert!(stderr.contains(expected), "{name}: {stderr}");
        assert_eq!(timeline_files(&table), before, "{name}");
        assert_eq!(
            hudi_lines(&hudi_rs(table.to_str().unwrap())),
            ["ZR,s1,i1,2026-01-01,1.00,0.00,0.00"]
        );
    }
}
