//! Opening the table a job writes: created from the job's declaration on the first write,
//! checked against it afterwards (record key, partition fields, precombine field), and refused
//! when it uses Hudi features tally does not maintain. Also the data schema and the Avro schema
//! text the next commit carries, both taken from the table's latest commit when it has one.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use object_store::ObjectStoreExt;

use super::commit::latest_commit;
use super::schema::{avro_schema, META_COLUMNS};
use super::table::{HudiTable, TableConfig, TableError, HOODIE_DIR};
use super::timeline::{BaseFile, Timeline};
use crate::sinks::JobRows;
use crate::storage::Location;

/// The table configuration a job declares.
pub fn job_table_config(rows: &JobRows<'_>, database: &str) -> TableConfig {
    TableConfig {
        database: database.to_string(),
        name: rows.job.sinks.hudi_table.clone(),
        record_key: rows.job.output.record_key.clone(),
        partition_fields: vec![rows.job.output.partition_field.clone()],
        precombine_field: rows.job.output.precombine_field.clone(),
        hive_style: rows.job.sinks.hive_style_partitioning,
    }
}

/// Opens the table at `url`, creating it from the job's declaration when there is none, and
/// checks that an existing table is keyed the way the job says.
pub async fn open_or_create(
    url: &str,
    wanted: &TableConfig,
    data_schema: &SchemaRef,
) -> Result<HudiTable, TableError> {
    let location = Location::create(url)
        .await
        .map_err(|e| TableError::Storage {
            url: url.to_string(),
            message: e.to_string(),
        })?;
    let table = match HudiTable::open(&location).await? {
        Some(t) => t,
        None => {
            super::schema::check_supported(data_schema).map_err(|e| TableError::Data {
                url: location.url.clone(),
                message: e.to_string(),
            })?;
            let schema =
                avro_schema(&wanted.name, data_schema, false).map_err(|e| TableError::Data {
                    url: location.url.clone(),
                    message: e.to_string(),
                })?;
            return HudiTable::create(&location, wanted.clone(), &schema).await;
        }
    };
    let c = &table.config;
    let checks: [(&'static str, String, String); 3] = [
        (
            "record key",
            wanted.record_key.join(","),
            c.record_key.join(","),
        ),
        (
            "partition fields",
            wanted.partition_fields.join(","),
            c.partition_fields.join(","),
        ),
        (
            "precombine field",
            wanted.precombine_field.clone(),
            c.precombine_field.clone(),
        ),
    ];
    for (what, job, have) in checks {
        if job != have {
            return Err(TableError::Mismatch {
                url: table.location.url.clone(),
                what,
                job,
                table: have,
            });
        }
    }
    Ok(table)
}

/// Hudi's metadata table indexes every file of the table; a write that does not update it would
/// leave readers that use it (Spark, Athena with it enabled) seeing a stale file list.
pub async fn refuse_metadata_table(table: &HudiTable) -> Result<(), TableError> {
    let enabled = table
        .properties
        .get("hoodie.table.metadata.partitions")
        .is_some_and(|p| !p.trim().is_empty())
        || table
            .get(&format!(
                "{HOODIE_DIR}/metadata/{HOODIE_DIR}/hoodie.properties"
            ))
            .await?
            .is_some();
    if enabled {
        return Err(TableError::Unsupported {
            url: table.location.url.clone(),
            message: "the table has Hudi's metadata table (.hoodie/metadata), which tally does not \
                      maintain; disable it with Hudi (hoodie.metadata.enable=false, which removes it) \
                      before writing with tally"
                .into(),
        });
    }
    Ok(())
}

/// The data columns (no meta columns) of the table's latest base files, if it has any.
pub async fn existing_data_schema(
    table: &HudiTable,
    timeline: &Timeline,
) -> Result<Option<SchemaRef>, TableError> {
    let Some(latest) = latest_commit(table, timeline).await? else {
        return Ok(None);
    };
    let Some(path) = latest.any_file().map(str::to_string) else {
        return Ok(None);
    };
    let (partition, name) = path.rsplit_once('/').unwrap_or(("", &path));
    let size = table
        .location
        .store
        .head(&table.path(&path))
        .await
        .map(|m| m.size);
    let Ok(size) = size else { return Ok(None) };
    let Some(file) = BaseFile::parse(partition, name, size) else {
        return Ok(None);
    };
    let reader = crate::storage::ObjectFileReader::new(
        table.location.store.clone(),
        table.path(&file.relative_path()),
        file.size,
    );
    let builder = datafusion::parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
        .await
        .map_err(|e| TableError::Storage {
            url: table.location.url.clone(),
            message: format!("cannot read the schema of {path}: {e}"),
        })?;
    let fields: Vec<Field> = builder
        .schema()
        .fields()
        .iter()
        .filter(|f| !META_COLUMNS.contains(&f.name().as_str()))
        .map(|f| Field::new(f.name(), f.data_type().clone(), true))
        .collect();
    Ok(Some(Arc::new(Schema::new(fields))))
}

/// The schema text for the commit: the one the table's last commit carried (so a Spark-written
/// table keeps its own), else the job's.
pub async fn commit_schema(
    table: &HudiTable,
    timeline: &Timeline,
    data: &SchemaRef,
) -> Result<String, TableError> {
    if let Some(schema) = latest_commit(table, timeline)
        .await?
        .and_then(|c| c.schema().map(str::to_string))
    {
        return Ok(schema);
    }
    avro_schema(&table.config.name, data, false).map_err(|e| table.data_err(e))
}
