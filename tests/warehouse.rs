//! The warehouse sink against real databases: SQLite (embedded) and a PostgreSQL server started by
//! tests/servers/postgres.sh. The Redshift delete+insert statements run on PostgreSQL too
//! (`redshift://` speaks the wire protocol); the Data API path is tested at its HTTP boundary in
//! tests/redshift_data_api.rs.

mod common;

use std::path::Path;

use common::*;
use sqlx::{Connection, Row};

/// A fresh PostgreSQL schema per test, as a URL whose connections use it.
async fn fresh_schema(name: &str) -> String {
    fresh_postgres_schema(name).await
}

async fn read_postgres(url: &str) -> (Vec<String>, Vec<String>) {
    let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
    warehouse_rows!(&mut conn)
}

fn load(province: &str, val: &Path, warehouse: &str) -> String {
    let out = tally()
        .args([
            "run",
            "--job",
            "jobs/province_sales.sql",
            "--province",
            province,
            "--input",
            val.to_str().unwrap(),
            "--warehouse",
            warehouse,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "run failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stderr).unwrap()
}

/// Two runs (the second with later cumulative files) and a repeat of the second.
async fn two_runs_and_a_repeat(
    dir: &Path,
    warehouse: &str,
    read: impl AsyncFn() -> (Vec<String>, Vec<String>),
) {
    let (raw, val) = (dir.join("raw"), dir.join("val"));
    let mut province = Province::new("ZW", 20, 5, 11);
    province.write_version(&raw, "0900", "2026-05-06T09:00:00Z", |_| true);
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    load("ZW", &val, warehouse);
    let (first, _) = read().await;
    province.write_version(&raw, "1500", "2026-05-06T15:00:00Z", |s| s % 2 == 1);
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    load("ZW", &val, warehouse);
    let (second, updated_second) = read().await;
    assert_ne!(first, second);
    assert_eq!(second, province.expected());
    // The repeat changes nothing, not even updated_at.
    let stderr = load("ZW", &val, warehouse);
    assert!(stderr.contains(": 0 rows inserted or replaced"), "{stderr}");
    let (third, updated_third) = read().await;
    assert_eq!(third, province.expected());
    assert_eq!(updated_third, updated_second);
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_gets_exactly_the_expected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("wh/warehouse.db");
    let url = format!("sqlite://{}", db.display());
    let d = dir.path().to_path_buf();
    two_runs_and_a_repeat(&d, &url, async || read_sqlite_warehouse(&db).await).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn postgres_gets_exactly_the_expected_rows() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_schema("pg_rows").await;
    let u = url.clone();
    two_runs_and_a_repeat(dir.path(), &url, async || read_postgres(&u).await).await;
    // Amounts are exact decimals in PostgreSQL.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let ty: String = sqlx::query("SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'store_item_daily_sales'::regclass AND attname = 'sale_amount'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(ty, "numeric(18,2)");
}

#[tokio::test(flavor = "multi_thread")]
async fn redshift_statements_merge_correctly_on_the_wire_protocol() {
    // The Redshift dialect (temp table, delete+insert) over the PostgreSQL wire protocol, against
    // a real PostgreSQL: the table is created by a postgres:// run first (Redshift's DISTKEY and
    // SORTKEY are not PostgreSQL syntax).
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_schema("rs_wire").await;
    let (raw, val) = (dir.path().join("raw"), dir.path().join("val"));
    let mut province = Province::new("ZR", 12, 4, 5);
    province.write_version(&raw, "0900", "2026-05-06T09:00:00Z", |_| true);
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    load("ZR", &val, &url);
    province.write_version(&raw, "1500", "2026-05-06T15:00:00Z", |s| s % 3 == 0);
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    // Redshift's GETDATE() (a compute-node function; CURRENT_TIMESTAMP is leader-node only there)
    // does not exist in PostgreSQL: a stand-in with the same meaning.
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE FUNCTION getdate() RETURNS timestamptz AS 'SELECT now()' LANGUAGE sql")
        .execute(&mut conn)
        .await
        .unwrap();
    let redshift = url.replacen("postgres://", "redshift://", 1);
    let out = tally()
        .args([
            "run",
            "--job",
            "province_sales",
            "--province",
            "ZR",
            "--input",
            val.to_str().unwrap(),
            "--warehouse",
            &redshift,
            "--no-create-table",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (rows, _) = read_postgres(&url).await;
    assert_eq!(rows, province.expected());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_load_rolls_back_and_names_the_table_and_the_database_message() {
    let dir = tempfile::tempdir().unwrap();
    let url = fresh_schema("pg_fail").await;
    let val = dir.path().join("val");
    write_file(
        &val,
        "ZF-1.csv",
        "s1,5.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    load("ZF", &val, &url);
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::query(
        "ALTER TABLE store_item_daily_sales ADD CONSTRAINT small_sales CHECK (sale_amount < 100)",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    write_file(
        &val,
        "ZF-1.csv",
        "s1,6.00,4,i1,2026-01-01\ns2,500.00,4,i1,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    let out = tally()
        .args([
            "run",
            "--job",
            "province_sales",
            "--province",
            "ZF",
            "--input",
            val.to_str().unwrap(),
            "--warehouse",
            &url,
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("table store_item_daily_sales") && stderr.contains("small_sales"),
        "{stderr}"
    );
    assert!(!stderr.contains("password"), "{stderr}");
    // Nothing changed: s1 still 5.00, no s2, and no staging table anywhere.
    let (rows, _) = read_postgres(&url).await;
    assert_eq!(rows, ["ZF,s1,i1,2026-01-01,5.00,0.00,0.00"]);
    let staging: i64 = sqlx::query("SELECT COUNT(*) FROM pg_class WHERE relname = 'tally_staging'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(staging, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_hudi_write_leaves_the_warehouse_untouched() {
    // Both sinks in one run: when one fails, the other is not committed either.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("w.db");
    let url = format!("sqlite://{}", db.display());
    let table = dir.path().join("table");
    let val = dir.path().join("val");
    write_file(
        &val,
        "ZH-1.csv",
        "s1,5.00,4,i1,2026-01-01\n",
        "2026-01-01T09:00:00Z",
    );
    let out = tally()
        .args([
            "run",
            "--job",
            "province_sales",
            "--province",
            "ZH",
            "--input",
            val.to_str().unwrap(),
            "--warehouse",
            &url,
            "--table",
            table.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Another writer holds the Hudi table: the run fails and the warehouse keeps 5.00.
    let _held = hold_hudi_lock(&table, std::process::id());
    write_file(
        &val,
        "ZH-1.csv",
        "s1,7.00,4,i1,2026-01-01\n",
        "2026-01-01T10:00:00Z",
    );
    let out = tally()
        .args([
            "run",
            "--job",
            "province_sales",
            "--province",
            "ZH",
            "--input",
            val.to_str().unwrap(),
            "--warehouse",
            &url,
            "--table",
            table.to_str().unwrap(),
            "--hudi-lock-wait-secs",
            "1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let (rows, _) = read_sqlite_warehouse(&db).await;
    assert_eq!(rows, ["ZH,s1,i1,2026-01-01,5.00,0.00,0.00"]);
}

#[test]
fn the_ddl_files_under_sql_match_what_tally_creates() {
    for dialect in ["sqlite", "postgres", "redshift"] {
        let printed = ok(&[
            "warehouse",
            "ddl",
            "--job",
            "province_sales",
            "--dialect",
            dialect,
        ]);
        let file =
            std::fs::read_to_string(repo().join(format!("sql/warehouse/{dialect}.sql"))).unwrap();
        let body: String = file
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(
            body.trim(),
            printed.trim(),
            "sql/warehouse/{dialect}.sql is out of date: regenerate it with tally warehouse ddl"
        );
    }
}
