//! The province job end to end: `tally validate` then `tally run --dry-run`, checked against sums
//! computed here independently, to the cent.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::*;
use datafusion::arrow::array::{ArrayRef, Date32Array, Decimal128Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;

fn dry_run(province: &str, input: &Path, format: &str) -> String {
    job_run("jobs/province_sales.sql", province, input)
        .dry_run()
        .format(format)
        .ok()
}

fn validate(raw: &Path, out: &Path) {
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        out.to_str().unwrap(),
    ]);
}

#[test]
fn the_bundled_sample_gives_the_hand_computed_sums() {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let rows = csv_rows(&dry_run("WI", &val, "csv"));
    assert_eq!(project(&rows, RESULT_COLUMNS), expected_sample());
    // Lineage: the later cumulative file of store s201 won.
    let s201: Vec<_> = rows.iter().filter(|r| r["store_id"] == "s201").collect();
    assert!(s201
        .iter()
        .all(|r| r["source_file"].ends_with("/WI-201-1500.csv")));
    assert!(s201
        .iter()
        .all(|r| r["source_time"] == "2026-03-01T15:00:00.000000Z"));
}

#[test]
fn a_dry_run_piped_into_a_reader_that_quits_ends_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    // `tally run --dry-run | head -0`: the pipe's reader is gone before the first row is written.
    let mut child = tally_process()
        .args([
            "run",
            "--job",
            "jobs/province_sales.sql",
            "--province",
            "WI",
        ])
        .arg("--input")
        .arg(&val)
        .args(["--dry-run", "--format", "csv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("error") && !stderr.contains("panicked"),
        "{stderr}"
    );
    assert!(stderr.contains("tally run: job province_sales"), "{stderr}");
}

type Key = (String, String, String);

/// Writes a province of `stores` stores, each with 1–3 cumulative versions (some named against
/// their time order, some sharing a time), junk and header lines, CRLF files, and a second province
/// in the same folder. Returns the expected sums in cents per key.
fn generate_province(
    raw: &Path,
    province: &str,
    stores: u64,
    seed: u64,
) -> BTreeMap<Key, [i64; 3]> {
    let mut rng = Lcg(seed);
    let mut expected = BTreeMap::new();
    for store in 0..stores {
        let store_id = format!("st{store}");
        let versions = 1 + rng.next(3);
        let mut rows: Vec<(String, i64, u64, String, String)> = Vec::new();
        for v in 0..versions {
            for _ in 0..(5 + rng.next(40)) {
                let code = [4, 5, 6, 4, 5, 6, 13, 1][rng.next(8) as usize];
                let cents = rng.next(200_000) as i64 - 5_000;
                let item = format!("it{}", rng.next(12));
                let date = format!("2026-04-{:02}", 1 + rng.next(3));
                rows.push((store_id.clone(), cents, code, item, date));
            }
            let mut text = String::new();
            let crlf = store % 3 == 0;
            let eol = if crlf { "\r\n" } else { "\n" };
            if store % 4 == 0 {
                text.push_str(&format!("------ additional invalid data{eol}"));
            }
            if store % 5 == 0 {
                text.push_str(&format!("store\tamount\tcode\titem\tdate\tx{eol}"));
            }
            for (i, (s, c, code, item, date)) in rows.iter().enumerate() {
                text.push_str(&format!(
                    "{s}\t{}\t{code}\t{item}\t{date}\tsome-data\tsome-data{eol}",
                    cents(*c)
                ));
                if i % 17 == 16 {
                    text.push_str(&format!("------ additional invalid data{eol}"));
                }
            }
            // Version names: usually in time order; every 7th store names them against it; every
            // 11th store gives all versions the same time (then the name decides).
            let same_time = store % 11 == 0;
            let label = if store % 7 == 0 && !same_time {
                versions - v
            } else {
                v
            };
            let hour = if same_time { 12 } else { 8 + v };
            write_file(
                raw,
                &format!("{province}-{store}-v{label}.tdf"),
                &text,
                &format!("2026-04-03T{hour:02}:00:00Z"),
            );
        }
        // The newest version is the last one written (rows is cumulative).
        for (s, c, code, item, date) in &rows {
            let slot = match code {
                4 => 0,
                5 => 1,
                6 => 2,
                _ => continue,
            };
            expected
                .entry((s.clone(), item.clone(), date.clone()))
                .or_insert([0i64; 3])[slot] += c;
        }
    }
    expected
}

#[test]
fn a_generated_province_gives_exactly_the_expected_sums() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    let expected = generate_province(&raw, "ZZ", 40, 7);
    // Another province in the same folder, with colliding store ids, must not leak in.
    generate_province(&raw, "ZY", 5, 99);
    validate(&raw, &val);
    let rows = csv_rows(&dry_run("ZZ", &val, "csv"));
    let got = project(&rows, RESULT_COLUMNS);
    let want: Vec<String> = expected
        .iter()
        .map(|((s, i, d), [sale, tax, disc])| {
            format!(
                "ZZ,{s},{i},{d},{},{},{}",
                cents(*sale),
                cents(*tax),
                cents(*disc)
            )
        })
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(got.len(), want.len());
    assert_eq!(got, want);
}

#[test]
fn newest_file_wins_by_time_then_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    // By time: `a` is newer although its name sorts first.
    write_file(
        &val,
        "QC-1-a.csv",
        "s1,5.00,4,i1,2026-01-01\n",
        "2026-01-01T15:00:00Z",
    );
    write_file(
        &val,
        "QC-1-b.csv",
        "s1,1.00,4,i1,2026-01-01\ns1,9.00,5,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    // Same time: the larger name wins.
    write_file(
        &val,
        "QC-2-1.csv",
        "s2,1.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    write_file(
        &val,
        "QC-2-2.csv",
        "s2,2.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    let rows = csv_rows(&dry_run("QC", &val, "csv"));
    assert_eq!(
        project(&rows, RESULT_COLUMNS),
        [
            "QC,s1,i1,2026-01-01,5.00,0.00,0.00",
            "QC,s2,i1,2026-01-01,2.00,0.00,0.00"
        ]
    );
}

fn write_parquet(path: &Path, columns: Vec<(&str, ArrayRef)>) {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    ));
    let batch = RecordBatch::try_new(
        schema.clone(),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut writer = datafusion::parquet::arrow::ArrowWriter::try_new(file, schema, None).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
}

/// Province ON in `val`: store s1 in a CSV file, store s2 in a Parquet file (with a column the
/// layout does not declare): two stores, read in two key ranges.
fn csv_and_parquet_province(val: &Path) {
    write_file(
        val,
        "ON-1.csv",
        "s1,1.10,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    write_parquet(
        &val.join("ON-2.parquet"),
        vec![
            (
                "store_id",
                Arc::new(StringArray::from(vec!["s2", "s2", "s2"])) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(
                    Decimal128Array::from(vec![250, 75, 1999])
                        .with_precision_and_scale(10, 2)
                        .unwrap(),
                ),
            ),
            ("code", Arc::new(Int64Array::from(vec![4, 5, 6]))),
            (
                "item_id",
                Arc::new(StringArray::from(vec!["i1", "i1", "i1"])),
            ),
            (
                "trans_date",
                Arc::new(Date32Array::from(vec![20454, 20454, 20454])),
            ),
            ("ignored", Arc::new(StringArray::from(vec!["x", "y", "z"]))),
        ],
    );
}

#[test]
fn parquet_and_csv_inputs_mix() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    csv_and_parquet_province(&val);
    let rows = csv_rows(&dry_run("ON", &val, "csv"));
    assert_eq!(
        project(&rows, RESULT_COLUMNS),
        [
            "ON,s1,i1,2026-01-01,1.10,0.00,0.00",
            "ON,s2,i1,2026-01-01,2.50,0.75,19.99"
        ]
    );
}

#[test]
fn a_reader_that_panics_fails_the_run_instead_of_dropping_its_rows() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    csv_and_parquet_province(&val);
    // The Parquet file's store is read by the second key range's task; its panic used to close
    // that range's rows as if it had finished.
    let err = job_run("province_sales", "ON", val.to_str().unwrap())
        .dry_run()
        .env("TALLY_FAILPOINT", "parquet-batch=panic")
        .fails();
    assert!(err.contains("failpoint `parquet-batch` reached"), "{err}");
}

#[test]
fn a_parquet_file_with_float_amounts_is_a_schema_error() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    write_parquet(
        &val.join("ON-3.parquet"),
        vec![
            (
                "store_id",
                Arc::new(StringArray::from(vec!["s3"])) as ArrayRef,
            ),
            (
                "amount",
                Arc::new(datafusion::arrow::array::Float64Array::from(vec![1.1])),
            ),
            ("code", Arc::new(Int64Array::from(vec![4]))),
            ("item_id", Arc::new(StringArray::from(vec!["i1"]))),
            ("trans_date", Arc::new(Date32Array::from(vec![20454]))),
        ],
    );
    let err = job_run("province_sales", "ON", &val).dry_run().fails();
    assert!(
        err.contains("ON-3.parquet") && err.contains("schema mismatch") && err.contains("amount"),
        "{err}"
    );
    assert_eq!(DataType::Float64.to_string(), "Float64");
}

#[test]
fn a_province_without_files_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "IL-1.csv",
        "s1,1.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    let err = job_run("jobs/province_sales.sql", "CA", dir.path())
        .dry_run()
        .fails();
    assert!(err.contains("no input files for province CA"), "{err}");
    let err = job_run("jobs/province_sales.sql", "CA", "/no/such/folder")
        .dry_run()
        .fails();
    assert!(err.contains("/no/such/folder"), "{err}");
}

/// Runs the province job over one file whose line 2 is not a validated row: the run fails naming
/// the file, the line and `reason`; with `--max-bad-rows 1` it skips the row, counts and reports
/// it. Returns the tolerant run's output.
fn run_with_a_bad_second_line(content: &[u8], reason: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "IL-1.csv", content, "2026-01-01T09:00:00Z");
    let input = dir.path().to_str().unwrap();
    let err = job_run("province_sales", "IL", input).dry_run().fails();
    assert!(
        err.contains("IL-1.csv line 2") && err.contains(reason),
        "{err}"
    );
    let out = job_run("province_sales", "IL", input)
        .dry_run()
        .args(&["--max-bad-rows", "1"])
        .run();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("1 bad rows") && stderr.contains("IL-1.csv line 2"),
        "{stderr}"
    );
    out
}

#[test]
fn a_quote_past_the_first_block_hands_the_rest_to_csv_with_the_files_line_numbers() {
    // More than a block (1 MiB) of plain lines, then a quoted field, a CRLF line and a bad row:
    // the reader splits the plain lines itself and hands the rest to the csv crate; the rows are
    // those of the same file written plainly, and the bad row is named by its own line.
    let plain_rows: String = (0..40_000)
        .map(|n| format!("s1,1.00,4,i{},2026-01-01,plain\n", n % 50))
        .collect();
    let tail_plain =
        "s1,2.00,4,i1,2026-01-01,a b\ns1,3.00,4,i2,2026-01-01\ns1,4.00,4,i3,2026-01-01\n";
    let tail_quoted =
        "s1,2.00,4,i1,2026-01-01,\"a,b\"\ns1,oops,4,i1,2026-01-01\ns1,3.00,4,i2,2026-01-01\r\ns1,4.00,4,i3,2026-01-01\n";
    assert!(plain_rows.len() > 1 << 20);
    let dir = tempfile::tempdir().unwrap();
    let (plain, quoted) = (dir.path().join("plain"), dir.path().join("quoted"));
    write_file(
        &plain,
        "IL-1.csv",
        format!("{plain_rows}{tail_plain}"),
        "2026-01-01T09:00:00Z",
    );
    write_file(
        &quoted,
        "IL-1.csv",
        format!("{plain_rows}{tail_quoted}"),
        "2026-01-01T09:00:00Z",
    );
    let want = job_run("province_sales", "IL", &plain).dry_run().ok();
    let out = job_run("province_sales", "IL", &quoted)
        .dry_run()
        .args(&["--max-bad-rows", "1"])
        .run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 bad rows") && stderr.contains("IL-1.csv line 40002"),
        "{stderr}"
    );
    // The same rows; only the files' folder differs in source_file.
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        want.replace("/plain/IL-1.csv", "/quoted/IL-1.csv")
    );
}

#[test]
fn an_unvalidated_row_names_the_file_and_line() {
    run_with_a_bad_second_line(
        b"s1,1.00,4,i1,2026-01-01\ns1,oops,4,i1,2026-01-01\n",
        "`amount`",
    );
}

#[test]
fn a_crlf_file_names_a_bad_row_by_its_own_line() {
    // The csv crate counted a CRLF file's rows from where the row before ended (line 1 here).
    run_with_a_bad_second_line(
        b"s1,1.00,4,i1,2026-01-01\r\ns1,oops,4,i1,2026-01-01\r\ns1,2.00,4,i1,2026-01-01\r\n",
        "`amount`",
    );
}

#[test]
fn a_field_that_is_not_utf8_names_its_column_and_an_ignored_extra_field_does_not_matter() {
    let mut content = b"s1,1.00,4,i1,2026-01-01\ns1,2.00,4,i\xff2,2026-01-01\n".to_vec();
    // An extra field after the layout's columns is free-form and ignored, whatever its bytes.
    content.extend_from_slice(b"s1,3.00,4,i3,2026-01-01,note \xfe\n");
    let out = run_with_a_bad_second_line(&content, "`item_id` is not valid UTF-8");
    let rows = csv_rows(&String::from_utf8_lossy(&out.stdout));
    let items: Vec<&str> = rows.iter().map(|r| r["item_id"].as_str()).collect();
    assert_eq!(items, ["i1", "i3"]);
}

#[test]
fn unsafe_province_codes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = job_run("province_sales", "*", dir.path()).dry_run().fails();
    assert!(err.contains("not allowed"), "{err}");
}

#[test]
fn json_and_table_formats_carry_the_same_rows() {
    let dir = tempfile::tempdir().unwrap();
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    tally::demo::write_sample_files(&raw).unwrap();
    validate(&raw, &val);
    let json: serde_json::Value = serde_json::from_str(&dry_run("WI", &val, "json")).unwrap();
    let rows = json.as_array().unwrap();
    assert_eq!(rows.len(), expected_sample().len());
    let big = rows
        .iter()
        .find(|r| r["store_id"] == "s204" && r["trans_date"] == "2026-03-01")
        .unwrap();
    // Decimals travel as strings with every digit, so no JSON reader turns them into floats.
    assert_eq!(big["sale_amount"], "1234567.90");
    let table = dry_run("WI", &val, "table");
    assert!(table.contains("| 1234567.90 "), "{table}");
}

#[test]
fn jobs_are_listed_shown_and_explained() {
    let list = ok(&["jobs", "list"]);
    assert!(list.contains("province_sales"), "{list}");
    let show = ok(&["jobs", "show", "province_sales"]);
    assert!(
        show.contains("record key:  store_id, item_id, trans_date"),
        "{show}"
    );
    assert!(show.contains("newest_sum("));
    let plan = ok(&["jobs", "explain", "province_sales"]);
    assert!(
        plan.contains("logical_plan") && plan.contains("physical_plan"),
        "{plan}"
    );
    let err = fails(&["jobs", "show", "nope"]);
    assert!(err.contains("no job named `nope`"), "{err}");
}

#[test]
fn a_new_job_is_a_new_file() {
    let dir = tempfile::tempdir().unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir_all(&jobs).unwrap();
    std::fs::write(
        jobs.join("store_totals.sql"),
        "/* tally:job\nname = \"store_totals\"\nparams = [\"province\"]\n[input]\nfiles = [\"{province}-*.csv\"]\nlayout = \"pos_transactions\"\n[output]\nrecord_key = [\"store_id\"]\npartition_field = \"store_id\"\nprecombine_field = \"last_seen\"\n*/\nSELECT store_id, SUM(amount) AS total, MAX(source_time) AS last_seen FROM transactions WHERE code = 4 GROUP BY store_id ORDER BY store_id\n",
    )
    .unwrap();
    let val = dir.path().join("val");
    write_file(
        &val,
        "IL-1.csv",
        "s1,1.00,4,i1,2026-01-01\ns1,2.50,4,i2,2026-01-02\ns2,1.00,5,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    let out = ok(&[
        "--jobs-dir",
        jobs.to_str().unwrap(),
        "run",
        "--job",
        "store_totals",
        "--province",
        "IL",
        "--input",
        val.to_str().unwrap(),
        "--dry-run",
    ]);
    let rows = csv_rows(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["total"], "3.50");
}

#[test]
fn the_demo_runs_and_says_where_outputs_went() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&["demo", "--workdir", dir.path().to_str().unwrap()]);
    assert!(out.contains("1234567.90"), "{out}");
    assert!(out.contains("result rows"), "{out}");
    let result = std::fs::read_to_string(dir.path().join("result.csv")).unwrap();
    assert_eq!(
        project(&csv_rows(&result), RESULT_COLUMNS),
        expected_sample()
    );
    assert!(dir.path().join("validated/_quarantine/WI-203.csv").exists());
    assert!(dir
        .path()
        .join("store_item_daily_sales/.hoodie/hoodie.properties")
        .exists());
    assert!(dir.path().join("warehouse.db").exists());
    // A second demo over the same files changes nothing in either sink.
    let again = ok(&["demo", "--workdir", dir.path().to_str().unwrap()]);
    assert!(
        again.contains("no changes") && again.contains("0 rows inserted or replaced"),
        "{again}"
    );
}

#[test]
fn a_job_making_two_rows_for_one_key_is_stopped_before_writing() {
    // Unordered rows are checked through a set of key hashes; rows ordered by the key, each
    // against the one before it: both find the duplicate.
    for order_by in ["", " ORDER BY store_id DESC, amount"] {
        let dir = tempfile::tempdir().unwrap();
        let jobs = dir.path().join("jobs");
        std::fs::create_dir_all(&jobs).unwrap();
        // Grouping by amount as well breaks "one row per store": s1 has two amounts.
        std::fs::write(
            jobs.join("by_amount.sql"),
            format!("/* tally:job\nname = \"by_amount\"\nparams = [\"province\"]\n[input]\nfiles = [\"{{province}}-*.csv\"]\nlayout = \"pos_transactions\"\n[output]\nrecord_key = [\"store_id\"]\npartition_field = \"store_id\"\nprecombine_field = \"last_seen\"\n*/\nSELECT store_id, amount, MAX(source_time) AS last_seen FROM transactions GROUP BY store_id, amount{order_by}\n"),
        )
        .unwrap();
        let val = dir.path().join("val");
        let mut rows = String::new();
        // Many distinct keys around the duplicate, so the check works past its first batch.
        for store in 0..20_000 {
            rows.push_str(&format!("t{store},1.00,4,i1,2026-01-01\n"));
        }
        rows.push_str("s1,1.00,4,i1,2026-01-01\ns1,2.50,4,i2,2026-01-02\n");
        write_file(&val, "IL-1.csv", &rows, "2026-01-01T09:00:00Z");
        let table = dir.path().join("table");
        // The SQLite warehouse loads rows while the query runs: the check comes after them.
        let warehouse = dir.path().join("w.db");
        let err = fails(&[
            "--jobs-dir",
            jobs.to_str().unwrap(),
            "run",
            "--job",
            "by_amount",
            "--province",
            "IL",
            "--input",
            val.to_str().unwrap(),
            "--table",
            table.to_str().unwrap(),
            "--warehouse",
            &format!("sqlite://{}", warehouse.display()),
            "--state",
            &format!("sqlite://{}", dir.path().join("state.db").display()),
        ]);
        assert!(
            err.contains("1 rows with an already-seen record key, e.g. store_id=s1"),
            "{order_by}: {err}"
        );
        assert!(!table.join(".hoodie").exists(), "nothing may be written");
        let tables: i64 = rusqlite::Connection::open(&warehouse)
            .unwrap()
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 0, "the warehouse's early load was rolled back");
    }
}

#[test]
fn generated_validated_files_are_what_tally_validate_makes_of_the_raw_ones() {
    let dir = tempfile::tempdir().unwrap();
    let gen = dir.path().join("gen");
    // One small shape, written whole or as the validated files only.
    let generate = |out: &Path, forms: &str| {
        ok(&[
            "generate",
            "--transactions",
            "30K",
            "--stores",
            "7",
            "--items",
            "300",
            "--days",
            "2",
            "--bad-row-every",
            "997",
            "--seed",
            "7",
            "--forms",
            forms,
            "--out",
            out.to_str().unwrap(),
        ]);
    };
    generate(&gen, "raw,validated,parquet");
    let revalidated = dir.path().join("revalidated");
    validate(&gen.join("raw"), &revalidated);
    let mut names: Vec<_> = std::fs::read_dir(gen.join("validated"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names.len(), 7 * 3, "7 stores × 3 versions");
    for name in &names {
        let ours = std::fs::read(gen.join("validated").join(name)).unwrap();
        let theirs = std::fs::read(revalidated.join(name)).unwrap();
        assert!(
            ours == theirs,
            "{name:?} differs from tally validate's output"
        );
    }
    let quarantined = std::fs::read_dir(revalidated.join("_quarantine"))
        .unwrap()
        .count();
    assert!(
        quarantined > 0,
        "malformed raw rows were generated and quarantined"
    );
    // The same seed gives the same bytes; the Parquet files give the same job result as the CSV.
    let again = dir.path().join("again");
    generate(&again, "validated");
    for name in &names {
        assert_eq!(
            std::fs::read(gen.join("validated").join(name)).unwrap(),
            std::fs::read(again.join("validated").join(name)).unwrap()
        );
    }
    let from_csv = csv_rows(&dry_run("IL", &gen.join("validated"), "csv"));
    let from_parquet = csv_rows(&dry_run("IL", &gen.join("parquet"), "csv"));
    assert!(from_csv.len() > 1000);
    assert_eq!(from_csv.len(), from_parquet.len());
    for (a, b) in from_csv.iter().zip(&from_parquet) {
        for column in [
            "store_id",
            "item_id",
            "trans_date",
            "sale_amount",
            "tax_amount",
            "discount_amount",
            "source_time",
        ] {
            assert_eq!(a[column], b[column], "{column}");
        }
    }
}

#[test]
fn a_memory_limit_spills_or_says_to_raise_it_and_never_changes_rows() {
    let dir = tempfile::tempdir().unwrap();
    let gen = dir.path().join("gen");
    ok(&[
        "generate",
        "--transactions",
        "150K",
        "--forms",
        "validated",
        "--out",
        gen.to_str().unwrap(),
    ]);
    let input = gen.join("validated");
    let run_with = |limit: &str| {
        job_run("jobs/province_sales.sql", "IL", &input)
            .dry_run()
            .args(&["--memory-limit", limit])
            .run()
    };
    let roomy = run_with("4G");
    assert!(roomy.status.success());
    let tight = run_with("64M");
    assert!(
        tight.status.success(),
        "{}",
        String::from_utf8_lossy(&tight.stderr)
    );
    assert!(
        roomy.stdout == tight.stdout,
        "a memory limit changed the rows"
    );
    let starved = run_with("1M");
    assert!(!starved.status.success());
    let err = String::from_utf8_lossy(&starved.stderr);
    assert!(err.contains("raise --memory-limit"), "{err}");
    let nonsense = run_with("lots");
    assert!(String::from_utf8_lossy(&nonsense.stderr).contains("not a size like 512M"));
}

#[test]
fn a_profile_shows_each_operator_with_its_metrics_and_changes_no_row() {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let plain = job_run("province_sales", "WI", &val).dry_run().run();
    let profiled = job_run("province_sales", "WI", &val)
        .dry_run()
        .args(&["--profile"])
        .run();
    assert!(plain.status.success() && profiled.status.success());
    assert_eq!(profiled.stdout, plain.stdout, "--profile changes no row");
    let stderr = String::from_utf8_lossy(&profiled.stderr);
    let profile = stderr
        .split_once("the query's operators, with their metrics:")
        .map(|(_, p)| p)
        .unwrap_or_else(|| panic!("no profile in:\n{stderr}"));
    // The job's output is 9 rows: the top operator says so, and each operator has its time.
    assert!(profile.contains("output_rows=9"), "{profile}");
    assert!(profile.contains("elapsed_compute="), "{profile}");
    assert!(profile.contains("AggregateExec"), "{profile}");
    // The scan counts what it read: the sample's 22 rows in 5 files.
    assert!(
        profile.contains("InputScanExec: layout=pos_transactions, partitions="),
        "{profile}"
    );
    assert!(profile.contains("input_rows=22"), "{profile}");
    assert!(profile.contains("bad_rows=0"), "{profile}");
}

#[test]
fn datafusion_options_come_from_its_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let plain = job_run("province_sales", "WI", &val).dry_run().run();
    let tuned = job_run("province_sales", "WI", &val)
        .dry_run()
        .args(&["--profile"])
        .env("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "1")
        .run();
    assert!(tuned.status.success());
    assert_eq!(
        tuned.stdout, plain.stdout,
        "the rows do not depend on the partitions"
    );
    // One partition: one scan partition, and no key ranges (which a session of two or more
    // partitions plans for this job's four stores).
    let stderr = String::from_utf8_lossy(&tuned.stderr);
    assert!(
        stderr.contains("InputScanExec: layout=pos_transactions, partitions=1,"),
        "{stderr}"
    );
    assert!(!stderr.contains("ranges from"), "{stderr}");
}

#[test]
fn stores_read_in_key_ranges_are_aggregated_without_an_exchange() {
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let out = job_run("province_sales", "WI", &val)
        .dry_run()
        .args(&["--profile"])
        .env("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "2")
        .run();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Each store's files are in one partition: one aggregation per partition, no partial
    // aggregation, no hash exchange before it.
    assert!(stderr.contains("store_id ranges from"), "{stderr}");
    assert!(stderr.contains("mode=SinglePartitioned"), "{stderr}");
    assert!(!stderr.contains("AggregateExec: mode=Partial"), "{stderr}");
    assert!(!stderr.contains("RepartitionExec"), "{stderr}");
    // Each partition reads its stores one after another: the aggregation emits a store's groups
    // when the next store starts, the ORDER BY sorts one store at a time, and the partitions
    // (ranges of stores) are concatenated, not merged.
    assert!(stderr.contains("ordering_mode=PartiallySorted"), "{stderr}");
    assert!(stderr.contains("PrefixSortExec"), "{stderr}");
    assert!(stderr.contains("RangeConcatExec"), "{stderr}");
    assert!(!stderr.contains("SortPreservingMergeExec"), "{stderr}");
    // The sort runs before the join adds each file's name and time (narrower rows to sort):
    // the plan lists it under the join.
    let line_of = |operator: &str| {
        stderr
            .lines()
            .position(|l| l.trim_start().starts_with(operator))
    };
    assert!(
        line_of("HashJoinExec") < line_of("PrefixSortExec"),
        "{stderr}"
    );
    assert!(
        !stderr
            .lines()
            .any(|l| l.trim_start().starts_with("SortExec:")),
        "{stderr}"
    );
}

#[test]
fn a_sort_by_a_column_the_join_adds_stays_above_the_join() {
    // ORDER BY a build-side column (each file's name) after the store: the sort cannot run
    // before the join, and the rows come out as one whole sort orders them.
    let dir = tempfile::tempdir().unwrap();
    let val = validated_sample(dir.path());
    let sql = std::fs::read_to_string(repo().join("jobs/province_sales.sql")).unwrap();
    let ordered_by_file = sql.replace(
        "ORDER BY newest.store_id, newest.item_id, newest.trans_date",
        "ORDER BY newest.store_id, files.source_file DESC, newest.item_id, newest.trans_date",
    );
    assert_ne!(
        sql, ordered_by_file,
        "the job's ORDER BY changed: update this test"
    );
    let job = dir.path().join("by_file.sql");
    std::fs::write(&job, ordered_by_file).unwrap();
    let run_in = |partitions: &str| {
        let out = job_run(job.to_str().unwrap(), "WI", &val)
            .dry_run()
            .args(&["--profile"])
            .env("DATAFUSION_EXECUTION_TARGET_PARTITIONS", partitions)
            .run();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        (out.stdout, stderr)
    };
    let (whole, _) = run_in("1");
    let (ranged, profile) = run_in("2");
    let line_of = |operator: &str| {
        profile
            .lines()
            .position(|l| l.trim_start().starts_with(operator))
    };
    assert!(line_of("PrefixSortExec").is_some(), "{profile}");
    assert!(
        line_of("PrefixSortExec") < line_of("HashJoinExec"),
        "{profile}"
    );
    assert!(whole.len() > 100);
    assert!(ranged == whole, "the rows differ from one whole sort's");
}

#[test]
fn reading_in_key_ranges_changes_no_byte_of_the_rows() {
    let dir = tempfile::tempdir().unwrap();
    let gen = dir.path().join("gen");
    ok(&[
        "generate",
        "--transactions",
        "150K",
        "--forms",
        "validated",
        "--out",
        gen.to_str().unwrap(),
    ]);
    let input = gen.join("validated");
    let run_in = |partitions: &str| {
        let out = job_run("jobs/province_sales.sql", "IL", &input)
            .dry_run()
            .args(&["--profile"])
            .env("DATAFUSION_EXECUTION_TARGET_PARTITIONS", partitions)
            .run();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        (out.stdout, String::from_utf8_lossy(&out.stderr).to_string())
    };
    // One partition: no key ranges, one sort of everything.
    let (whole, profile) = run_in("1");
    assert!(!profile.contains("ranges from"), "{profile}");
    assert!(whole.len() > 1000);
    for partitions in ["2", "3"] {
        let (ranged, profile) = run_in(partitions);
        // Locally, four key ranges per partition (the province has 50 stores).
        let ranges = 4 * partitions.parse::<usize>().unwrap();
        assert!(
            profile.contains(&format!("RangeConcatExec: {ranges} key-range partitions")),
            "{profile}"
        );
        assert!(ranged == whole, "{partitions} key ranges changed the rows");
    }
}

#[test]
fn a_second_store_in_a_file_is_found_even_inside_its_range() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    // Planned from first rows: s1 (QC-1) and s2 (QC-2) make the first range, s3 the second. QC-1
    // also holds s2, inside its own range, after QC-2's s2 has been read in key order: read in
    // ranges, s2's rows would reach the aggregation out of store order.
    write_file(
        &val,
        "QC-1.csv",
        "s1,1.00,4,i1,2026-01-01\ns2,5.00,4,i1,2026-01-01\n",
        "2026-01-01T11:00:00Z",
    );
    write_file(
        &val,
        "QC-2.csv",
        "s2,2.00,4,i1,2026-01-01\ns2,2.00,4,i2,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    // Six rows: the most bytes, so the ranges are s1, s2 | s3.
    write_file(
        &val,
        "QC-3.csv",
        "s3,1.00,4,i1,2026-01-01\n".repeat(6),
        "2026-01-01T08:00:00Z",
    );
    let (rows, stderr) = run_qc_in_two_ranges(&val);
    // s2/i1's newest file is QC-1 (11:00); s2/i2 is only in QC-2.
    assert_eq!(
        project(&rows, RESULT_COLUMNS),
        [
            "QC,s1,i1,2026-01-01,1.00,0.00,0.00",
            "QC,s2,i1,2026-01-01,5.00,0.00,0.00",
            "QC,s2,i2,2026-01-01,2.00,0.00,0.00",
            "QC,s3,i1,2026-01-01,6.00,0.00,0.00"
        ]
    );
    assert!(
        stderr.contains("reading again without key ranges") && stderr.contains("QC-1.csv line 2"),
        "{stderr}"
    );
}

#[test]
fn a_file_holding_several_stores_is_read_again_without_key_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let val = dir.path().join("val");
    // Planned from first rows: QC-1 holds s1, QC-2 holds s2, so s2 starts the second range; but
    // QC-1 also holds s3, which belongs there.
    write_file(
        &val,
        "QC-1.csv",
        "s1,1.00,4,i1,2026-01-01\ns3,3.00,4,i1,2026-01-01\ns3,0.50,5,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    write_file(
        &val,
        "QC-2.csv",
        "s2,2.00,4,i1,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    write_file(
        &val,
        "QC-3.csv",
        "s3,7.00,4,i1,2026-01-01\n",
        "2026-01-01T08:00:00Z",
    );
    let (rows, stderr) = run_qc_in_two_ranges(&val);
    // s3's newest file is QC-1 (09:00, against QC-3's 08:00): its sums, not QC-3's.
    let expected = [
        "QC,s1,i1,2026-01-01,1.00,0.00,0.00",
        "QC,s2,i1,2026-01-01,2.00,0.00,0.00",
        "QC,s3,i1,2026-01-01,3.00,0.50,0.00",
    ];
    assert_eq!(project(&rows, RESULT_COLUMNS), expected);
    // The SQLite warehouse, which loads while the query runs, starts over with the second read.
    assert_eq!(qc_warehouse_rows_in_two_ranges(&val), expected);
    assert!(
        stderr.contains("reading again without key ranges") && stderr.contains("QC-1.csv line 2"),
        "{stderr}"
    );
}

/// The province job over the QC files in `val` on two partitions into a SQLite warehouse next to
/// `val`: the stored rows as `province,store,item,date,sale,tax,discount`.
fn qc_warehouse_rows_in_two_ranges(val: &std::path::Path) -> Vec<String> {
    let db = val.with_file_name("w.db");
    let state = val.with_file_name("state.db");
    let out = job_run("province_sales", "QC", val)
        .args(&[
            "--warehouse",
            &format!("sqlite://{}", db.display()),
            "--state",
            &format!("sqlite://{}", state.display()),
        ])
        .env("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "2")
        .run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("3 rows inserted or replaced"), "{stderr}");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut query = conn
        .prepare(
            "SELECT province || ',' || store_id || ',' || item_id || ',' || trans_date || ',' || \
             sale_amount || ',' || tax_amount || ',' || discount_amount \
             FROM store_item_daily_sales ORDER BY store_id, item_id, trans_date",
        )
        .unwrap();
    query
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// The province job over the QC files in `val` on two partitions (two key ranges when the files
/// allow): its CSV rows and its stderr.
fn run_qc_in_two_ranges(
    val: &std::path::Path,
) -> (Vec<std::collections::BTreeMap<String, String>>, String) {
    let out = job_run("province_sales", "QC", val)
        .dry_run()
        .format("csv")
        .env("DATAFUSION_EXECUTION_TARGET_PARTITIONS", "2")
        .run();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{stderr}");
    (csv_rows(&String::from_utf8_lossy(&out.stdout)), stderr)
}
