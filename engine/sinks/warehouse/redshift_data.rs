//! Redshift through the Data API: no network path to the cluster is needed.
//!
//! Staging writes the rows as Parquet under the S3 staging prefix (invisible to Redshift users).
//! Publishing sends one `BatchExecuteStatement` (which Redshift runs as one transaction): create
//! the table if missing, a temporary staging table, `COPY ... FORMAT AS PARQUET IAM_ROLE ...`,
//! delete-then-insert of newer rows, drop the staging table. tally polls `DescribeStatement` with
//! backoff until it finishes, fails (Redshift's error text is reported) or times out (the
//! statement is cancelled). The staging objects are deleted in every case.
//!
//! URL: `redshift-data://CLUSTER_ID/DATABASE?db_user=USER&iam_role=ROLE_ARN&staging=s3://BUCKET/PREFIX`
//! or, for Redshift Serverless, `redshift-data:///DATABASE?workgroup=NAME&...`; `secret_arn=ARN`
//! instead of `db_user`; optional `region=` and `timeout_secs=` (default 900).

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_redshiftdata::types::StatusString;
use aws_sdk_redshiftdata::Client;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::WriterProperties;
use object_store::{ObjectStoreExt, PutPayload};

use super::dialect::{Dialect, TableError, TableSpec, STAGING};
use crate::sinks::{SinkDetails, SinkError, SinkReport, StagedWrite};
use crate::storage::{Location, StorageError};

/// A `redshift-data://` URL that cannot be used, or staging that failed.
#[derive(Debug, thiserror::Error)]
pub enum DataApiError {
    #[error("`{text}` is not a URL")]
    NotAUrl {
        text: String,
        #[source]
        source: url::ParseError,
    },
    #[error("`{0}` is not a redshift-data:// URL")]
    WrongScheme(String),
    #[error("redshift-data URL needs a database: redshift-data://CLUSTER/DATABASE?...")]
    NoDatabase,
    #[error("redshift-data URL needs either a cluster id as host or ?workgroup=NAME, not both")]
    ClusterOrWorkgroup,
    #[error("redshift-data URL needs one of db_user= or secret_arn=")]
    NoIdentity,
    #[error(
        "redshift-data URL needs iam_role=ARN (the role COPY uses to read the staging prefix)"
    )]
    NoRole,
    #[error("iam_role `{0}` is not an IAM role ARN")]
    BadRole(String),
    #[error("redshift-data URL needs staging=s3://BUCKET/PREFIX")]
    NoStaging,
    #[error("staging `{0}` must be a plain s3:// prefix")]
    BadStaging(String),
    #[error("timeout_secs `{0}` is not a number")]
    BadTimeout(String),
    #[error(transparent)]
    Table(#[from] TableError),
    #[error("cannot encode the staging Parquet")]
    Encode(#[source] datafusion::parquet::errors::ParquetError),
    #[error("cannot write staging object under {prefix}")]
    WriteStaging {
        prefix: String,
        #[source]
        source: object_store::Error,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Where and as whom statements run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compute {
    Cluster(String),
    Workgroup(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Auth {
    DbUser(String),
    SecretArn(String),
    /// Serverless with the caller's IAM identity.
    Iam,
}

/// A parsed `redshift-data://` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataApiTarget {
    pub compute: Compute,
    pub database: String,
    pub auth: Auth,
    pub iam_role: String,
    pub staging: String,
    pub region: Option<String>,
    pub timeout: Duration,
}

impl DataApiTarget {
    pub fn parse(text: &str) -> Result<DataApiTarget, DataApiError> {
        let url = url::Url::parse(text).map_err(|source| DataApiError::NotAUrl {
            text: text.to_string(),
            source,
        })?;
        if url.scheme() != "redshift-data" {
            return Err(DataApiError::WrongScheme(text.to_string()));
        }
        let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
        let database = url.path().trim_matches('/').to_string();
        if database.is_empty() {
            return Err(DataApiError::NoDatabase);
        }
        let compute = match (url.host_str().filter(|h| !h.is_empty()), q.get("workgroup")) {
            (Some(c), None) => Compute::Cluster(c.to_string()),
            (None, Some(w)) => Compute::Workgroup(w.clone()),
            _ => return Err(DataApiError::ClusterOrWorkgroup),
        };
        let auth = match (q.get("db_user"), q.get("secret_arn")) {
            (Some(u), None) => Auth::DbUser(u.clone()),
            (None, Some(s)) => Auth::SecretArn(s.clone()),
            (None, None) if matches!(compute, Compute::Workgroup(_)) => Auth::Iam,
            _ => return Err(DataApiError::NoIdentity),
        };
        let iam_role = q.get("iam_role").cloned().ok_or(DataApiError::NoRole)?;
        // The role and staging path go into COPY's text: accept only their documented shapes.
        let role_ok = iam_role.starts_with("arn:aws")
            && iam_role.contains(":role/")
            && !iam_role.contains(['\'', '\\', ' ']);
        if !role_ok {
            return Err(DataApiError::BadRole(iam_role));
        }
        let staging = q.get("staging").cloned().ok_or(DataApiError::NoStaging)?;
        if !staging.starts_with("s3://") || staging.contains(['\'', '\\', ' ']) {
            return Err(DataApiError::BadStaging(staging));
        }
        let timeout = q
            .get("timeout_secs")
            .map(|t| {
                t.parse::<u64>()
                    .map_err(|_| DataApiError::BadTimeout(t.clone()))
            })
            .transpose()?
            .unwrap_or(900);
        Ok(DataApiTarget {
            compute,
            database,
            auth,
            iam_role,
            staging: staging.trim_end_matches('/').to_string(),
            region: q.get("region").cloned(),
            timeout: Duration::from_secs(timeout),
        })
    }

    /// A description without credentials, for messages.
    pub fn describe(&self) -> String {
        match &self.compute {
            Compute::Cluster(c) => format!("redshift-data://{c}/{}", self.database),
            Compute::Workgroup(w) => format!("redshift-data:///{}?workgroup={w}", self.database),
        }
    }

    /// A Data API client from the standard AWS configuration.
    pub async fn client(&self) -> Client {
        let mut loader = crate::aws::config_loader();
        if let Some(region) = &self.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        Client::new(&loader.load().await)
    }
}

/// The statements of one load, in order.
pub fn statements(
    spec: &TableSpec,
    target: &DataApiTarget,
    staged_prefix: &str,
    create_table: bool,
) -> Result<Vec<String>, TableError> {
    let mut sqls = Vec::new();
    if create_table {
        sqls.push(
            spec.create_table(Dialect::Redshift)?
                .trim_end_matches(';')
                .to_string(),
        );
    }
    sqls.push(spec.create_staging(Dialect::Redshift)?);
    sqls.push(format!(
        "COPY {STAGING} FROM '{staged_prefix}/' IAM_ROLE '{}' FORMAT AS PARQUET",
        target.iam_role
    ));
    sqls.extend(spec.merge_statements(Dialect::Redshift, "GETDATE()"));
    sqls.push(format!("DROP TABLE {STAGING}"));
    Ok(sqls)
}

/// How often `DescribeStatement` is polled: starts at `first`, doubles up to `max`.
#[derive(Debug, Clone, Copy)]
pub struct Polling {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Polling {
    fn default() -> Self {
        Polling {
            first: Duration::from_millis(250),
            max: Duration::from_secs(5),
        }
    }
}

/// Writes rows as one Parquet object under `prefix`; returns its location URL.
async fn write_staging(
    prefix: &str,
    schema: &SchemaRef,
    batches: &[RecordBatch],
) -> Result<Location, DataApiError> {
    let location = Location::create(prefix).await?;
    let mut buffer = Vec::new();
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(&mut buffer, schema.clone(), Some(props))
        .map_err(DataApiError::Encode)?;
    for b in batches {
        writer.write(b).map_err(DataApiError::Encode)?;
    }
    writer.close().map_err(DataApiError::Encode)?;
    location
        .store
        .put(
            &location.child("part-00000.parquet"),
            PutPayload::from(Bytes::from(buffer)),
        )
        .await
        .map_err(|source| DataApiError::WriteStaging {
            prefix: prefix.to_string(),
            source,
        })?;
    Ok(location)
}

async fn delete_staging(location: &Location) -> Result<(), StorageError> {
    location.delete_if_exists("part-00000.parquet").await
}

/// Stages the rows in S3 for a Data API load.
pub async fn stage(
    client: Client,
    target: DataApiTarget,
    spec: &TableSpec,
    schema: &SchemaRef,
    batches: &[RecordBatch],
    create_table: bool,
    polling: Polling,
) -> Result<Box<dyn StagedWrite>, SinkError> {
    let context = format!("table {}", spec.name);
    let err =
        |e: DataApiError| SinkError::caused_by("warehouse", target.describe(), Some(&context), &e);
    let prefix = format!("{}/{}", target.staging, uuid::Uuid::new_v4());
    let sqls = statements(spec, &target, &prefix, create_table).map_err(|e| err(e.into()))?;
    let staged = write_staging(&prefix, schema, batches).await.map_err(err)?;
    Ok(Box::new(StagedDataApi {
        client,
        target,
        spec: spec.clone(),
        sqls,
        staged,
        rows: batches.iter().map(|b| b.num_rows() as u64).sum(),
        polling,
    }))
}

struct StagedDataApi {
    client: Client,
    target: DataApiTarget,
    spec: TableSpec,
    sqls: Vec<String>,
    staged: Location,
    rows: u64,
    polling: Polling,
}

impl StagedDataApi {
    fn err(&self, message: impl std::fmt::Display) -> SinkError {
        SinkError {
            sink: "warehouse",
            target: self.target.describe(),
            message: format!("table {}: {message}", self.spec.name),
        }
    }

    /// Sends the batch and waits for it; returns the statement id.
    async fn execute(&self) -> Result<String, SinkError> {
        let mut request = self
            .client
            .batch_execute_statement()
            .database(&self.target.database)
            .set_sqls(Some(self.sqls.clone()))
            .statement_name(format!("tally load {}", self.spec.name));
        request = match &self.target.compute {
            Compute::Cluster(c) => request.cluster_identifier(c),
            Compute::Workgroup(w) => request.workgroup_name(w),
        };
        request = match &self.target.auth {
            Auth::DbUser(u) => request.db_user(u),
            Auth::SecretArn(s) => request.secret_arn(s),
            Auth::Iam => request,
        };
        let sent = request.send().await.map_err(|e| {
            self.err(format!(
                "BatchExecuteStatement failed: {}",
                aws_sdk_redshiftdata::error::DisplayErrorContext(e)
            ))
        })?;
        let id = sent.id().unwrap_or_default().to_string();
        let deadline = tokio::time::Instant::now() + self.target.timeout;
        let mut wait = self.polling.first;
        loop {
            let described = self
                .client
                .describe_statement()
                .id(&id)
                .send()
                .await
                .map_err(|e| {
                    self.err(format!(
                        "DescribeStatement {id} failed: {}",
                        aws_sdk_redshiftdata::error::DisplayErrorContext(e)
                    ))
                })?;
            match described.status() {
                Some(StatusString::Finished) => return Ok(id),
                Some(StatusString::Failed) | Some(StatusString::Aborted) => {
                    return Err(self.err(format!(
                        "Redshift statement {id} {}: {}",
                        described.status().map(|s| s.as_str()).unwrap_or("failed"),
                        described.error().unwrap_or("no error text")
                    )))
                }
                _ => {}
            }
            if tokio::time::Instant::now() + wait > deadline {
                let cancel = self.client.cancel_statement().id(&id).send().await;
                return Err(self.err(format!(
                    "Redshift statement {id} did not finish within {}s; cancel requested ({})",
                    self.target.timeout.as_secs(),
                    if cancel.is_ok() { "accepted" } else { "failed" }
                )));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(self.polling.max);
        }
    }
}

#[async_trait]
impl StagedWrite for StagedDataApi {
    async fn publish(self: Box<Self>) -> Result<SinkReport, SinkError> {
        let outcome = self.execute().await;
        let cleanup = delete_staging(&self.staged).await;
        let id = outcome?;
        cleanup.map_err(|e| self.err(format!("loaded, but the staging object remains: {e}")))?;
        Ok(SinkReport {
            sink: "warehouse".into(),
            target: self.target.describe(),
            summary: format!(
                "table {}: {} rows merged through the Data API (statement {id})",
                self.spec.name, self.rows
            ),
            details: SinkDetails::Warehouse {
                table: self.spec.name.clone(),
                rows: self.rows,
                changed: None,
                statement_id: Some(id),
            },
        })
    }

    async fn discard(self: Box<Self>) -> Result<(), SinkError> {
        delete_staging(&self.staged).await.map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse_and_bad_ones_say_why() {
        let t = DataApiTarget::parse("redshift-data://my-cluster/dev?db_user=awsuser&iam_role=arn:aws:iam::123456789012:role/Copy&staging=s3://b/stage/").unwrap();
        assert_eq!(t.compute, Compute::Cluster("my-cluster".into()));
        assert_eq!(t.database, "dev");
        assert_eq!(t.auth, Auth::DbUser("awsuser".into()));
        assert_eq!(t.staging, "s3://b/stage");
        let w = DataApiTarget::parse(
            "redshift-data:///dev?workgroup=wg&iam_role=arn:aws:iam::1:role/r&staging=s3://b/p",
        )
        .unwrap();
        assert_eq!(
            (w.compute, w.auth),
            (Compute::Workgroup("wg".into()), Auth::Iam)
        );
        for (bad, why) in [
            ("redshift-data://c/dev?db_user=u&staging=s3://b/p", "iam_role"),
            ("redshift-data://c/dev?db_user=u&iam_role=arn:aws:iam::1:role/r'--&staging=s3://b/p", "not an IAM role"),
            ("redshift-data://c/dev?db_user=u&iam_role=arn:aws:iam::1:role/r&staging=/tmp/x", "s3://"),
            ("redshift-data://c/?db_user=u", "database"),
        ] {
            let e = DataApiTarget::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
