//! Athena: the `CREATE EXTERNAL TABLE` for a Hudi table, and the `ALTER TABLE ... ADD PARTITION`
//! statements for partitions a run created (Athena cannot `MSCK REPAIR` Hudi tables).

use datafusion::arrow::datatypes::{DataType, SchemaRef};

use super::table::{HudiTable, TableConfig};

use super::schema::UnsupportedType;

/// The Athena (Hive DDL) type of an Arrow type, exactly: `decimal(18,2)` stays `decimal(18,2)`;
/// `None` when Athena has no exact type for it.
pub fn athena_type(ty: &DataType) -> Option<String> {
    Some(match ty {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int8 | DataType::Int16 | DataType::Int32 => "int".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "float".into(),
        DataType::Float64 => "double".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(..) => "timestamp".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        _ => return None,
    })
}

fn quote_ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// `CREATE EXTERNAL TABLE` for a Hudi copy-on-write table at `location` (an `s3://` URL).
pub fn create_table(
    config: &TableConfig,
    data: &SchemaRef,
    location: &str,
) -> Result<String, UnsupportedType> {
    let mut columns = Vec::new();
    for meta in super::schema::META_COLUMNS {
        columns.push(format!("  {} string", quote_ident(meta)));
    }
    let mut partitions = Vec::new();
    for f in data.fields() {
        let ty = athena_type(f.data_type()).ok_or_else(|| UnsupportedType {
            column: f.name().clone(),
            data_type: f.data_type().clone(),
            target: "Athena has no exact type for",
        })?;
        let line = format!("{} {ty}", quote_ident(f.name()));
        if config.partition_fields.contains(f.name()) {
            partitions.push(line);
        } else {
            columns.push(format!("  {line}"));
        }
    }
    let mut ddl = format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS {}.{} (\n{}\n)\n",
        quote_ident(&config.database),
        quote_ident(&config.name),
        columns.join(",\n")
    );
    if !partitions.is_empty() {
        ddl.push_str(&format!("PARTITIONED BY ({})\n", partitions.join(", ")));
    }
    ddl.push_str(&format!(
        "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n\
         STORED AS INPUTFORMAT 'org.apache.hudi.hadoop.HoodieParquetInputFormat'\n\
         OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat'\n\
         LOCATION {};\n",
        quote_literal(location)
    ));
    Ok(ddl)
}

/// One `ALTER TABLE ... ADD IF NOT EXISTS PARTITION` per new partition path.
pub fn add_partitions(table: &HudiTable, partitions: &[String]) -> Vec<String> {
    let c = &table.config;
    partitions
        .iter()
        .map(|path| {
            let values: Vec<String> = path
                .split('/')
                .zip(&c.partition_fields)
                .map(|(segment, field)| {
                    let value = segment
                        .strip_prefix(&format!("{field}="))
                        .unwrap_or(segment);
                    format!("{} = {}", quote_ident(field), quote_literal(value))
                })
                .collect();
            format!(
                "ALTER TABLE {}.{} ADD IF NOT EXISTS PARTITION ({}) LOCATION {};",
                quote_ident(&c.database),
                quote_ident(&c.name),
                values.join(", "),
                quote_literal(&format!("{}/{path}", table.location.url))
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    #[test]
    fn ddl_maps_types_exactly_and_partitions_separately() {
        let config = TableConfig {
            database: "default".into(),
            name: "sales".into(),
            record_key: vec!["k".into()],
            partition_fields: vec!["d".into()],
            precombine_field: "t".into(),
            hive_style: false,
        };
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("amount", DataType::Decimal128(18, 2), true),
            Field::new("d", DataType::Date32, true),
            Field::new(
                "t",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                true,
            ),
        ]));
        let ddl = create_table(&config, &schema, "s3://b/sales").unwrap();
        assert!(ddl.contains("`amount` decimal(18,2)"), "{ddl}");
        assert!(ddl.contains("PARTITIONED BY (`d` date)"), "{ddl}");
        assert!(!ddl.contains("  `d` date"), "{ddl}");
        assert!(ddl.contains("HoodieParquetInputFormat"));
        assert!(ddl.contains("LOCATION 's3://b/sales'"));
    }
}
