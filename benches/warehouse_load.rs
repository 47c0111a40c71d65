//! Loads 1M province-job rows into PostgreSQL through tally's warehouse sink (COPY into a staging
//! table, then INSERT ... ON CONFLICT, in one transaction), and, as the peer on the same rows in
//! the same run, through `psql \copy` into a plain table (the server's raw bulk-load speed).
//!
//!     source tests/servers/postgres.sh && cargo bench --bench warehouse_load
//!
//! Rows: TALLY_BENCH_ROWS (default 1,000,000). Server: TALLY_TEST_POSTGRES_URL.

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use sqlx::Connection;
use tally::job::JobCatalog;
use tally::layout::LayoutSet;
use tally::sinks::warehouse::WarehouseSink;
use tally::sinks::{JobRows, Sink};

fn batches(schema: &SchemaRef, rows: usize, version: i64) -> Vec<RecordBatch> {
    let per_batch = 65_536;
    (0..rows)
        .step_by(per_batch)
        .map(|start| {
            let n = per_batch.min(rows - start);
            let idx: Vec<usize> = (start..start + n).collect();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(StringArray::from_iter_values(idx.iter().map(|_| "BN"))),
                Arc::new(StringArray::from_iter_values(
                    idx.iter().map(|i| format!("s{}", i % 500)),
                )),
                Arc::new(StringArray::from_iter_values(
                    idx.iter().map(|i| format!("i{}", (i / 500) % 200)),
                )),
                Arc::new(Date32Array::from_iter_values(
                    idx.iter().map(|i| 20454 + (i / 100_000) as i32),
                )),
                Arc::new(
                    Decimal128Array::from_iter_values(
                        idx.iter().map(|i| (i % 100_000) as i128 * version as i128),
                    )
                    .with_precision_and_scale(18, 2)
                    .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from_iter_values(idx.iter().map(|i| (i % 7_000) as i128))
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(
                    Decimal128Array::from_iter_values(idx.iter().map(|i| (i % 300) as i128))
                        .with_precision_and_scale(18, 2)
                        .unwrap(),
                ),
                Arc::new(StringArray::from_iter_values(
                    idx.iter()
                        .map(|i| format!("s3://pos/validated/BN-{}.csv", i % 500)),
                )),
                Arc::new(
                    TimestampMicrosecondArray::from_iter_values(
                        idx.iter().map(|_| 1_780_000_000_000_000 + version),
                    )
                    .with_timezone("UTC"),
                ),
            ];
            RecordBatch::try_new(schema.clone(), columns).unwrap()
        })
        .collect()
}

#[tokio::main]
async fn main() {
    let base = std::env::var("TALLY_TEST_POSTGRES_URL")
        .expect("start PostgreSQL first: source tests/servers/postgres.sh");
    let rows: usize = std::env::var("TALLY_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let job = JobCatalog::new("jobs", LayoutSet::embedded())
        .find("province_sales")
        .unwrap();
    let schema = tally::job::output_schema(&job).await.unwrap();

    let mut admin = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query("DROP SCHEMA IF EXISTS bench CASCADE")
        .execute(&mut admin)
        .await
        .unwrap();
    sqlx::query("CREATE SCHEMA bench")
        .execute(&mut admin)
        .await
        .unwrap();
    let url = format!("{base}?options=-c%20search_path%3Dbench");
    let sink = WarehouseSink::new(&url, true);

    let mut results = Vec::new();
    for (label, version) in [
        ("tally: 1M new rows", 1),
        ("tally: 1M rows, all newer and changed", 2),
        ("tally: 1M rows, rerun (no change)", 2),
    ] {
        let data = batches(&schema, rows, version);
        let rows_in = JobRows {
            job: &job,
            schema: schema.clone(),
            batches: &data,
        };
        let started = Instant::now();
        let report = sink.stage(&rows_in).await.unwrap().publish().await.unwrap();
        let secs = started.elapsed().as_secs_f64();
        eprintln!("{label}: {}", report.summary);
        results.push((label.to_string(), secs));
    }

    // The peer: psql's \copy of the same rows (as CSV) into a plain table, no merge.
    let data = batches(&schema, rows, 1);
    let csv_path = std::env::temp_dir().join("tally-bench-rows.csv");
    {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&csv_path).unwrap());
        for b in &data {
            let mut w = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(false)
                .build(&mut file);
            w.write(b).unwrap();
        }
        file.flush().unwrap();
    }
    sqlx::query("CREATE TABLE bench.plain AS SELECT province, store_id, item_id, trans_date, sale_amount, tax_amount, discount_amount, source_file, source_time FROM bench.store_item_daily_sales WITH NO DATA")
        .execute(&mut admin)
        .await
        .unwrap();
    let started = Instant::now();
    let status = std::process::Command::new("psql")
        .arg(&base)
        .arg("-q")
        .arg("-c")
        .arg(format!(
            "\\copy bench.plain FROM '{}' WITH (FORMAT csv)",
            csv_path.display()
        ))
        .status()
        .unwrap();
    assert!(status.success());
    results.push((
        "peer: psql \\copy into a plain table (no key, no merge)".to_string(),
        started.elapsed().as_secs_f64(),
    ));

    println!(
        "\n{rows} rows into PostgreSQL ({})",
        base.split('@').next_back().unwrap_or_default()
    );
    println!("{:<58} {:>9} {:>12}", "load", "seconds", "rows/s");
    for (label, secs) in &results {
        println!("{label:<58} {secs:>9.2} {:>12.0}", rows as f64 / secs);
    }
    let _ = std::fs::remove_file(csv_path);
}
