//! The province job over `s3://` against a real S3-compatible server (Garage) on loopback, started
//! by `tests/run.sh` (tests/servers/garage.sh). Without the server these tests fail: they are
//! never skipped silently.

mod common;

use common::*;
use object_store::ObjectStoreExt;

#[test]
fn local_raw_files_validated_to_s3_then_run_from_s3() {
    let val = validated_sample_on_s3("local-to-s3");
    let out = job_run("jobs/province_sales.sql", "WI", &val)
        .dry_run()
        .format("csv")
        .ok();
    let rows = csv_rows(&out);
    assert_eq!(project(&rows, RESULT_COLUMNS), expected_sample());
    // The source time travelled as object metadata: store s201's later file won.
    assert!(rows
        .iter()
        .filter(|r| r["store_id"] == "s201")
        .all(|r| r["source_file"] == format!("{val}/WI-201-1500.csv")
            && r["source_time"] == "2026-03-01T15:00:00.000000Z"));
    // The quarantine sits beside the output on S3 too.
    let stderr =
        String::from_utf8(job_run("province_sales", "IL", &val).dry_run().run().stderr).unwrap();
    assert!(stderr.contains("1 files"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread")]
async fn raw_files_on_s3_validated_and_run_on_s3() {
    let base = prefix("s3-to-s3");
    let raw = tally::storage::Location::create(&format!("{base}/raw"))
        .await
        .unwrap();
    // Upload the older cumulative file first; S3 object times have one-second resolution.
    let mut files: Vec<_> = tally::demo::SAMPLE_FILES.iter().collect();
    files.sort_by_key(|(name, _, _)| *name != "WI-201.tdf");
    for (i, (name, bytes, _)) in files.iter().enumerate() {
        raw.store
            .put(&raw.child(name), bytes.to_vec().into())
            .await
            .unwrap();
        if i == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        }
    }
    let val = format!("{base}/validated");
    let raw_url = format!("{base}/raw");
    let (raw_url2, val2) = (raw_url.clone(), val.clone());
    let out = tokio::task::spawn_blocking(move || {
        ok(&["validate", "--input", &raw_url2, "--output", &val2]);
        job_run("province_sales", "WI", &val2).dry_run().ok()
    })
    .await
    .unwrap();
    assert_eq!(project(&csv_rows(&out), RESULT_COLUMNS), expected_sample());
    let names = file_names(&val).await;
    let validated = tally::storage::Location::open(&val).await.unwrap();
    assert!(names.contains(&"WI-202.csv".to_string()), "{names:?}");
    let quarantine = validated
        .store
        .get(&validated.child("_quarantine/WI-203.csv"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(String::from_utf8_lossy(&quarantine).contains("12.3x"));
}

#[test]
fn a_missing_s3_prefix_is_a_clear_error() {
    let err = job_run("province_sales", "WI", prefix("empty"))
        .dry_run()
        .fails();
    assert!(err.contains("no input files for province WI"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_quarantine_on_s3_is_a_real_sub_folder() {
    let val = tokio::task::spawn_blocking(|| validated_sample_on_s3("quarantine"))
        .await
        .unwrap();
    let location = tally::storage::Location::open(&format!("{val}/_quarantine"))
        .await
        .unwrap();
    let names: Vec<String> = location
        .list_files()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(names, ["WI-203.csv"]);
}

/// An S3 client on the test server, for keys object_store refuses to name.
async fn raw_s3_client() -> aws_sdk_s3::Client {
    let sdk = tally::aws::config_loader().load().await;
    let endpoint = tally::storage::s3_endpoint_from_env()
        .expect("AWS_ENDPOINT_URL is not set: run the suite with tests/run.sh");
    aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::config::Builder::from(&sdk)
            .endpoint_url(endpoint)
            .force_path_style(true)
            .build(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn odd_keys_in_an_s3_folder_are_skipped_not_fatal() {
    let val = tokio::task::spawn_blocking(|| validated_sample_on_s3("odd-keys"))
        .await
        .unwrap();
    // Keys a careless uploader can make, which object_store cannot represent as paths.
    let key_prefix = val.strip_prefix(&format!("s3://{}/", bucket())).unwrap();
    let client = raw_s3_client().await;
    for odd in ["WI-9\u{1}9.csv", "/WI-double-slash.csv", "WI-8.csv\u{7f}"] {
        client
            .put_object()
            .bucket(bucket())
            .key(format!("{key_prefix}/{odd}"))
            .body(b"store_id,x\n".to_vec().into())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{odd:?}: {}", aws_sdk_s3::error::DisplayErrorContext(e)));
    }
    let names = file_names(&val).await;
    assert!(names.contains(&"WI-202.csv".to_string()), "{names:?}");
    assert!(
        names.iter().all(|n| !n.chars().any(char::is_control)),
        "{names:?}"
    );
    let val2 = val.clone();
    let (out, stderr) = tokio::task::spawn_blocking(move || {
        let output = job_run("province_sales", "WI", &val2)
            .dry_run()
            .format("csv")
            .run();
        assert!(output.status.success(), "{output:?}");
        (
            String::from_utf8(output.stdout).unwrap(),
            String::from_utf8(output.stderr).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(project(&csv_rows(&out), RESULT_COLUMNS), expected_sample());
    assert!(stderr.contains("skipped an object whose key"), "{stderr}");
}
