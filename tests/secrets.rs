//! Secrets Manager references (`--state`/`--warehouse arn:aws:secretsmanager:...`), verified at
//! their HTTP boundary with the AWS SDK's replay client (no Secrets Manager here): the exact
//! GetSecretValue request, and the URL made from RDS-style and plain secrets.

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::test_util::{ReplayEvent, StaticReplayClient};
use aws_smithy_types::body::SdkBody;
use serde_json::{json, Value};
use tally::secrets::{redact_url, resolve_secret};

const ARN: &str = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:tally-wh-AbCdEf";

fn answer(secret: &str) -> ReplayEvent {
    ReplayEvent::new(
        http::Request::builder()
            .uri("https://secretsmanager.eu-west-1.amazonaws.com/")
            .body(SdkBody::from("{}"))
            .unwrap(),
        http::Response::builder()
            .status(200)
            .header("content-type", "application/x-amz-json-1.1")
            .body(SdkBody::from(
                json!({"ARN": ARN, "Name": "tally-wh", "SecretString": secret}).to_string(),
            ))
            .unwrap(),
    )
}

fn client(http: &StaticReplayClient) -> aws_sdk_secretsmanager::Client {
    aws_sdk_secretsmanager::Client::from_conf(
        aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("eu-west-1"))
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

#[tokio::test]
async fn an_rds_style_secret_becomes_a_url_that_is_never_shown() {
    let http = StaticReplayClient::new(vec![answer(
        r#"{"engine":"postgres","host":"wh.example","port":5432,"username":"loader","password":"Pa55/word","dbname":"sales"}"#,
    )]);
    let url = resolve_secret(&client(&http), ARN).await.unwrap();
    assert_eq!(url, "postgres://loader:Pa55%2Fword@wh.example:5432/sales");
    assert_eq!(
        redact_url(&url),
        "postgres://loader:****@wh.example:5432/sales"
    );

    let request = http.actual_requests().next().unwrap();
    assert_eq!(
        request.headers().get("x-amz-target"),
        Some("secretsmanager.GetSecretValue")
    );
    let body: Value = serde_json::from_slice(request.body().bytes().unwrap()).unwrap();
    assert_eq!(body, json!({"SecretId": ARN}));
}

#[tokio::test]
async fn a_plain_secret_is_the_url_itself() {
    let http = StaticReplayClient::new(vec![answer("mysql://tally:pw@state-db:3306/aggr")]);
    assert_eq!(
        resolve_secret(&client(&http), ARN).await.unwrap(),
        "mysql://tally:pw@state-db:3306/aggr"
    );
    let unusable = StaticReplayClient::new(vec![answer("hunter2")]);
    let err = resolve_secret(&client(&unusable), ARN).await.unwrap_err();
    assert!(err.to_string().contains("neither a URL"), "{err}");
    assert!(!err.to_string().contains("hunter2"));
}
