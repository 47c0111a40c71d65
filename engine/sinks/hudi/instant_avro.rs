//! The Avro bodies of `.rollback` and `.clean` instants, as Hudi (table version 6) writes them:
//! Avro object container files of `HoodieRollbackPlan` / `HoodieRollbackMetadata` and
//! `HoodieCleanerPlan` / `HoodieCleanMetadata` (namespace `org.apache.hudi.avro.model`). The schema
//! travels in each file, so Hudi's readers resolve it against their own.

use std::collections::{BTreeMap, HashMap};

use apache_avro::types::Value;
use apache_avro::{Schema, Writer};

const INSTANT_INFO: &str = r#"{"type":"record","name":"HoodieInstantInfo","namespace":"org.apache.hudi.avro.model",
 "fields":[{"name":"commitTime","type":"string"},{"name":"action","type":"string"}]}"#;

fn rollback_plan_schema() -> String {
    format!(
        r#"{{"type":"record","name":"HoodieRollbackPlan","namespace":"org.apache.hudi.avro.model","fields":[
  {{"name":"instantToRollback","type":["null",{INSTANT_INFO}],"default":null}},
  {{"name":"RollbackRequests","type":["null",{{"type":"array","items":{{"type":"record","name":"HoodieRollbackRequest","fields":[
    {{"name":"partitionPath","type":"string"}},
    {{"name":"fileId","type":["null","string"],"default":null}},
    {{"name":"latestBaseInstant","type":["null","string"],"default":null}},
    {{"name":"filesToBeDeleted","type":{{"type":"array","items":"string"}},"default":[]}},
    {{"name":"logBlocksToBeDeleted","type":["null",{{"type":"map","values":"long"}}],"default":null}}]}}}}],"default":null}},
  {{"name":"version","type":["int","null"],"default":1}}]}}"#
    )
}

fn rollback_metadata_schema() -> String {
    format!(
        r#"{{"type":"record","name":"HoodieRollbackMetadata","namespace":"org.apache.hudi.avro.model","fields":[
  {{"name":"startRollbackTime","type":"string"}},
  {{"name":"timeTakenInMillis","type":"long"}},
  {{"name":"totalFilesDeleted","type":"int"}},
  {{"name":"commitsRollback","type":{{"type":"array","items":"string"}}}},
  {{"name":"partitionMetadata","type":{{"type":"map","values":{{"type":"record","name":"HoodieRollbackPartitionMetadata","fields":[
    {{"name":"partitionPath","type":"string"}},
    {{"name":"successDeleteFiles","type":{{"type":"array","items":"string"}}}},
    {{"name":"failedDeleteFiles","type":{{"type":"array","items":"string"}}}},
    {{"name":"rollbackLogFiles","type":["null",{{"type":"map","values":"long"}}],"default":null}},
    {{"name":"writtenLogFiles","type":["null",{{"type":"map","values":"long"}}],"default":null}}]}}}}}},
  {{"name":"version","type":["int","null"],"default":1}},
  {{"name":"instantsRollback","type":{{"type":"array","items":{INSTANT_INFO}}},"default":[]}}]}}"#
    )
}

const CLEANER_PLAN: &str = r#"{"type":"record","name":"HoodieCleanerPlan","namespace":"org.apache.hudi.avro.model","fields":[
  {"name":"earliestInstantToRetain","type":["null",{"type":"record","name":"HoodieActionInstant","fields":[
    {"name":"timestamp","type":"string"},{"name":"action","type":"string"},{"name":"state","type":"string"}]}],"default":null},
  {"name":"policy","type":"string"},
  {"name":"filesToBeDeletedPerPartition","type":["null",{"type":"map","values":{"type":"array","items":"string"}}],"default":null},
  {"name":"version","type":["int","null"],"default":1},
  {"name":"filePathsToBeDeletedPerPartition","type":["null",{"type":"map","values":{"type":"array","items":{"type":"record","name":"HoodieCleanFileInfo","fields":[
    {"name":"filePath","type":["null","string"],"default":null},
    {"name":"isBootstrapBaseFile","type":["null","boolean"],"default":null}]}}}],"default":null},
  {"name":"partitionsToBeDeleted","type":["null",{"type":"array","items":"string"}],"default":null}]}"#;

const CLEAN_METADATA: &str = r#"{"type":"record","name":"HoodieCleanMetadata","namespace":"org.apache.hudi.avro.model","fields":[
  {"name":"policy","type":"string","default":""},
  {"name":"startCleanTime","type":"string"},
  {"name":"timeTakenInMillis","type":"long"},
  {"name":"totalFilesDeleted","type":"int"},
  {"name":"earliestCommitToRetain","type":"string"},
  {"name":"lastCompletedCommitTimestamp","type":"string","default":""},
  {"name":"partitionMetadata","type":{"type":"map","values":{"type":"record","name":"HoodieCleanPartitionMetadata","fields":[
    {"name":"partitionPath","type":"string"},
    {"name":"policy","type":"string"},
    {"name":"deletePathPatterns","type":{"type":"array","items":"string"}},
    {"name":"successDeleteFiles","type":{"type":"array","items":"string"}},
    {"name":"failedDeleteFiles","type":{"type":"array","items":"string"}},
    {"name":"isPartitionDeleted","type":["null","boolean"],"default":null}]}}},
  {"name":"version","type":["int","null"],"default":1},
  {"name":"bootstrapPartitionMetadata","type":["null",{"type":"map","values":"HoodieCleanPartitionMetadata"}],"default":null}]}"#;

/// The cleaning policy tally follows (Hudi's name for it).
pub const CLEAN_POLICY: &str = "KEEP_LATEST_COMMITS";

#[derive(Debug, thiserror::Error)]
#[error("cannot encode the {what} instant: {source}")]
pub struct AvroError {
    what: &'static str,
    #[source]
    source: Box<apache_avro::Error>,
}

fn container(what: &'static str, schema: &str, record: Value) -> Result<Vec<u8>, AvroError> {
    let fail = |source| AvroError {
        what,
        source: Box::new(source),
    };
    let schema = Schema::parse_str(schema).map_err(fail)?;
    let mut writer = Writer::new(&schema, Vec::new()).map_err(fail)?;
    writer.append_value(record).map_err(fail)?;
    writer.into_inner().map_err(fail)
}

fn string(s: &str) -> Value {
    Value::String(s.to_string())
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().map(|s| string(s)).collect())
}

fn record(fields: Vec<(&str, Value)>) -> Value {
    Value::Record(
        fields
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
    )
}

fn null(index: u32) -> Value {
    Value::Union(index, Box::new(Value::Null))
}

fn some(index: u32, value: Value) -> Value {
    Value::Union(index, Box::new(value))
}

fn instant_info(time: &str) -> Value {
    record(vec![
        ("commitTime", string(time)),
        ("action", string("commit")),
    ])
}

/// Files deleted (or to delete) per partition: partition path → full file paths.
pub type FilesByPartition = BTreeMap<String, Vec<String>>;

/// `<time>.rollback.requested`: the plan to roll back commit `target`.
pub fn rollback_plan(target: &str, files: &FilesByPartition) -> Result<Vec<u8>, AvroError> {
    let requests: Vec<Value> = files
        .iter()
        .map(|(partition, paths)| {
            record(vec![
                ("partitionPath", string(partition)),
                ("fileId", null(0)),
                ("latestBaseInstant", null(0)),
                ("filesToBeDeleted", strings(paths)),
                ("logBlocksToBeDeleted", null(0)),
            ])
        })
        .collect();
    container(
        "rollback plan",
        &rollback_plan_schema(),
        record(vec![
            ("instantToRollback", some(1, instant_info(target))),
            ("RollbackRequests", some(1, Value::Array(requests))),
            ("version", some(0, Value::Int(1))),
        ]),
    )
}

/// `<time>.rollback`: what rolling back commit `target` deleted.
pub fn rollback_metadata(
    time: &str,
    target: &str,
    took_ms: i64,
    deleted: &FilesByPartition,
) -> Result<Vec<u8>, AvroError> {
    let total: usize = deleted.values().map(Vec::len).sum();
    let partitions: HashMap<String, Value> = deleted
        .iter()
        .map(|(partition, paths)| {
            (
                partition.clone(),
                record(vec![
                    ("partitionPath", string(partition)),
                    ("successDeleteFiles", strings(paths)),
                    ("failedDeleteFiles", Value::Array(vec![])),
                    ("rollbackLogFiles", null(0)),
                    ("writtenLogFiles", null(0)),
                ]),
            )
        })
        .collect();
    container(
        "rollback",
        &rollback_metadata_schema(),
        record(vec![
            ("startRollbackTime", string(time)),
            ("timeTakenInMillis", Value::Long(took_ms)),
            ("totalFilesDeleted", Value::Int(total as i32)),
            ("commitsRollback", strings(&[target.to_string()])),
            ("partitionMetadata", Value::Map(partitions)),
            ("version", some(0, Value::Int(1))),
            ("instantsRollback", Value::Array(vec![instant_info(target)])),
        ]),
    )
}

/// `<time>.clean.requested` (and `.clean.inflight`): files to delete, keeping every slice a
/// snapshot at or after `earliest_retained` can read.
pub fn cleaner_plan(
    earliest_retained: &str,
    files: &FilesByPartition,
) -> Result<Vec<u8>, AvroError> {
    let per_partition: HashMap<String, Value> = files
        .iter()
        .map(|(partition, paths)| {
            let infos = paths
                .iter()
                .map(|p| {
                    record(vec![
                        ("filePath", some(1, string(p))),
                        ("isBootstrapBaseFile", some(1, Value::Boolean(false))),
                    ])
                })
                .collect();
            (partition.clone(), Value::Array(infos))
        })
        .collect();
    container(
        "clean plan",
        CLEANER_PLAN,
        record(vec![
            (
                "earliestInstantToRetain",
                some(
                    1,
                    record(vec![
                        ("timestamp", string(earliest_retained)),
                        ("action", string("commit")),
                        ("state", string("COMPLETED")),
                    ]),
                ),
            ),
            ("policy", string(CLEAN_POLICY)),
            ("filesToBeDeletedPerPartition", null(0)),
            ("version", some(0, Value::Int(2))),
            (
                "filePathsToBeDeletedPerPartition",
                some(1, Value::Map(per_partition)),
            ),
            ("partitionsToBeDeleted", some(1, Value::Array(vec![]))),
        ]),
    )
}

/// `<time>.clean`: what a clean deleted (file names per partition, as Hudi records them).
pub fn clean_metadata(
    time: &str,
    earliest_retained: &str,
    last_completed_commit: &str,
    took_ms: i64,
    deleted_names: &FilesByPartition,
) -> Result<Vec<u8>, AvroError> {
    let total: usize = deleted_names.values().map(Vec::len).sum();
    let partitions: HashMap<String, Value> = deleted_names
        .iter()
        .map(|(partition, names)| {
            (
                partition.clone(),
                record(vec![
                    ("partitionPath", string(partition)),
                    ("policy", string(CLEAN_POLICY)),
                    ("deletePathPatterns", strings(names)),
                    ("successDeleteFiles", strings(names)),
                    ("failedDeleteFiles", Value::Array(vec![])),
                    ("isPartitionDeleted", some(1, Value::Boolean(false))),
                ]),
            )
        })
        .collect();
    container(
        "clean",
        CLEAN_METADATA,
        record(vec![
            ("policy", string(CLEAN_POLICY)),
            ("startCleanTime", string(time)),
            ("timeTakenInMillis", Value::Long(took_ms)),
            ("totalFilesDeleted", Value::Int(total as i32)),
            ("earliestCommitToRetain", string(earliest_retained)),
            (
                "lastCompletedCommitTimestamp",
                string(last_completed_commit),
            ),
            ("partitionMetadata", Value::Map(partitions)),
            ("version", some(0, Value::Int(2))),
            ("bootstrapPartitionMetadata", null(0)),
        ]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::Reader;

    fn read_back(bytes: &[u8]) -> Vec<(String, Value)> {
        let reader = Reader::new(bytes).unwrap();
        assert!(reader.writer_schema().name().is_some());
        let mut records = reader.map(|r| r.unwrap()).collect::<Vec<_>>();
        assert_eq!(records.len(), 1);
        match records.remove(0) {
            Value::Record(fields) => fields,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn instants_encode_and_read_back() {
        let files: FilesByPartition = [(
            "2026-03-01".to_string(),
            vec!["file:/t/2026-03-01/a_0-0-0_20260301000000000.parquet".to_string()],
        )]
        .into();
        let plan = read_back(&rollback_plan("20260301000000000", &files).unwrap());
        assert_eq!(plan[0].0, "instantToRollback");
        let done = read_back(
            &rollback_metadata("20260301000001000", "20260301000000000", 5, &files).unwrap(),
        );
        assert_eq!(done[2], ("totalFilesDeleted".to_string(), Value::Int(1)));
        let clean = read_back(&cleaner_plan("20260301000000000", &files).unwrap());
        assert_eq!(clean[1], ("policy".to_string(), string(CLEAN_POLICY)));
        let cleaned = read_back(
            &clean_metadata(
                "20260301000002000",
                "20260301000000000",
                "20260301000001000",
                3,
                &files,
            )
            .unwrap(),
        );
        assert_eq!(
            cleaned[4],
            (
                "earliestCommitToRetain".to_string(),
                string("20260301000000000")
            )
        );
    }
}
