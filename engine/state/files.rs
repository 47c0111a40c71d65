//! `ingested_file_status`: the validated files the scheduler's preconditions read.

use chrono::{DateTime, Utc};

use super::{col, store_time, Arg, SqlDialect, StateError, StateStore};

#[derive(Debug, thiserror::Error)]
pub enum S3EventError {
    #[error("not an S3 event notification: {0}")]
    NotJson(#[source] serde_json::Error),
    #[error("not an S3 event notification: {0}")]
    Shape(&'static str),
}

/// Files from S3 event notifications (`ObjectCreated` records): their URLs and event times.
pub fn files_from_s3_event(json: &str) -> Result<Vec<(String, DateTime<Utc>)>, S3EventError> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(S3EventError::NotJson)?;
    let records = value["Records"]
        .as_array()
        .ok_or(S3EventError::Shape("no Records array"))?;
    records
        .iter()
        .map(|r| {
            let bucket = r["s3"]["bucket"]["name"]
                .as_str()
                .ok_or(S3EventError::Shape("a record has no s3.bucket.name"))?;
            let key = r["s3"]["object"]["key"]
                .as_str()
                .ok_or(S3EventError::Shape("a record has no s3.object.key"))?;
            let time = r["eventTime"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or_else(Utc::now);
            Ok((s3_object_url(bucket, key), time))
        })
        .collect()
}

/// The `s3://` URL of an object an S3 event notification names: its key arrives form-encoded
/// (`%XX` escapes, `+` for a space).
pub fn s3_object_url(bucket: &str, encoded_key: &str) -> String {
    let key = url::form_urlencoded::parse(format!("k={encoded_key}").as_bytes())
        .next()
        .map(|(_, v)| v.to_string())
        .unwrap_or_default();
    format!("s3://{bucket}/{key}")
}

impl StateStore {
    /// Records validated files: inserts or refreshes each file's validation time and status, and
    /// resets `submitted_jobs` (a new version of the file has not been submitted anywhere yet).
    pub async fn track_files(&self, files: &[(String, DateTime<Utc>)]) -> Result<u64, StateError> {
        let upsert = match self.dialect() {
            SqlDialect::MySql => {
                "INSERT INTO ingested_file_status (file_url, submitted_jobs, last_update_status, last_validated_timestamp) \
                 VALUES (?, '[]', 'VALIDATED', ?) ON DUPLICATE KEY UPDATE submitted_jobs = '[]', \
                 last_update_status = 'VALIDATED', last_validated_timestamp = VALUES(last_validated_timestamp)"
            }
            _ => {
                "INSERT INTO ingested_file_status (file_url, submitted_jobs, last_update_status, last_validated_timestamp) \
                 VALUES (?, '[]', 'VALIDATED', ?) ON CONFLICT (file_url) DO UPDATE SET submitted_jobs = '[]', \
                 last_update_status = 'VALIDATED', last_validated_timestamp = excluded.last_validated_timestamp"
            }
        };
        let mut n = 0;
        for (url, time) in files {
            n += self
                .execute(upsert, &[Arg::text(url), Arg::text(store_time(*time))])
                .await
                .map_err(|e| self.query_err(format!("cannot track {url}"), e))?
                .min(1);
        }
        Ok(n)
    }

    /// Every tracked file and when it was validated.
    pub async fn tracked_files(&self) -> Result<Vec<(String, Option<String>)>, StateError> {
        let rows = self
            .fetch_texts(
                "SELECT file_url, last_validated_timestamp FROM ingested_file_status",
                &[],
            )
            .await
            .map_err(|e| self.query_err("cannot read tracked files", e))?;
        Ok(rows
            .iter()
            .map(|r| (col(r, 0).unwrap_or_default(), col(r, 1)))
            .collect())
    }

    /// Adds `job_config_id` to the `submitted_jobs` JSON list of each file a submission used.
    pub async fn mark_submitted(
        &self,
        files: &[String],
        job_config_id: &str,
    ) -> Result<(), StateError> {
        for url in files {
            let current = self
                .fetch_texts(
                    "SELECT submitted_jobs FROM ingested_file_status WHERE file_url = ?",
                    &[Arg::text(url)],
                )
                .await
                .map_err(|e| self.query_err("cannot read submitted_jobs", e))?;
            let mut jobs: Vec<String> = current
                .first()
                .and_then(|r| col(r, 0))
                .and_then(|t| serde_json::from_str(&t).ok())
                .unwrap_or_default();
            if !jobs.iter().any(|j| j == job_config_id) {
                jobs.push(job_config_id.to_string());
            }
            let list = serde_json::Value::from(jobs).to_string();
            self.execute(
                "UPDATE ingested_file_status SET submitted_jobs = ?, last_update_status = 'SUBMITTED' WHERE file_url = ?",
                &[Arg::text(list), Arg::text(url)],
            )
            .await
            .map_err(|e| self.query_err("cannot record submitted_jobs", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_events_give_file_urls_and_times() {
        let event = r#"{"Records":[{"eventTime":"2026-03-01T10:00:00.000Z","s3":{"bucket":{"name":"pos"},"object":{"key":"validated/IL-101+v2.csv"}}}]}"#;
        let files = files_from_s3_event(event).unwrap();
        assert_eq!(files[0].0, "s3://pos/validated/IL-101 v2.csv");
        assert_eq!(store_time(files[0].1), "2026-03-01 10:00:00.000000");
        assert!(files_from_s3_event("{}")
            .unwrap_err()
            .to_string()
            .contains("Records"));
    }
}
