//! Where data lives: one [`Location`] for a local folder, a `file://` URL or an `s3://bucket/prefix`.
//!
//! S3 is configured the way every AWS tool is: credentials from the standard chain (environment,
//! shared profiles and SSO, web identity, the EC2 instance profile on EMR), region from
//! `AWS_REGION`/profile, and an S3-compatible endpoint from `AWS_ENDPOINT_URL_S3` or
//! `AWS_ENDPOINT_URL` (plain `http://` endpoints are allowed because the URL says so).

use std::ops::Range;
use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use futures::future::BoxFuture;
use futures::FutureExt;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{CredentialProvider, ObjectMeta, ObjectStore, ObjectStoreExt};
use url::Url;

/// Asks the kernel to start writing a local file's dirty pages to disk (`sync_file_range` with
/// `SYNC_FILE_RANGE_WRITE`): the writes start, none is waited for. It changes nothing about
/// durability: a later `fsync` still waits for every page, only finds most already written.
/// A descriptor that is not open makes the call fail, which is ignored. Nothing is done off Linux.
#[cfg(unix)]
pub fn start_disk_write(fd: std::os::fd::RawFd) {
    #[cfg(target_os = "linux")]
    // SAFETY: sync_file_range reads none of our memory; a bad descriptor is an error return.
    unsafe {
        libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE)
    };
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Object metadata key under which `validate` records the raw file's time on S3, where an
/// object's own time cannot be set (locally the file's modification time is set instead).
pub const SOURCE_TIME_METADATA: &str = "tally-source-time";

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("`{0}` is not a local path, file:// or s3:// URL")]
    Unsupported(String),
    #[error("local folder {path} is not usable: {cause}")]
    Local { path: String, cause: std::io::Error },
    #[error("cannot set up S3 access for {url}: {cause}")]
    S3Setup {
        url: String,
        cause: object_store::Error,
    },
    #[error("{operation} {url}: {cause}")]
    Io {
        operation: &'static str,
        url: String,
        cause: object_store::Error,
    },
    #[error("cannot list {url}: {}", aws_sdk_s3::error::DisplayErrorContext(.cause.as_ref()))]
    S3List {
        url: String,
        /// Boxed: the SDK's error is large, and every storage result would carry its size.
        #[source]
        cause: Box<
            aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error>,
        >,
    },
}

/// A folder in some object store: the store, the prefix inside it, and how to name things in it.
#[derive(Debug, Clone)]
pub struct Location {
    pub store: Arc<dyn ObjectStore>,
    /// Prefix of this folder inside `store` (empty for local folders: the store is rooted there).
    pub prefix: Path,
    /// Display form used in messages and lineage columns (`file:///abs/dir` or `s3://b/p`).
    pub url: String,
    /// The folder on disk, for local locations.
    pub local_root: Option<PathBuf>,
    /// How an S3 folder is listed (see [`Location::list_files`]).
    s3_lister: Option<S3Lister>,
}

/// Lists an S3 folder with the AWS SDK rather than object_store: object_store fails a whole
/// listing page when one key cannot be an object path (`raw//x`, a control character), and
/// one odd upload must not hide a province's other files.
#[derive(Debug, Clone)]
struct S3Lister {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Lister {
    /// The files directly under `prefix` (no sub-folders), skipping keys object_store cannot
    /// name with a warning, so the rest of the folder still lists.
    async fn list(&self, prefix: &Path, url: &str) -> Result<Vec<FileEntry>, StorageError> {
        let folder = if prefix.as_ref().is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&folder)
            .delimiter("/")
            // Keys come back percent-encoded: a control character is not valid XML 1.0, and
            // S3 returns it raw (an unreadable page) unless asked to encode.
            .encoding_type(aws_sdk_s3::types::EncodingType::Url)
            .into_paginator()
            .send();
        let mut files = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|cause| StorageError::S3List {
                url: url.to_string(),
                cause: Box::new(cause),
            })?;
            for object in page.contents() {
                let Some(key) = object.key().map(decode_listed_key) else {
                    continue;
                };
                let key = key.as_str();
                let Some(name) = key.strip_prefix(&folder).filter(|n| !n.is_empty()) else {
                    continue;
                };
                if !nameable(key, name) {
                    tracing::warn!(
                        file = %format!("s3://{}/{}", self.bucket, key.escape_debug()),
                        "skipped an object whose key cannot be an object path (control characters, empty or reserved segments)"
                    );
                    continue;
                }
                let last_modified = object
                    .last_modified()
                    .and_then(|t| DateTime::<Utc>::from_timestamp(t.secs(), t.subsec_nanos()))
                    .unwrap_or_default();
                files.push(FileEntry {
                    name: name.to_string(),
                    path: Path::from(key),
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                    last_modified,
                });
            }
        }
        Ok(files)
    }
}

/// Whether an object path (`path`, ending in the file `name`) can be named by object_store and
/// read by a job: no control characters, no empty or reserved segments. Listings skip the rest.
fn nameable(path: &str, name: &str) -> bool {
    !path.chars().any(char::is_control)
        && Path::parse(path).is_ok_and(|p| p.filename() == Some(name))
}

/// The files directly in a local folder; see [`Location::list_files`].
fn list_local_files(root: &FsPath) -> Result<Vec<FileEntry>, StorageError> {
    let entries = std::fs::read_dir(root).map_err(|cause| StorageError::Local {
        path: root.display().to_string(),
        cause,
    })?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(folder = %root.display(), error = %e, "skipped an entry that cannot be read");
                continue;
            }
        };
        let shown = entry.path().display().to_string();
        let Ok(name) = entry.file_name().into_string() else {
            tracing::warn!(file = %shown, "skipped a file whose name is not UTF-8");
            continue;
        };
        let metadata = match std::fs::metadata(entry.path()) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(file = %shown, error = %e, "skipped a file that cannot be read (a broken link?)");
                continue;
            }
        };
        if !metadata.is_file() {
            continue;
        }
        // object_store's own temporary files while it writes (`name#123`).
        if name
            .rsplit_once('#')
            .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if !nameable(&name, &name) {
            tracing::warn!(file = %shown, "skipped a file whose name cannot be an object path (control characters or reserved forms)");
            continue;
        }
        let last_modified = metadata
            .modified()
            .map(DateTime::<Utc>::from)
            .map_err(|cause| StorageError::Local {
                path: shown.clone(),
                cause,
            })?;
        files.push(FileEntry {
            path: Path::from(name.as_str()),
            name,
            size: metadata.len(),
            last_modified,
        });
    }
    files.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(files)
}

/// One file found in a [`Location`].
#[derive(Debug, Clone)]
pub struct FileEntry {
    pub name: String,
    pub path: Path,
    pub size: u64,
    pub last_modified: DateTime<Utc>,
}

impl Location {
    /// Opens a location for reading: it must exist.
    pub async fn open(spec: &str) -> Result<Location, StorageError> {
        Self::resolve(spec, false).await
    }

    /// Opens a location for writing, creating a local folder when missing.
    pub async fn create(spec: &str) -> Result<Location, StorageError> {
        Self::resolve(spec, true).await
    }

    async fn resolve(spec: &str, create: bool) -> Result<Location, StorageError> {
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(StorageError::Unsupported(spec.to_string()));
            }
            let (store, s3_lister) = s3_store(bucket, spec).await?;
            let prefix = Path::from(prefix.trim_end_matches('/'));
            let url = format!("s3://{bucket}/{prefix}");
            return Ok(Location {
                store,
                prefix,
                url: url.trim_end_matches('/').to_string(),
                local_root: None,
                s3_lister: Some(s3_lister),
            });
        }
        let local: PathBuf = if spec.starts_with("file://") {
            Url::parse(spec)
                .ok()
                .and_then(|u| u.to_file_path().ok())
                .ok_or_else(|| StorageError::Unsupported(spec.to_string()))?
        } else if spec.contains("://") {
            return Err(StorageError::Unsupported(spec.to_string()));
        } else {
            PathBuf::from(spec)
        };
        let local_err = |cause| StorageError::Local {
            path: local.display().to_string(),
            cause,
        };
        if create {
            std::fs::create_dir_all(&local).map_err(local_err)?;
        }
        let root = std::fs::canonicalize(&local).map_err(local_err)?;
        if !root.is_dir() {
            return Err(local_err(std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                "not a folder",
            )));
        }
        let store = LocalFileSystem::new_with_prefix(&root).map_err(|e| StorageError::Local {
            path: root.display().to_string(),
            cause: std::io::Error::other(e),
        })?;
        Ok(Location {
            store: Arc::new(store),
            prefix: Path::default(),
            url: Url::from_directory_path(&root)
                .map(|u| u.to_string().trim_end_matches('/').to_string())
                .unwrap_or_else(|_| root.display().to_string()),
            local_root: Some(root),
            s3_lister: None,
        })
    }

    /// A location over a store built elsewhere (an in-memory store in tests, say), listed
    /// through object_store.
    pub fn from_store(store: Arc<dyn ObjectStore>, url: &str) -> Location {
        Location {
            store,
            prefix: Path::default(),
            url: url.to_string(),
            local_root: None,
            s3_lister: None,
        }
    }

    /// The path of a file inside this folder; `name` may hold sub-folders (`a/b.csv`).
    pub fn child(&self, name: &str) -> Path {
        if self.prefix.as_ref().is_empty() {
            Path::from(name)
        } else {
            Path::from(format!("{}/{name}", self.prefix))
        }
    }

    /// Display URL of a file name inside this folder.
    pub fn child_url(&self, name: &str) -> String {
        format!("{}/{}", self.url, name)
    }

    /// The on-disk path of a file, for local locations.
    pub fn local_path(&self, name: &str) -> Option<PathBuf> {
        self.local_root.as_ref().map(|r| r.join(name))
    }

    /// Lists the files directly in this folder (not in sub-folders), sorted by name. Local
    /// entries that cannot be files of a job (names that are not UTF-8, hold control characters
    /// or are not a valid object path, broken links) are skipped with a warning naming them,
    /// rather than failing the whole folder.
    pub async fn list_files(&self) -> Result<Vec<FileEntry>, StorageError> {
        if let Some(root) = &self.local_root {
            let root = root.clone();
            return tokio::task::spawn_blocking(move || list_local_files(&root))
                .await
                .map_err(|e| StorageError::Local {
                    path: self.url.clone(),
                    cause: std::io::Error::other(e),
                })?;
        }
        let mut files = match &self.s3_lister {
            Some(lister) => lister.list(&self.prefix, &self.url).await?,
            None => self.list_with_object_store().await?,
        };
        files.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(files)
    }

    /// Lists through object_store: for stores built by hand (tests, in-memory stores).
    async fn list_with_object_store(&self) -> Result<Vec<FileEntry>, StorageError> {
        let prefix = (!self.prefix.as_ref().is_empty()).then_some(&self.prefix);
        let listing = self
            .store
            .list_with_delimiter(prefix)
            .await
            .map_err(|cause| StorageError::Io {
                operation: "cannot list",
                url: self.url.clone(),
                cause,
            })?;
        Ok(listing
            .objects
            .into_iter()
            .filter_map(|meta: ObjectMeta| {
                Some(FileEntry {
                    name: meta.location.filename()?.to_string(),
                    size: meta.size,
                    last_modified: meta.last_modified,
                    path: meta.location,
                })
            })
            .collect())
    }

    /// The time the data of `file` was produced: the `tally-source-time` metadata `validate` put on
    /// S3 objects, or else the object's own time (which `validate` sets on local files).
    pub async fn source_time(&self, file: &FileEntry) -> Result<DateTime<Utc>, StorageError> {
        if self.local_root.is_some() {
            return Ok(file.last_modified);
        }
        let head = self
            .store
            .get_opts(
                &file.path,
                object_store::GetOptions {
                    head: true,
                    ..Default::default()
                },
            )
            .await
            .map_err(|cause| StorageError::Io {
                operation: "cannot read metadata of",
                url: self.child_url(&file.name),
                cause,
            })?;
        let recorded = head
            .attributes
            .get(&object_store::Attribute::Metadata(
                SOURCE_TIME_METADATA.into(),
            ))
            .and_then(|v| DateTime::parse_from_rfc3339(v.as_ref()).ok())
            .map(|t| t.with_timezone(&Utc));
        Ok(recorded.unwrap_or(file.last_modified))
    }

    /// Deletes a file if it exists.
    pub async fn delete_if_exists(&self, name: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.child(name)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(cause) => Err(StorageError::Io {
                operation: "cannot delete",
                url: self.child_url(name),
                cause,
            }),
        }
    }
}

/// Byte-range reads of one Parquet object, for the Arrow Parquet reader.
pub struct ObjectFileReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    size: u64,
}

impl ObjectFileReader {
    pub fn new(store: Arc<dyn ObjectStore>, path: Path, size: u64) -> ObjectFileReader {
        ObjectFileReader { store, path, size }
    }
}

fn parquet_error(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectFileReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(parquet_error)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        _options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        async move {
            let size = self.size;
            let metadata = ParquetMetaDataReader::new()
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(metadata))
        }
        .boxed()
    }
}

/// A key from a listing made with `encoding-type=url`: form-encoded, `+` for a space.
fn decode_listed_key(encoded: &str) -> String {
    let spaced = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&spaced)
        .decode_utf8_lossy()
        .into_owned()
}

/// Sets a local file's modification time (how `validate` carries a raw file's time forward).
pub fn set_local_mtime(path: &FsPath, time: DateTime<Utc>) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new().write(true).open(path)?;
    file.set_modified(SystemTime::from(time))
}

/// The S3 endpoint to use, if not AWS's own: `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`.
pub fn s3_endpoint_from_env() -> Option<String> {
    ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]
        .iter()
        .filter_map(|k| std::env::var(k).ok())
        .find(|v| !v.trim().is_empty())
}

/// The object store for a bucket, and the SDK client that lists it, on one credential chain.
async fn s3_store(
    bucket: &str,
    url: &str,
) -> Result<(Arc<dyn ObjectStore>, S3Lister), StorageError> {
    let sdk = crate::aws::config_loader().load().await;
    let mut s3_config = aws_sdk_s3::config::Builder::from(&sdk);
    if sdk.region().is_none() {
        s3_config = s3_config.region(aws_config::Region::from_static("us-east-1"));
    }
    if let Some(endpoint) = s3_endpoint_from_env() {
        // S3-compatible servers are addressed by path, as object_store does for them.
        s3_config = s3_config.endpoint_url(endpoint).force_path_style(true);
    }
    let lister = S3Lister {
        client: aws_sdk_s3::Client::from_conf(s3_config.build()),
        bucket: bucket.to_string(),
    };
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
    let region = sdk
        .region()
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".to_string());
    builder = builder.with_region(region);
    if let Some(endpoint) = s3_endpoint_from_env() {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    if let Some(provider) = sdk.credentials_provider() {
        builder = builder.with_credentials(Arc::new(SdkCredentials(provider)));
    }
    let store = builder.build().map_err(|cause| StorageError::S3Setup {
        url: url.to_string(),
        cause,
    })?;
    Ok((Arc::new(store), lister))
}

/// Bridges the AWS SDK's credential chain (profiles, SSO, instance profile, ...) to object_store.
#[derive(Debug)]
struct SdkCredentials(aws_credential_types::provider::SharedCredentialsProvider);

#[async_trait::async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        use aws_credential_types::provider::ProvideCredentials;
        let creds =
            self.0
                .provide_credentials()
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                })?;
        Ok(Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_keys_are_decoded_as_s3_encodes_them() {
        assert_eq!(decode_listed_key("raw/WI-9%019.csv"), "raw/WI-9\u{1}9.csv");
        assert_eq!(decode_listed_key("raw/a+b%2Bc.csv"), "raw/a b+c.csv");
        assert_eq!(decode_listed_key("raw/plain.csv"), "raw/plain.csv");
    }

    #[tokio::test]
    async fn local_paths_and_file_urls_resolve_to_the_same_folder() {
        let dir = tempfile::tempdir().unwrap();
        let a = Location::open(dir.path().to_str().unwrap()).await.unwrap();
        let url = Url::from_directory_path(dir.path()).unwrap().to_string();
        let b = Location::open(&url).await.unwrap();
        assert_eq!(a.local_root, b.local_root);
        assert!(a.url.starts_with("file:///"));
    }

    #[tokio::test]
    async fn children_in_sub_folders_are_nested_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut location = Location::open(dir.path().to_str().unwrap()).await.unwrap();
        assert_eq!(location.child("a/b.csv").as_ref(), "a/b.csv");
        location.prefix = Path::from("base/x");
        assert_eq!(
            location.child("_quarantine/b.csv").as_ref(),
            "base/x/_quarantine/b.csv"
        );
        assert_eq!(location.child("b.csv").parts().count(), 3);
    }

    #[tokio::test]
    async fn missing_folders_and_odd_schemes_are_refused() {
        assert!(Location::open("/definitely/not/here").await.is_err());
        let err = Location::open("gs://bucket/x")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a local path"), "{err}");
    }
}
