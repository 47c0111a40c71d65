//! The Lambda function (`tally-lambda`, `--features lambda`) driven through the real Lambda
//! Runtime API: `cargo lambda watch --only-lambda-apis` (the `cargo-lambda` PyPI package) serves
//! the API, the function polls it as it would on AWS, and `cargo lambda invoke` sends real S3
//! `ObjectCreated` and EventBridge scheduled events. The objects live on the S3 test server
//! (Garage) and the state store is a real SQLite file.
#![cfg(feature = "lambda")]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;
use object_store::ObjectStoreExt;
use serde_json::Value;

/// The Runtime API emulator and the function polling it.
fn start(port: u16, env: &[(&str, String)], log: &Path) -> Vec<Running> {
    let emulator = Command::new("cargo")
        .args([
            "lambda",
            "watch",
            "--only-lambda-apis",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .current_dir(repo())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cargo lambda runs (pip install cargo-lambda; tests/run.sh does)");
    let mut processes = vec![Running(emulator)];
    wait_for_port(port, "the Runtime API emulator");
    let function = Command::new(env!("CARGO_BIN_EXE_tally-lambda"))
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1024")
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::fs::File::create(log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("tally-lambda starts");
    processes.push(Running(function));
    processes
}

/// Sends one event through the Runtime API; the function's response, or its error.
fn invoke(port: u16, event: &Value, dir: &Path) -> Result<Value, String> {
    let file = dir.join("event.json");
    std::fs::write(&file, serde_json::to_vec(event).unwrap()).unwrap();
    let out = Command::new("cargo")
        .args(["lambda", "invoke", "-A", "127.0.0.1", "-P"])
        .arg(port.to_string())
        .arg("--data-file")
        .arg(&file)
        .arg("--output-format")
        .arg("json")
        .current_dir(repo())
        .output()
        .expect("cargo lambda invoke runs");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if out.status.success() {
        serde_json::from_str(&stdout).map_err(|e| format!("{e}: {stdout}"))
    } else {
        Err(format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

/// An S3 `ObjectCreated:Put` notification as S3 sends it (the key form-encoded).
fn s3_event(url: &str) -> Value {
    let (bucket, key) = url
        .strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .unwrap();
    let key: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
    let key = key.replace("%2F", "/");
    serde_json::json!({
        "Records": [{
            "eventVersion": "2.1",
            "eventSource": "aws:s3",
            "awsRegion": "us-east-1",
            "eventTime": "2026-03-01T12:05:00.000Z",
            "eventName": "ObjectCreated:Put",
            "userIdentity": { "principalId": "AWS:AIDAEXAMPLE" },
            "requestParameters": { "sourceIPAddress": "127.0.0.1" },
            "responseElements": {
                "x-amz-request-id": "C3D13FE58DE4C810",
                "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"
            },
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "raw-file-created",
                "bucket": {
                    "name": bucket,
                    "ownerIdentity": { "principalId": "A3NL1KOZZKExample" },
                    "arn": format!("arn:aws:s3:::{bucket}")
                },
                "object": {
                    "key": key,
                    "size": 1024,
                    "eTag": "d41d8cd98f00b204e9800998ecf8427e",
                    "sequencer": "0055AED6DCD90281E5"
                }
            }
        }]
    })
}

fn scheduled_event() -> Value {
    serde_json::json!({
        "version": "0",
        "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-03-01T12:10:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/tally-schedule"],
        "detail": {}
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_events_and_schedules_through_the_runtime_api() {
    let dir = tempfile::tempdir().unwrap();
    let base = prefix("lambda");
    let (raw, validated) = (format!("{base}/raw"), format!("{base}/validated"));
    let state_db = dir.path().join("state.db");
    let port = free_port();
    let log = dir.path().join("function.log");
    let _processes = start(
        port,
        &[
            ("TALLY_STATE", format!("sqlite://{}", state_db.display())),
            ("TALLY_RAW_PREFIX", raw.clone()),
            ("TALLY_VALIDATED_PREFIX", validated.clone()),
        ],
        &log,
    );

    // A store's upload: WI-203 has a malformed row, which goes to the quarantine.
    let (name, bytes, _) = tally::demo::SAMPLE_FILES
        .iter()
        .find(|(n, _, _)| *n == "WI-203.tdf")
        .unwrap();
    let raw_location = tally::storage::Location::create(&raw).await.unwrap();
    raw_location
        .store
        .put(&raw_location.child(name), bytes.to_vec().into())
        .await
        .unwrap();

    let raw_url = format!("{raw}/{name}");
    let response = invoke(port, &s3_event(&raw_url), dir.path()).unwrap();
    let action = &response["objects"][0];
    assert_eq!(action["action"], "validated", "{response}");
    assert_eq!(action["report"]["status"], "ok", "{response}");
    assert_eq!(action["report"]["rows"], 4, "{response}");
    assert_eq!(action["report"]["bad_rows"], 2, "{response}");
    assert_eq!(file_names(&validated).await, vec!["WI-203.csv".to_string()]);
    let out = tally::storage::Location::open(&validated).await.unwrap();
    let first = out.store.get(&out.child("WI-203.csv")).await.unwrap();
    let first = first.bytes().await.unwrap();

    // The same event again (S3 delivers at least once): harmless, the same bytes.
    let again = invoke(port, &s3_event(&raw_url), dir.path()).unwrap();
    assert_eq!(again["objects"][0]["report"]["status"], "ok", "{again}");
    let second = out.store.get(&out.child("WI-203.csv")).await.unwrap();
    assert_eq!(second.bytes().await.unwrap(), first);

    // The validated file's own event tracks it, with the event's time.
    let validated_url = format!("{validated}/WI-203.csv");
    let tracked = invoke(port, &s3_event(&validated_url), dir.path()).unwrap();
    assert_eq!(tracked["objects"][0]["action"], "tracked", "{tracked}");
    let rows = tracked_files(&format!("sqlite://{}", state_db.display())).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, validated_url);
    assert!(
        rows[0]
            .1
            .as_deref()
            .is_some_and(|t| t.starts_with("2026-03-01 12:05:00")),
        "{rows:?}"
    );

    // The quarantine's own events are not tracked.
    let quarantine = format!("{validated}/_quarantine/WI-203.csv");
    let ignored = invoke(port, &s3_event(&quarantine), dir.path()).unwrap();
    assert_eq!(ignored["objects"][0]["action"], "ignored", "{ignored}");

    // A schedule: a scheduler pass and a monitor pass (no job is registered: nothing to do).
    let pass = invoke(port, &scheduled_event(), dir.path()).unwrap();
    assert_eq!(pass["scheduled"], serde_json::json!([]), "{pass}");
    assert_eq!(pass["monitored"], serde_json::json!([]), "{pass}");

    // An event the function does not know is an error (Lambda retries it, then dead-letters it).
    let error = invoke(port, &serde_json::json!({ "hello": 1 }), dir.path()).unwrap_err();
    assert!(error.contains("unknown event"), "{error}");

    // Structured logs: one JSON object per line.
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        logs.lines()
            .filter(|l| !l.trim().is_empty())
            .all(|l| serde_json::from_str::<Value>(l).is_ok()),
        "{logs}"
    );
    assert!(logs.contains("object handled"), "{logs}");
}
