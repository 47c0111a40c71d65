//! The Redshift Data API path, verified at its HTTP boundary with the AWS SDK's replay client:
//! the exact statements sent in one BatchExecuteStatement, the DescribeStatement polling, a FAILED
//! statement and a timeout (with CancelStatement). The S3 staging really happens, on the Garage
//! test server, and is checked to be cleaned up.

mod common;

use std::sync::Arc;
use std::time::Duration;

use aws_sdk_redshiftdata::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use datafusion::arrow::array::{
    ArrayRef, Date32Array, Decimal128Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{json, Value};
use tally::sinks::warehouse::dialect::TableSpec;
use tally::sinks::warehouse::redshift_data::{stage, DataApiTarget, Polling};

fn event(action: &str, response: Value) -> ReplayEvent {
    ReplayEvent::new(
        http::Request::builder()
            .uri("https://redshift-data.us-east-1.amazonaws.com/")
            .header("x-amz-target", format!("RedshiftData.{action}"))
            .body(SdkBody::from("{}"))
            .unwrap(),
        http::Response::builder()
            .status(200)
            .header("content-type", "application/x-amz-json-1.1")
            .body(SdkBody::from(response.to_string()))
            .unwrap(),
    )
}

fn client(http: &StaticReplayClient) -> aws_sdk_redshiftdata::Client {
    let conf = aws_sdk_redshiftdata::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new(
            "AKIDTEST",
            "SECRETTEST",
            None,
            None,
            "test",
        ))
        .http_client(http.clone())
        .build();
    aws_sdk_redshiftdata::Client::from_conf(conf)
}

/// The requests sent: (X-Amz-Target action, JSON body).
fn sent(http: &StaticReplayClient) -> Vec<(String, Value)> {
    http.actual_requests()
        .map(|r| {
            let action = r
                .headers()
                .get("x-amz-target")
                .unwrap_or_default()
                .trim_start_matches("RedshiftData.")
                .to_string();
            let body = serde_json::from_slice(r.body().bytes().unwrap_or(b"{}")).unwrap();
            (action, body)
        })
        .collect()
}

fn rows() -> (SchemaRef, Vec<RecordBatch>, TableSpec) {
    let schema = Arc::new(Schema::new(vec![
        Field::new("store_id", DataType::Utf8, false),
        Field::new("trans_date", DataType::Date32, false),
        Field::new("sale_amount", DataType::Decimal128(18, 2), false),
        Field::new(
            "source_time",
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            false,
        ),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec!["s1", "s2"])),
        Arc::new(Date32Array::from(vec![20454, 20455])),
        Arc::new(
            Decimal128Array::from(vec![1525, 999])
                .with_precision_and_scale(18, 2)
                .unwrap(),
        ),
        Arc::new(TimestampMicrosecondArray::from(vec![1_000_000, 2_000_000]).with_timezone("UTC")),
    ];
    let batch = RecordBatch::try_new(schema.clone(), columns).unwrap();
    let spec = TableSpec::new(
        "sales",
        &schema,
        &["store_id".into(), "trans_date".into()],
        "source_time",
        "trans_date",
    )
    .unwrap();
    (schema, vec![batch], spec)
}

fn target(extra: &str) -> (DataApiTarget, String) {
    let bucket = std::env::var("TALLY_TEST_S3_BUCKET")
        .expect("TALLY_TEST_S3_BUCKET is not set: run the suite with tests/run.sh, which starts the S3 test server");
    let staging = format!(
        "s3://{bucket}/rs-staging-{}-{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let url = format!(
        "redshift-data://analytics-cluster/dev?db_user=loader&iam_role=arn:aws:iam::123456789012:role/RedshiftCopy&staging={staging}{extra}"
    );
    (DataApiTarget::parse(&url).unwrap(), staging)
}

const FAST: Polling = Polling {
    first: Duration::from_millis(1),
    max: Duration::from_millis(4),
};

async fn staged_objects(prefix: &str) -> usize {
    let location = tally::storage::Location::open(prefix).await.unwrap();
    use futures::TryStreamExt;
    let listed: Vec<_> = location
        .store
        .list(Some(&location.prefix))
        .try_collect()
        .await
        .unwrap();
    listed.len()
}

#[tokio::test]
async fn one_batch_with_the_exact_statements_then_polling_until_finished() {
    let http = StaticReplayClient::new(vec![
        event(
            "BatchExecuteStatement",
            json!({"Id": "stmt-1", "ClusterIdentifier": "analytics-cluster", "Database": "dev"}),
        ),
        event(
            "DescribeStatement",
            json!({"Id": "stmt-1", "Status": "STARTED"}),
        ),
        event(
            "DescribeStatement",
            json!({"Id": "stmt-1", "Status": "STARTED"}),
        ),
        event(
            "DescribeStatement",
            json!({"Id": "stmt-1", "Status": "FINISHED"}),
        ),
    ]);
    let (schema, batches, spec) = rows();
    let (target, staging) = target("");
    let staged = stage(client(&http), target, &spec, &schema, &batches, false, FAST)
        .await
        .unwrap();
    // The rows wait as Parquet under the staging prefix until the load runs.
    assert_eq!(staged_objects(&staging).await, 1);
    let report = staged.publish().await.unwrap();
    assert!(
        report.summary.contains("2 rows merged") && report.summary.contains("stmt-1"),
        "{}",
        report.summary
    );
    assert_eq!(
        staged_objects(&staging).await,
        0,
        "staging objects are deleted after the load"
    );

    let sent = sent(&http);
    let actions: Vec<&str> = sent.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "BatchExecuteStatement",
            "DescribeStatement",
            "DescribeStatement",
            "DescribeStatement"
        ]
    );
    let batch = &sent[0].1;
    assert_eq!(batch["ClusterIdentifier"], "analytics-cluster");
    assert_eq!(batch["Database"], "dev");
    assert_eq!(batch["DbUser"], "loader");
    let sqls: Vec<&str> = batch["Sqls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(sqls.len(), 5, "{sqls:#?}");
    assert_eq!(
        sqls[0],
        r#"CREATE TEMP TABLE tally_staging ("store_id" VARCHAR(1024), "trans_date" DATE, "sale_amount" DECIMAL(18,2), "source_time" TIMESTAMPTZ)"#
    );
    let copy_prefix = format!("COPY tally_staging FROM '{staging}/");
    assert!(sqls[1].starts_with(&copy_prefix), "{}", sqls[1]);
    assert!(
        sqls[1].ends_with(
            "/' IAM_ROLE 'arn:aws:iam::123456789012:role/RedshiftCopy' FORMAT AS PARQUET"
        ),
        "{}",
        sqls[1]
    );
    assert_eq!(
        sqls[2],
        r#"DELETE FROM "sales" USING tally_staging s WHERE "sales"."store_id" = s."store_id" AND "sales"."trans_date" = s."trans_date" AND s."source_time" >= "sales"."source_time" AND (("sales"."store_id" <> s."store_id" OR ("sales"."store_id" IS NULL) <> (s."store_id" IS NULL)) OR ("sales"."trans_date" <> s."trans_date" OR ("sales"."trans_date" IS NULL) <> (s."trans_date" IS NULL)) OR ("sales"."sale_amount" <> s."sale_amount" OR ("sales"."sale_amount" IS NULL) <> (s."sale_amount" IS NULL)) OR ("sales"."source_time" <> s."source_time" OR ("sales"."source_time" IS NULL) <> (s."source_time" IS NULL)))"#
    );
    assert_eq!(
        sqls[3],
        r#"INSERT INTO "sales" ("store_id", "trans_date", "sale_amount", "source_time", "updated_at") SELECT s."store_id", s."trans_date", s."sale_amount", s."source_time", GETDATE() FROM tally_staging s WHERE NOT EXISTS (SELECT 1 FROM "sales" t WHERE t."store_id" = s."store_id" AND t."trans_date" = s."trans_date")"#
    );
    assert_eq!(sqls[4], "DROP TABLE tally_staging");
    for (_, body) in &sent[1..] {
        assert_eq!(body["Id"], "stmt-1");
    }
}

#[tokio::test]
async fn a_missing_table_is_created_in_the_same_batch() {
    let http = StaticReplayClient::new(vec![
        event("BatchExecuteStatement", json!({"Id": "stmt-2"})),
        event(
            "DescribeStatement",
            json!({"Id": "stmt-2", "Status": "FINISHED"}),
        ),
    ]);
    let (schema, batches, spec) = rows();
    let (target, _) = target("");
    stage(client(&http), target, &spec, &schema, &batches, true, FAST)
        .await
        .unwrap()
        .publish()
        .await
        .unwrap();
    let sent = sent(&http);
    let first = sent[0].1["Sqls"][0].as_str().unwrap();
    assert!(
        first.starts_with(r#"CREATE TABLE IF NOT EXISTS "sales" ("#),
        "{first}"
    );
    assert!(
        first.contains(r#""sale_amount" DECIMAL(18,2)"#)
            && first.contains("DISTKEY")
            && first.contains("SORTKEY"),
        "{first}"
    );
}

#[tokio::test]
async fn a_failed_statement_reports_redshifts_error_and_cleans_up() {
    let http = StaticReplayClient::new(vec![
        event("BatchExecuteStatement", json!({"Id": "stmt-3"})),
        event(
            "DescribeStatement",
            json!({"Id": "stmt-3", "Status": "FAILED", "Error": "ERROR: Spectrum Scan Error: S3ServiceException:Access Denied"}),
        ),
    ]);
    let (schema, batches, spec) = rows();
    let (target, staging) = target("");
    let err = stage(client(&http), target, &spec, &schema, &batches, false, FAST)
        .await
        .unwrap()
        .publish()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("table sales") && err.contains("FAILED") && err.contains("Access Denied"),
        "{err}"
    );
    assert!(
        err.contains("redshift-data://analytics-cluster/dev") && !err.contains("RedshiftCopy"),
        "{err}"
    );
    assert_eq!(staged_objects(&staging).await, 0);
}

#[tokio::test]
async fn a_statement_that_runs_too_long_is_cancelled() {
    let http = StaticReplayClient::new(vec![
        event("BatchExecuteStatement", json!({"Id": "stmt-4"})),
        event(
            "DescribeStatement",
            json!({"Id": "stmt-4", "Status": "STARTED"}),
        ),
        event("CancelStatement", json!({"Status": true})),
    ]);
    let (schema, batches, spec) = rows();
    let (target, staging) = target("&timeout_secs=0");
    let err = stage(client(&http), target, &spec, &schema, &batches, false, FAST)
        .await
        .unwrap()
        .publish()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("did not finish within 0s") && err.contains("cancel requested (accepted)"),
        "{err}"
    );
    let actions: Vec<String> = sent(&http).into_iter().map(|(a, _)| a).collect();
    assert_eq!(
        actions,
        [
            "BatchExecuteStatement",
            "DescribeStatement",
            "CancelStatement"
        ]
    );
    assert_eq!(staged_objects(&staging).await, 0);
}

#[tokio::test]
async fn discarding_a_staged_load_sends_nothing_and_deletes_the_staging() {
    let http = StaticReplayClient::new(vec![]);
    let (schema, batches, spec) = rows();
    let (target, staging) = target("");
    let staged = stage(client(&http), target, &spec, &schema, &batches, false, FAST)
        .await
        .unwrap();
    staged.discard().await.unwrap();
    assert_eq!(sent(&http).len(), 0);
    assert_eq!(staged_objects(&staging).await, 0);
}
