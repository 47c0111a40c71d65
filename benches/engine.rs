//! Criterion benches of tally's two inner loops, on generated data:
//!
//! - `validate`: raw `.tdf` → validated CSV, one file at a time on one core (`--parallel 1`), in
//!   bytes of raw input per second: the per-core validation throughput;
//! - `hudi_merge`: one copy-on-write merge of a partition: a 100,000-row partition (one day) gets
//!   every row again with newer values, so its base file is read, merged and rewritten, and the
//!   commit is written.
//!
//! Run them with:
//!
//!     cargo bench --bench engine                 # both
//!     cargo bench --bench engine -- validate     # one
//!
//! The province-level comparison with DuckDB, Polars and PySpark is benches/compare.py.

use std::path::Path;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::SchemaRef;
use tally::generate::{generate, Forms, ProvinceShape};
use tally::job::{JobCatalog, JobDefinition};
use tally::layout::LayoutSet;
use tally::progress::Progress;
use tally::sinks::hudi::{HudiSink, UpsertOptions};
use tally::sinks::{JobRows, Sink};
use tally::validate::{validate, ValidateOptions};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn bench_validate(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let shape = ProvinceShape {
        transactions: 400_000,
        stores: 8,
        ..ProvinceShape::default()
    };
    let forms = Forms {
        raw: true,
        validated: false,
        parquet: false,
    };
    let report = generate(&shape, dir.path(), forms, |_| {}).expect("generate");
    let rt = runtime();
    let options = ValidateOptions {
        input: dir.path().join("raw").display().to_string(),
        output: dir.path().join("validated").display().to_string(),
        max_bad_rows: None,
        parallelism: 1,
        layouts: LayoutSet::embedded(),
    };
    let mut group = c.benchmark_group("validate");
    group.throughput(Throughput::Bytes(report.raw_bytes));
    group.sample_size(10);
    group.bench_function("raw_tdf_to_csv_one_core", |b| {
        b.iter(|| {
            let report = rt
                .block_on(validate(&options, &Progress::hidden()))
                .expect("validate");
            assert_eq!(report.failed_files(), 0);
        })
    });
    group.finish();
}

/// `rows` rows of one day; `version` makes every amount and the source time differ.
fn day_rows(schema: &SchemaRef, rows: usize, version: i64) -> Vec<RecordBatch> {
    let idx: Vec<usize> = (0..rows).collect();
    let decimal = |f: &dyn Fn(usize) -> i128| -> ArrayRef {
        Arc::new(
            Decimal128Array::from_iter_values(idx.iter().map(|&i| f(i)))
                .with_precision_and_scale(18, 2)
                .expect("decimal(18,2)"),
        )
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(idx.iter().map(|_| "IL"))),
        Arc::new(StringArray::from_iter_values(
            idx.iter().map(|i| format!("s{}", 101 + i % 50)),
        )),
        Arc::new(StringArray::from_iter_values(
            idx.iter().map(|i| format!("i{:05}", i / 50)),
        )),
        Arc::new(Date32Array::from_iter_values(idx.iter().map(|_| 20_513))),
        decimal(&|i| (i % 10_000) as i128 * i128::from(version)),
        decimal(&|i| (i % 700) as i128),
        decimal(&|i| (i % 90) as i128),
        Arc::new(StringArray::from_iter_values(
            idx.iter()
                .map(|i| format!("IL-{}-{version}.csv", 101 + i % 50)),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(
                idx.iter().map(|_| 1_772_323_200_000_000 + version),
            )
            .with_timezone("UTC"),
        ),
    ];
    vec![RecordBatch::try_new(schema.clone(), columns).expect("rows match the job's schema")]
}

async fn upsert(job: &JobDefinition, schema: &SchemaRef, table: &Path, batches: &[RecordBatch]) {
    let sink = HudiSink {
        url: table.display().to_string(),
        options: UpsertOptions::default(),
    };
    let rows = JobRows {
        job,
        schema: schema.clone(),
        batches,
    };
    let staged = sink.stage(&rows).await.expect("stage");
    staged.publish().await.expect("publish");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

fn bench_hudi_merge(c: &mut Criterion) {
    const ROWS: usize = 100_000;
    let rt = runtime();
    let job = JobCatalog::new("jobs", LayoutSet::embedded())
        .find("province_sales")
        .expect("the province job");
    let schema = rt
        .block_on(tally::job::output_schema(&job))
        .expect("schema");
    let dir = tempfile::tempdir().expect("temp dir");
    let template = dir.path().join("template");
    rt.block_on(upsert(
        &job,
        &schema,
        &template,
        &day_rows(&schema, ROWS, 1),
    ));
    let newer = day_rows(&schema, ROWS, 2);
    let mut group = c.benchmark_group("hudi_merge");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(10);
    let mut n = 0;
    group.bench_function("one_partition_100k_rows_all_changed", |b| {
        b.iter_batched(
            || {
                n += 1;
                let table = dir.path().join(format!("t{n}"));
                copy_dir(&template, &table);
                table
            },
            |table| rt.block_on(upsert(&job, &schema, &table, &newer)),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(benches, bench_validate, bench_hudi_merge);
criterion_main!(benches);
