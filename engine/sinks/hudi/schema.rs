//! Table schemas: the five Hudi meta columns first, then the job's columns, and the Avro schema
//! text Hudi keeps in commit metadata and table properties.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use serde_json::{json, Value};

/// The meta columns every Hudi base file starts with, in order.
pub const META_COLUMNS: [&str; 5] = [
    "_hoodie_commit_time",
    "_hoodie_commit_seqno",
    "_hoodie_record_key",
    "_hoodie_partition_path",
    "_hoodie_file_name",
];

/// The base-file schema for a job's output schema: meta columns, then the data columns, all
/// nullable (Hudi's Avro unions are `["null", type]`).
pub fn table_schema(data: &SchemaRef) -> SchemaRef {
    let mut fields: Vec<Field> = META_COLUMNS
        .iter()
        .map(|n| Field::new(*n, DataType::Utf8, true))
        .collect();
    fields.extend(
        data.fields()
            .iter()
            .map(|f| Field::new(f.name(), f.data_type().clone(), true)),
    );
    Arc::new(Schema::new(fields))
}

/// A job column whose type a Hudi table (or Athena's view of it) cannot hold exactly.
#[derive(Debug, Clone, thiserror::Error)]
#[error("column `{column}` has type {data_type}, which {target}")]
pub struct UnsupportedType {
    pub column: String,
    pub data_type: DataType,
    /// Who cannot hold it, as the end of the message.
    pub target: &'static str,
}

/// Checks that a job's output can be stored as Hudi columns Athena and Spark read exactly.
pub fn check_supported(data: &SchemaRef) -> Result<(), UnsupportedType> {
    for f in data.fields() {
        avro_type(f.name(), f.data_type(), "x")?;
    }
    Ok(())
}

fn avro_type(name: &str, ty: &DataType, namespace: &str) -> Result<Value, UnsupportedType> {
    Ok(match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => json!("string"),
        DataType::Boolean => json!("boolean"),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => json!("int"),
        DataType::Int64 => json!("long"),
        DataType::Float32 => json!("float"),
        DataType::Float64 => json!("double"),
        DataType::Date32 => json!({"type": "int", "logicalType": "date"}),
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            json!({"type": "long", "logicalType": "timestamp-micros"})
        }
        DataType::Decimal128(p, s) => json!({
            "type": "fixed",
            "name": "fixed",
            "namespace": format!("{namespace}.{name}"),
            "size": decimal_bytes(*p),
            "logicalType": "decimal",
            "precision": p,
            "scale": s,
        }),
        other => {
            return Err(UnsupportedType {
                column: name.to_string(),
                data_type: other.clone(),
                target: "tally does not write to Hudi tables",
            })
        }
    })
}

/// Bytes Avro/Spark use for a fixed decimal of `precision` digits.
fn decimal_bytes(precision: u8) -> usize {
    (1..=16)
        .find(|&n| 2f64.powi(8 * n as i32 - 1) >= 10f64.powi(precision as i32))
        .unwrap_or(16)
}

/// The Avro record schema Hudi stores (`hoodie.table.create.schema`, commit `extraMetadata.schema`),
/// optionally with the meta columns first.
pub fn avro_schema(
    table: &str,
    data: &SchemaRef,
    with_meta: bool,
) -> Result<String, UnsupportedType> {
    let record = format!("{table}_record");
    let namespace = format!("hoodie.{table}");
    let mut fields = Vec::new();
    if with_meta {
        for m in META_COLUMNS {
            fields.push(json!({"name": m, "type": ["null", "string"], "doc": "", "default": null}));
        }
    }
    for f in data.fields() {
        let ty = avro_type(f.name(), f.data_type(), &format!("{namespace}.{record}"))?;
        fields.push(json!({"name": f.name(), "type": ["null", ty], "default": null}));
    }
    Ok(json!({
        "type": "record",
        "name": record,
        "namespace": namespace,
        "fields": fields,
    })
    .to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_sizes_match_spark() {
        assert_eq!(decimal_bytes(10), 5);
        assert_eq!(decimal_bytes(18), 8);
        assert_eq!(decimal_bytes(38), 16);
    }

    #[test]
    fn avro_schema_has_meta_fields_first() {
        let data = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, false),
            Field::new("v", DataType::Decimal128(18, 2), false),
        ]));
        let text = avro_schema("t", &data, true).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["fields"][0]["name"], "_hoodie_commit_time");
        assert_eq!(v["fields"][6]["type"][1]["precision"], 18);
        assert!(check_supported(&Arc::new(Schema::new(vec![Field::new(
            "l",
            DataType::List(Arc::new(Field::new("i", DataType::Int32, true))),
            true
        )])))
        .is_err());
    }
}
