//! The EMR executor and `tally monitor`, verified at their HTTP boundary with the AWS SDK's replay
//! client (no EMR here): the exact ListClusters, DescribeCluster, AddJobFlowSteps and DescribeStep
//! requests, and what the state store records from the answers.

mod common;

use std::time::Duration;

use aws_sdk_emr::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use common::*;
use serde_json::{json, Value};
use tally::control::{monitor, schedule, Executor, ScheduleOptions};
use tally::state::StateStore;

fn event(action: &str, response: Value) -> ReplayEvent {
    ReplayEvent::new(
        http::Request::builder()
            .uri("https://elasticmapreduce.us-east-1.amazonaws.com/")
            .header("x-amz-target", format!("ElasticMapReduce.{action}"))
            .body(SdkBody::from("{}"))
            .unwrap(),
        http::Response::builder()
            .status(200)
            .header("content-type", "application/x-amz-json-1.1")
            .body(SdkBody::from(response.to_string()))
            .unwrap(),
    )
}

fn client(http: &StaticReplayClient) -> aws_sdk_emr::Client {
    aws_sdk_emr::Client::from_conf(
        aws_sdk_emr::Config::builder()
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
            .build(),
    )
}

fn sent(http: &StaticReplayClient) -> Vec<(String, Value)> {
    http.actual_requests()
        .map(|r| {
            let action = r
                .headers()
                .get("x-amz-target")
                .unwrap_or_default()
                .trim_start_matches("ElasticMapReduce.")
                .to_string();
            (
                action,
                serde_json::from_slice(r.body().bytes().unwrap_or(b"{}")).unwrap(),
            )
        })
        .collect()
}

/// A state store with the sample province validated, tracked and registered as `wi-daily`.
fn ready_job(dir: &std::path::Path) -> (String, String) {
    let val = validated_sample(dir);
    let state = format!("sqlite://{}", dir.join("state.db").display());
    ok(&[
        "jobs",
        "register",
        "province_sales",
        "--config-id",
        "wi-daily",
        "--province",
        "WI",
        "--input",
        val.to_str().unwrap(),
        "--min-files",
        "5",
        "--table",
        "s3://lake/sales",
        "--state",
        &state,
    ]);
    let mut args = vec!["track".to_string()];
    for f in [
        "WI-201.csv",
        "WI-201-1500.csv",
        "WI-202.csv",
        "WI-203.csv",
        "WI-204.csv",
    ] {
        args.extend(["--file".into(), val.join(f).display().to_string()]);
    }
    args.extend(["--state".into(), state.clone()]);
    ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (state, val.display().to_string())
}

fn options(http: &StaticReplayClient, state: &str) -> ScheduleOptions {
    ScheduleOptions {
        executor: Executor::Emr {
            client: client(http),
            tag_key: "edba".into(),
            tag_value: "true".into(),
            tally_path: "/usr/local/bin/tally".into(),
        },
        state_url: state.to_string(),
        step_state: None,
        lease: Duration::from_secs(300),
        criteria_timeout: Duration::from_secs(5),
    }
}

#[tokio::test]
async fn a_ready_job_becomes_one_step_on_the_tagged_waiting_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _val) = ready_job(dir.path());
    let http = StaticReplayClient::new(vec![
        event(
            "ListClusters",
            json!({"Clusters": [{"Id": "j-OTHER", "Name": "adhoc"}, {"Id": "j-TALLY", "Name": "edba"}]}),
        ),
        event(
            "DescribeCluster",
            json!({"Cluster": {"Id": "j-OTHER", "Tags": [{"Key": "team", "Value": "bi"}]}}),
        ),
        event(
            "DescribeCluster",
            json!({"Cluster": {"Id": "j-TALLY", "Tags": [{"Key": "edba", "Value": "true"}]}}),
        ),
        event("AddJobFlowSteps", json!({"StepIds": ["s-1ABC"]})),
    ]);
    let store = StateStore::connect(&state).await.unwrap();
    let decisions = schedule(&store, &options(&http, &state)).await.unwrap();
    assert_eq!(
        (decisions[0].outcome.as_str(), decisions[0].detail.as_str()),
        ("submitted", "EMR step j-TALLY:s-1ABC")
    );

    let sent = sent(&http);
    let actions: Vec<&str> = sent.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(
        actions,
        [
            "ListClusters",
            "DescribeCluster",
            "DescribeCluster",
            "AddJobFlowSteps"
        ]
    );
    assert_eq!(sent[0].1, json!({"ClusterStates": ["WAITING"]}));
    assert_eq!(sent[2].1, json!({"ClusterId": "j-TALLY"}));
    assert_eq!(
        sent[3].1,
        json!({
            "JobFlowId": "j-TALLY",
            "Steps": [{
                "Name": "tally wi-daily",
                "ActionOnFailure": "CONTINUE",
                "HadoopJarStep": {
                    "Jar": "command-runner.jar",
                    "Args": [
                        "/usr/local/bin/tally", "run", "--job-config-id", "wi-daily",
                        "--state", state
                    ]
                }
            }]
        })
    );
    let job = &store.job_configs().await.unwrap()[0];
    assert_eq!(job.last_exec_status.as_deref(), Some("RUNNING"));
    assert_eq!(job.last_exec_stepid.as_deref(), Some("j-TALLY:s-1ABC"));

    // A second pass submits nothing: the job is RUNNING.
    let idle = StaticReplayClient::new(vec![]);
    let decisions = schedule(&store, &options(&idle, &state)).await.unwrap();
    assert_eq!(decisions[0].detail, "already RUNNING");
    assert!(sent_is_empty(&idle));
}

fn sent_is_empty(http: &StaticReplayClient) -> bool {
    http.actual_requests().next().is_none()
}

#[tokio::test]
async fn without_a_tagged_waiting_cluster_nothing_is_left_running() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = ready_job(dir.path());
    let http = StaticReplayClient::new(vec![
        event("ListClusters", json!({"Clusters": [{"Id": "j-OTHER"}]})),
        event(
            "DescribeCluster",
            json!({"Cluster": {"Id": "j-OTHER", "Tags": []}}),
        ),
    ]);
    let store = StateStore::connect(&state).await.unwrap();
    let decisions = schedule(&store, &options(&http, &state)).await.unwrap();
    assert_eq!(decisions[0].outcome, "failed");
    assert!(
        decisions[0]
            .detail
            .contains("no WAITING EMR cluster is tagged edba=true"),
        "{}",
        decisions[0].detail
    );
    assert_eq!(
        store.job_configs().await.unwrap()[0]
            .last_exec_status
            .as_deref(),
        Some("FAILED")
    );
}

#[tokio::test]
async fn monitor_settles_steps_that_ended_without_their_run_reporting() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = ready_job(dir.path());
    let store = StateStore::connect(&state).await.unwrap();
    assert!(store.claim_job("wi-daily", "emr:submitting").await.unwrap());
    store
        .set_step_id("wi-daily", "j-TALLY:s-1ABC")
        .await
        .unwrap();
    // The run started on the cluster, then its node was lost: it never reported an outcome.
    let run = store
        .start_run("province_sales", Some("wi-daily"), Some("WI"))
        .await
        .unwrap();

    let running = StaticReplayClient::new(vec![event(
        "DescribeStep",
        json!({"Step": {"Id": "s-1ABC", "Status": {"State": "RUNNING"}}}),
    )]);
    let decisions = monitor(&store, &client(&running)).await.unwrap();
    assert_eq!(decisions[0].outcome, "running");
    assert_eq!(
        sent(&running)[0].1,
        json!({"ClusterId": "j-TALLY", "StepId": "s-1ABC"})
    );

    let failed = StaticReplayClient::new(vec![event(
        "DescribeStep",
        json!({"Step": {"Id": "s-1ABC", "Status": {"State": "FAILED", "FailureDetails": {"Message": "Container killed on request"}}}}),
    )]);
    let decisions = monitor(&store, &client(&failed)).await.unwrap();
    assert_eq!(decisions[0].outcome, "FAILED");
    assert_eq!(
        store.job_configs().await.unwrap()[0]
            .last_exec_status
            .as_deref(),
        Some("FAILED")
    );
    let runs = store.recent_runs(5).await.unwrap();
    let record = runs.iter().find(|r| r.run_id == run).unwrap();
    assert_eq!(record.status, "FAILED");
    assert!(record
        .error
        .as_deref()
        .unwrap()
        .contains("Container killed on request"));

    // A job no longer RUNNING is not asked about again.
    let idle = StaticReplayClient::new(vec![]);
    assert!(monitor(&store, &client(&idle)).await.unwrap().is_empty());
}

#[tokio::test]
async fn monitor_marks_a_completed_step_completed() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = ready_job(dir.path());
    let store = StateStore::connect(&state).await.unwrap();
    assert!(store.claim_job("wi-daily", "emr:submitting").await.unwrap());
    store
        .set_step_id("wi-daily", "j-TALLY:s-2DEF")
        .await
        .unwrap();
    let http = StaticReplayClient::new(vec![event(
        "DescribeStep",
        json!({"Step": {"Id": "s-2DEF", "Status": {"State": "COMPLETED"}}}),
    )]);
    let decisions = monitor(&store, &client(&http)).await.unwrap();
    assert_eq!(decisions[0].outcome, "COMPLETED");
    assert_eq!(
        store.job_configs().await.unwrap()[0]
            .last_exec_status
            .as_deref(),
        Some("COMPLETED")
    );
}

#[tokio::test]
async fn a_step_never_carries_the_state_store_password() {
    let dir = tempfile::tempdir().unwrap();
    let (state, _) = ready_job(dir.path());
    let store = StateStore::connect(&state).await.unwrap();
    // The scheduler's own state URL has a password (as a MySQL URL on RDS would): without a
    // reference for the step, nothing is submitted and the job is not claimed.
    let idle = StaticReplayClient::new(vec![]);
    let mut opts = options(&idle, "mysql://tally:Hunter2Pw@state-db/aggr");
    let decisions = schedule(&store, &opts).await.unwrap();
    assert_eq!(decisions[0].outcome, "failed");
    assert!(
        decisions[0].detail.contains("--step-state"),
        "{}",
        decisions[0].detail
    );
    assert!(!decisions[0].detail.contains("Hunter2Pw"));
    assert!(sent_is_empty(&idle));
    assert_ne!(
        store.job_configs().await.unwrap()[0]
            .last_exec_status
            .as_deref(),
        Some("RUNNING")
    );

    // With a Secrets Manager ARN for the step, the step names the ARN, never the URL.
    let http = StaticReplayClient::new(vec![
        event("ListClusters", json!({"Clusters": [{"Id": "j-TALLY"}]})),
        event(
            "DescribeCluster",
            json!({"Cluster": {"Id": "j-TALLY", "Tags": [{"Key": "edba", "Value": "true"}]}}),
        ),
        event("AddJobFlowSteps", json!({"StepIds": ["s-9"]})),
    ]);
    let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:tally-state-AbCdEf";
    opts = options(&http, "mysql://tally:Hunter2Pw@state-db/aggr");
    opts.step_state = Some(arn.to_string());
    let decisions = schedule(&store, &opts).await.unwrap();
    assert_eq!(decisions[0].outcome, "submitted", "{}", decisions[0].detail);
    let sent = sent(&http);
    assert_eq!(
        sent[2].1["Steps"][0]["HadoopJarStep"]["Args"],
        json!([
            "/usr/local/bin/tally",
            "run",
            "--job-config-id",
            "wi-daily",
            "--state",
            arn
        ])
    );
    assert!(!sent[2].1.to_string().contains("Hunter2Pw"));
}

/// The cluster bootstrap action on EMR's instance files: the primary node gets the scheduler, the
/// others an executor pointed at the primary's private name. Written as units, not started.
#[test]
fn the_cluster_bootstrap_action_starts_the_role_the_node_has() {
    let dir = tempfile::tempdir().unwrap();
    let bootstrap = |is_master: bool, extra: &[&str]| {
        let (info, units) = (
            dir.path().join("info"),
            dir.path().join(format!("units-{is_master}")),
        );
        std::fs::create_dir_all(&info).unwrap();
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(
            info.join("instance.json"),
            format!("{{\"isMaster\": {is_master}, \"instanceRole\": \"x\"}}"),
        )
        .unwrap();
        std::fs::write(
            info.join("job-flow.json"),
            r#"{"jobFlowId": "j-1", "masterPrivateDnsName": "ip-10-0-0-5.ec2.internal"}"#,
        )
        .unwrap();
        let out = std::process::Command::new("bash")
            .arg(repo().join("bootstrap/start-cluster.sh"))
            .args(extra)
            .env("TALLY_EMR_INFO", &info)
            .env("TALLY_SYSTEMD_DIR", &units)
            .env("TALLY_NO_START", "1")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let unit = std::fs::read_dir(&units)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        (
            unit.file_name().unwrap().to_string_lossy().to_string(),
            std::fs::read_to_string(unit).unwrap(),
        )
    };
    let (name, unit) = bootstrap(true, &[]);
    assert_eq!(name, "tally-scheduler.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/tally cluster scheduler --bind 0.0.0.0:50050\n"),
        "{unit}"
    );
    let (name, unit) = bootstrap(false, &["--slots", "8", "--memory-limit", "24G"]);
    assert_eq!(name, "tally-executor.service");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/tally cluster executor --scheduler ip-10-0-0-5.ec2.internal:50050 --bind 0.0.0.0:50051 --work-dir /mnt/tally-shuffle --slots 8 --memory-limit 24G\n"),
        "{unit}"
    );
    assert!(unit.contains("Restart=always"), "{unit}");
}
