//! The warehouse table and the SQL that upserts into it, per dialect.
//!
//! Every dialect implements the same rule: one row per record key; an incoming row replaces the
//! stored one only when its precombine value (the source time) is newer or equal *and* some
//! column differs, so rerunning the same inputs changes nothing (not even `updated_at`).
//! Identifiers are quoted and values are always bound or bulk-loaded: no SQL is built from data.

use datafusion::arrow::datatypes::{DataType, SchemaRef};

/// The SQL flavours tally writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Redshift,
}

/// A warehouse table derived from a job: its columns (the job's output plus `updated_at`), key
/// and precombine column.
#[derive(Debug, Clone)]
pub struct TableSpec {
    pub name: String,
    /// Job output columns, in order, with their Arrow types.
    pub columns: Vec<(String, DataType)>,
    pub key: Vec<String>,
    pub precombine: String,
    /// Leading sort column for Redshift (the job's partition field).
    pub sort_first: String,
}

/// Why a job's rows cannot make a warehouse table.
#[derive(Debug, thiserror::Error)]
pub enum TableError {
    #[error("the job's rows have no column `{0}`")]
    MissingColumn(String),
    #[error("the job's rows may not have a column named `{UPDATED_AT}`: tally sets it")]
    ReservedColumn,
    #[error("no {dialect:?} column type for {ty}")]
    UnsupportedType { dialect: Dialect, ty: DataType },
}

pub const UPDATED_AT: &str = "updated_at";
pub const STAGING: &str = "tally_staging";

/// A multi-row `INSERT`: `head`, then `VALUES` with each row's bound values followed by
/// `row_end`, then `tail` (a conflict clause or nothing).
#[derive(Debug, Clone)]
pub struct RowsInsert {
    pub head: String,
    pub row_end: String,
    pub tail: String,
}

/// Quotes an identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

impl TableSpec {
    pub fn new(
        name: &str,
        schema: &SchemaRef,
        key: &[String],
        precombine: &str,
        sort_first: &str,
    ) -> Result<TableSpec, TableError> {
        let columns: Vec<(String, DataType)> = schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect();
        for k in key.iter().chain([&precombine.to_string()]) {
            if !columns.iter().any(|(c, _)| c == k) {
                return Err(TableError::MissingColumn(k.clone()));
            }
        }
        if columns.iter().any(|(c, _)| c == UPDATED_AT) {
            return Err(TableError::ReservedColumn);
        }
        Ok(TableSpec {
            name: name.to_string(),
            columns,
            key: key.to_vec(),
            precombine: precombine.to_string(),
            sort_first: sort_first.to_string(),
        })
    }

    /// The column type of an Arrow type in `dialect`.
    pub fn column_type(&self, dialect: Dialect, ty: &DataType) -> Result<String, TableError> {
        Ok(match (dialect, ty) {
            // SQLite has no exact decimal type: NUMERIC affinity would turn 0.10 into a float.
            // Decimals, dates and times are stored as text in canonical, sortable forms.
            (Dialect::Sqlite, DataType::Decimal128(..)) => "TEXT".into(),
            (Dialect::Sqlite, DataType::Date32 | DataType::Timestamp(..)) => "TEXT".into(),
            (Dialect::Sqlite, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                "TEXT".into()
            }
            (Dialect::Sqlite, t) if t.is_integer() => "INTEGER".into(),
            (Dialect::Sqlite, DataType::Boolean) => "INTEGER".into(),
            (_, DataType::Decimal128(p, s)) => format!("DECIMAL({p},{s})"),
            (_, DataType::Date32) => "DATE".into(),
            (_, DataType::Timestamp(_, Some(_))) => "TIMESTAMPTZ".into(),
            (_, DataType::Timestamp(_, None)) => "TIMESTAMP".into(),
            (Dialect::Postgres, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                "TEXT".into()
            }
            (Dialect::Redshift, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => {
                "VARCHAR(1024)".into()
            }
            (_, DataType::Int8 | DataType::Int16 | DataType::Int32) => "INTEGER".into(),
            (_, DataType::Int64) => "BIGINT".into(),
            (_, DataType::Boolean) => "BOOLEAN".into(),
            (dialect, ty) => {
                return Err(TableError::UnsupportedType {
                    dialect,
                    ty: ty.clone(),
                })
            }
        })
    }

    fn updated_at_type(dialect: Dialect) -> &'static str {
        match dialect {
            Dialect::Sqlite => "TEXT",
            _ => "TIMESTAMPTZ",
        }
    }

    /// `CREATE TABLE IF NOT EXISTS` for the dialect (Redshift: distribution and sort keys).
    pub fn create_table(&self, dialect: Dialect) -> Result<String, TableError> {
        let mut lines = Vec::new();
        for (name, ty) in &self.columns {
            let not_null = if self.key.contains(name) || name == &self.precombine {
                " NOT NULL"
            } else {
                ""
            };
            lines.push(format!(
                "    {} {}{not_null}",
                ident(name),
                self.column_type(dialect, ty)?
            ));
        }
        lines.push(format!(
            "    {} {} NOT NULL",
            ident(UPDATED_AT),
            Self::updated_at_type(dialect)
        ));
        lines.push(format!("    PRIMARY KEY ({})", self.key_list()));
        let mut ddl = format!(
            "CREATE TABLE IF NOT EXISTS {} (\n{}\n)",
            ident(&self.name),
            lines.join(",\n")
        );
        if dialect == Dialect::Sqlite {
            // Rows stored in the primary key's B-tree: one tree to update per upsert, not a
            // rowid table plus a key index.
            ddl.push_str(" WITHOUT ROWID");
        }
        if dialect == Dialect::Redshift {
            let mut sort = vec![self.sort_first.clone()];
            sort.extend(self.key.iter().filter(|k| **k != self.sort_first).cloned());
            ddl.push_str(&format!(
                "\nDISTSTYLE KEY DISTKEY ({})\nCOMPOUND SORTKEY ({})",
                ident(&self.key[0]),
                sort.iter().map(|c| ident(c)).collect::<Vec<_>>().join(", ")
            ));
        }
        ddl.push(';');
        Ok(ddl)
    }

    pub fn column_names(&self) -> Vec<&str> {
        self.columns.iter().map(|(c, _)| c.as_str()).collect()
    }

    /// The data columns, quoted, comma-separated.
    pub(super) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|(c, _)| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn key_list(&self) -> String {
        self.key
            .iter()
            .map(|c| ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A staging table shaped like the target's data columns (no constraints).
    pub fn create_staging(&self, dialect: Dialect) -> Result<String, TableError> {
        Ok(match dialect {
            // PostgreSQL copies the target's column types; the others spell them out.
            Dialect::Postgres => format!(
                "CREATE TEMP TABLE {STAGING} ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA",
                self.column_list(),
                ident(&self.name)
            ),
            Dialect::Sqlite | Dialect::Redshift => format!(
                "CREATE TEMP TABLE {STAGING} ({})",
                self.columns
                    .iter()
                    .map(|(c, t)| Ok(format!("{} {}", ident(c), self.column_type(dialect, t)?)))
                    .collect::<Result<Vec<_>, TableError>>()?
                    .join(", ")
            ),
        })
    }

    /// SQL that is true when stored row `t` and staged row `s` differ in any data column,
    /// treating two NULLs as equal (portable: Redshift has no IS DISTINCT FROM).
    fn differs(&self, t: &str, s: &str) -> String {
        self.columns
            .iter()
            .map(|(c, _)| {
                let (a, b) = (format!("{t}.{}", ident(c)), format!("{s}.{}", ident(c)));
                format!("({a} <> {b} OR ({a} IS NULL) <> ({b} IS NULL))")
            })
            .collect::<Vec<_>>()
            .join(" OR ")
    }

    /// SQLite: the stored rows whose key lies between two keys (parameters `1..=k` and
    /// `k+1..=2k`, both ends included), their data columns in order, by key.
    pub fn stored_key_range(&self) -> String {
        let marks = |from: usize| {
            (from..from + self.key.len())
                .map(|i| format!("?{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        format!(
            "SELECT {columns} FROM {table} WHERE ({keys}) >= ({low}) AND ({keys}) <= ({high}) \
             ORDER BY {keys}",
            columns = self.column_list(),
            table = ident(&self.name),
            keys = self.key_list(),
            low = marks(1),
            high = marks(1 + self.key.len()),
        )
    }

    /// An upsert's conflict clause (SQLite, PostgreSQL): a row whose key is stored replaces the
    /// stored row when its precombine value is newer or equal and something differs.
    fn on_conflict(&self) -> String {
        let set: Vec<String> = self
            .columns
            .iter()
            .filter(|(c, _)| !self.key.contains(c))
            .map(|(c, _)| format!("{} = excluded.{}", ident(c), ident(c)))
            .chain([format!(
                "{} = excluded.{}",
                ident(UPDATED_AT),
                ident(UPDATED_AT)
            )])
            .collect();
        format!(
            " ON CONFLICT ({keys}) DO UPDATE SET {set} WHERE excluded.{pre} >= t.{pre} AND ({differs})",
            keys = self.key_list(),
            set = set.join(", "),
            pre = ident(&self.precombine),
            differs = self.differs("t", "excluded"),
        )
    }

    /// Rows straight into the staging table.
    pub fn into_staging(&self) -> RowsInsert {
        RowsInsert {
            head: format!("INSERT INTO {STAGING} ({}) ", self.column_list()),
            row_end: String::new(),
            tail: String::new(),
        }
    }

    /// SQLite's direct upsert: rows into the table, each with `now` for `updated_at`, and the
    /// conflict clause. SQLite runs it in the writer's own transaction, so no staging table is
    /// needed.
    pub fn direct_upsert(&self, now: &str) -> RowsInsert {
        RowsInsert {
            tail: self.on_conflict(),
            ..self.direct_rows("INSERT", now)
        }
    }

    /// SQLite's direct insert into a table that holds none of the rows' keys: `INSERT OR FAIL`,
    /// which stops at a refused row and keeps the statement's rows before it (no conflict clause).
    pub fn direct_insert_or_fail(&self, now: &str) -> RowsInsert {
        self.direct_rows("INSERT OR FAIL", now)
    }

    /// Rows into the table, each with `now` for `updated_at`, by `verb` (`INSERT`, ...).
    fn direct_rows(&self, verb: &str, now: &str) -> RowsInsert {
        RowsInsert {
            head: format!(
                "{verb} INTO {} AS t ({}, {}) ",
                ident(&self.name),
                self.column_list(),
                ident(UPDATED_AT)
            ),
            row_end: format!(", {now}"),
            tail: String::new(),
        }
    }

    /// The statements that move staged rows into the table, in one transaction with the staging
    /// load. `now` is the SQL expression for `updated_at`.
    pub fn merge_statements(&self, dialect: Dialect, now: &str) -> Vec<String> {
        let target = ident(&self.name);
        let cols = self.column_list();
        let pre = ident(&self.precombine);
        match dialect {
            Dialect::Sqlite | Dialect::Postgres => vec![format!(
                "INSERT INTO {target} AS t ({cols}, {upd}) SELECT {cols}, {now} FROM {STAGING} WHERE true{}",
                self.on_conflict(),
                upd = ident(UPDATED_AT),
            )],
            Dialect::Redshift => {
                let key_match = |t: &str, s: &str| {
                    self.key
                        .iter()
                        .map(|k| format!("{t}.{} = {s}.{}", ident(k), ident(k)))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                };
                let staged_cols = self
                    .columns
                    .iter()
                    .map(|(c, _)| format!("s.{}", ident(c)))
                    .collect::<Vec<_>>()
                    .join(", ");
                vec![
                    // Stored rows that a newer-or-equal, different staged row replaces.
                    format!(
                        "DELETE FROM {target} USING {STAGING} s WHERE {} AND s.{pre} >= {target}.{pre} AND ({})",
                        key_match(&target, "s"),
                        self.differs(&target, "s")
                    ),
                    // Staged rows whose key is now absent: new keys and the replacements.
                    format!(
                        "INSERT INTO {target} ({cols}, {upd}) SELECT {staged_cols}, {now} FROM {STAGING} s \
                         WHERE NOT EXISTS (SELECT 1 FROM {target} t WHERE {})",
                        key_match("t", "s"),
                        upd = ident(UPDATED_AT)
                    ),
                ]
            }
        }
    }
}

/// Parquet/CSV-friendly text of a timestamp in SQLite: fixed width, so text order is time order.
pub const SQLITE_TIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// True for types whose values tally can write in every dialect.
pub fn supported(schema: &SchemaRef) -> Result<(), TableError> {
    let probe = TableSpec {
        name: "probe".into(),
        columns: schema
            .fields()
            .iter()
            .map(|f| (f.name().clone(), f.data_type().clone()))
            .collect(),
        key: vec![],
        precombine: String::new(),
        sort_first: String::new(),
    };
    for (_, ty) in &probe.columns {
        for d in [Dialect::Sqlite, Dialect::Postgres, Dialect::Redshift] {
            probe.column_type(d, ty)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::{Field, Schema, TimeUnit};
    use std::sync::Arc;

    fn spec() -> TableSpec {
        let schema = Arc::new(Schema::new(vec![
            Field::new("store_id", DataType::Utf8, false),
            Field::new("trans_date", DataType::Date32, false),
            Field::new("sale_amount", DataType::Decimal128(18, 2), false),
            Field::new(
                "source_time",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                false,
            ),
        ]));
        TableSpec::new(
            "sales",
            &schema,
            &["store_id".into(), "trans_date".into()],
            "source_time",
            "trans_date",
        )
        .unwrap()
    }

    #[test]
    fn ddl_per_dialect() {
        let s = spec();
        let sqlite = s.create_table(Dialect::Sqlite).unwrap();
        assert!(sqlite.contains("\"sale_amount\" TEXT"), "{sqlite}");
        assert!(sqlite.ends_with(") WITHOUT ROWID;"), "{sqlite}");
        let pg = s.create_table(Dialect::Postgres).unwrap();
        assert!(
            pg.contains("\"sale_amount\" DECIMAL(18,2)")
                && pg.contains("PRIMARY KEY (\"store_id\", \"trans_date\")"),
            "{pg}"
        );
        let rs = s.create_table(Dialect::Redshift).unwrap();
        assert!(
            rs.contains("DISTKEY (\"store_id\")")
                && rs.contains("COMPOUND SORTKEY (\"trans_date\", \"store_id\")"),
            "{rs}"
        );
    }

    #[test]
    fn redshift_merge_is_delete_then_insert() {
        let stmts = spec().merge_statements(Dialect::Redshift, "GETDATE()");
        assert_eq!(stmts.len(), 2);
        assert!(stmts[0].starts_with("DELETE FROM \"sales\" USING tally_staging s WHERE \"sales\".\"store_id\" = s.\"store_id\""));
        assert!(stmts[0].contains("s.\"source_time\" >= \"sales\".\"source_time\""));
        assert!(stmts[1].contains("WHERE NOT EXISTS"));
    }

    #[test]
    fn names_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
    }
}
