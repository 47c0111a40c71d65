//! File layouts: what the columns of a point-of-sale or item-master file are, declared as data.
//!
//! `tally validate` picks a layout per file by its name (the first layout whose `files` globs match),
//! checks every row against it, and a job's input names the layout its files follow. Layouts live in
//! `jobs/layouts.toml`; the same text is embedded in the binary as the default, so a new layout is a
//! TOML edit, never a code change.
//!
//! ```
//! use tally::layout::{LayoutSet, FieldValue};
//! let layouts = LayoutSet::embedded();
//! let pos = layouts.for_file("IL-101.tdf").unwrap();
//! assert_eq!(pos.name, "pos_transactions");
//! assert_eq!(pos.columns[1].ty.parse("450.5").unwrap(), FieldValue::Decimal(45050));
//! assert_eq!(layouts.for_file("Item-Master-Data.tdf").unwrap().name, "item_master");
//! ```

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

pub use crate::values::{format_date, format_decimal, parse_date, parse_decimal, FieldError};

/// The layouts shipped with tally (`jobs/layouts.toml`).
pub const EMBEDDED_LAYOUTS: &str = include_str!("../jobs/layouts.toml");

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot read layouts file {path}: {cause}")]
    Read { path: String, cause: std::io::Error },
    #[error("layouts file {path} is not valid: {message}")]
    Invalid { path: String, message: String },
    #[error("unknown layout `{0}` (known: {1})")]
    Unknown(String, String),
}

/// The type of one declared column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// Free text, stored trimmed.
    String,
    /// An exact decimal; stored as an integer count of `10^-scale` units.
    Decimal { precision: u8, scale: i8 },
    /// A signed 64-bit integer.
    Integer,
    /// A calendar date, `YYYY-MM-DD`.
    Date,
}

impl ColumnType {
    /// Parses a type name as written in layouts and job files: `string`, `integer`, `date`,
    /// `decimal(18,2)`.
    pub fn from_name(text: &str) -> Option<ColumnType> {
        let t = text.trim().to_ascii_lowercase();
        match t.as_str() {
            "string" | "text" | "varchar" => Some(ColumnType::String),
            "integer" | "int" | "bigint" => Some(ColumnType::Integer),
            "date" => Some(ColumnType::Date),
            _ => {
                let inner = t.strip_prefix("decimal(")?.strip_suffix(')')?;
                let (p, s) = inner.split_once(',')?;
                let precision: u8 = p.trim().parse().ok()?;
                let scale: i8 = s.trim().parse().ok()?;
                (1..=38).contains(&precision).then_some(())?;
                (0..=precision as i8).contains(&scale).then_some(())?;
                Some(ColumnType::Decimal { precision, scale })
            }
        }
    }

    /// The Arrow type rows of this column become.
    pub fn arrow_type(&self) -> DataType {
        match self {
            ColumnType::String => DataType::Utf8,
            ColumnType::Decimal { precision, scale } => DataType::Decimal128(*precision, *scale),
            ColumnType::Integer => DataType::Int64,
            ColumnType::Date => DataType::Date32,
        }
    }

    /// Whether a header line can be told apart from data by this column.
    pub fn is_typed(&self) -> bool {
        !matches!(self, ColumnType::String)
    }

    /// Parses one field strictly. Surrounding spaces are ignored; nothing else is forgiven: a
    /// decimal with more fractional digits than the scale (unless they are zeros) is an error, not
    /// a rounding.
    pub fn parse(&self, raw: &str) -> Result<FieldValue, FieldError> {
        Ok(match self.parse_ref(raw)? {
            FieldRef::String(s) => FieldValue::String(s.to_string()),
            FieldRef::Decimal(v) => FieldValue::Decimal(v),
            FieldRef::Integer(v) => FieldValue::Integer(v),
            FieldRef::Date(v) => FieldValue::Date(v),
        })
    }

    /// [`parse`](Self::parse) without allocating: text stays borrowed.
    pub fn parse_ref<'a>(&self, raw: &'a str) -> Result<FieldRef<'a>, FieldError> {
        let text = trim_field(raw);
        match self {
            ColumnType::String => {
                if text.is_empty() {
                    Err(FieldError::Empty)
                } else {
                    Ok(FieldRef::String(text))
                }
            }
            ColumnType::Integer => text
                .parse::<i64>()
                .map(FieldRef::Integer)
                .map_err(|_| FieldError::NotAnInteger(text.to_string())),
            ColumnType::Date => parse_date(text)
                .map(FieldRef::Date)
                .ok_or_else(|| FieldError::NotADate(text.to_string())),
            ColumnType::Decimal { precision, scale } => {
                parse_decimal(text, *precision, *scale).map(FieldRef::Decimal)
            }
        }
    }
}

/// A field's text without surrounding whitespace, as `str::trim` gives it. Most fields have
/// none: when both ends are ASCII and not whitespace the text is returned as it is, without
/// `trim`'s walk over characters (a province is tens of millions of fields).
pub fn trim_field(text: &str) -> &str {
    let plain = |b: &u8| b.is_ascii() && !char::from(*b).is_whitespace();
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) if plain(first) && plain(last) => text,
        _ => text.trim(),
    }
}

/// A row's bytes checked as UTF-8 once, for its fields' text: fields cut at ASCII delimiters
/// (tabs, commas) of valid text are text too. When the row is not valid UTF-8 its fields are
/// checked one by one, so an error can name the field at fault.
pub struct RowText<'a> {
    row: &'a [u8],
    text: Option<&'a str>,
}

impl<'a> RowText<'a> {
    pub fn new(row: &'a [u8]) -> RowText<'a> {
        RowText {
            row,
            text: std::str::from_utf8(row).ok(),
        }
    }

    /// The text of `field`, a slice of the row's bytes; `None` when it is not UTF-8.
    pub fn field(&self, field: &'a [u8]) -> Option<&'a str> {
        let start = (field.as_ptr() as usize).wrapping_sub(self.row.as_ptr() as usize);
        let within = start <= self.row.len() && field.len() <= self.row.len() - start;
        match self.text {
            Some(text) if within => text.get(start..start + field.len()),
            _ => std::str::from_utf8(field).ok(),
        }
    }
}

/// One parsed field, text borrowed from the line it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldRef<'a> {
    String(&'a str),
    Decimal(i128),
    Integer(i64),
    Date(i32),
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::String => f.write_str("string"),
            ColumnType::Integer => f.write_str("integer"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Decimal { precision, scale } => write!(f, "decimal({precision},{scale})"),
        }
    }
}

/// One parsed field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldValue {
    String(String),
    /// Unscaled value: `450.00` at scale 2 is `45000`.
    Decimal(i128),
    Integer(i64),
    /// Days since 1970-01-01.
    Date(i32),
}

/// A parsed field that borrows nothing: strings are referred to by field index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    String(usize),
    Decimal(i128),
    Integer(i64),
    Date(i32),
}

/// Why a row does not fit its layout; the reason a quarantined row carries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error("expected at least {expected} fields, found {found}")]
    TooFewFields { expected: usize, found: usize },
    #[error("column `{0}` is not valid UTF-8")]
    NotUtf8(String),
    /// The field's reason is part of the message (a quarantine line is one text).
    #[error("column `{column}`: {reason}")]
    Field { column: String, reason: FieldError },
}

/// One declared column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnSpec {
    pub name: String,
    pub ty: ColumnType,
}

/// The declared columns of one kind of file. Files may carry more columns after these (free-form
/// extras); they are kept by `validate` and ignored by jobs.
#[derive(Debug, Clone)]
pub struct Layout {
    pub name: String,
    pub description: String,
    pub columns: Vec<ColumnSpec>,
    file_globs: Vec<String>,
    matcher: GlobSet,
}

impl Layout {
    /// The Arrow schema of the declared columns.
    pub fn schema(&self) -> SchemaRef {
        Arc::new(Schema::new(
            self.columns
                .iter()
                .map(|c| Field::new(&c.name, c.ty.arrow_type(), false))
                .collect::<Vec<_>>(),
        ))
    }

    /// Parses the declared columns of one row, given its fields by index. Values land in `out`
    /// (strings as the index of their field, so nothing is borrowed); the error names the column
    /// and says what is wrong.
    pub fn parse_row<'a>(
        &self,
        n_fields: usize,
        field: impl Fn(usize) -> &'a [u8],
        out: &mut Vec<Parsed>,
    ) -> Result<(), RowError> {
        self.parse_text_row(n_fields, |i| std::str::from_utf8(field(i)).ok(), out)
    }

    /// [`parse_row`](Self::parse_row) for a reader that checked the row's text at once: `field`
    /// gives a field's text, or `None` when it is not UTF-8.
    pub fn parse_text_row<'a>(
        &self,
        n_fields: usize,
        field: impl Fn(usize) -> Option<&'a str>,
        out: &mut Vec<Parsed>,
    ) -> Result<(), RowError> {
        out.clear();
        if n_fields < self.columns.len() {
            return Err(RowError::TooFewFields {
                expected: self.columns.len(),
                found: n_fields,
            });
        }
        for (i, col) in self.columns.iter().enumerate() {
            let text = field(i).ok_or_else(|| RowError::NotUtf8(col.name.clone()))?;
            let value = col.ty.parse_ref(text).map_err(|reason| RowError::Field {
                column: col.name.clone(),
                reason,
            })?;
            out.push(match value {
                FieldRef::String(_) => Parsed::String(i),
                FieldRef::Decimal(v) => Parsed::Decimal(v),
                FieldRef::Integer(v) => Parsed::Integer(v),
                FieldRef::Date(v) => Parsed::Date(v),
            });
        }
        Ok(())
    }

    /// A layout of these columns that matches no file name: the layout of a job's input when it
    /// is rebuilt from a plan (the columns are all a reader needs).
    pub fn from_columns(name: &str, columns: Vec<ColumnSpec>) -> Layout {
        Layout {
            name: name.to_string(),
            description: String::new(),
            columns,
            file_globs: Vec::new(),
            matcher: GlobSet::empty(),
        }
    }

    pub fn file_globs(&self) -> &[String] {
        &self.file_globs
    }

    fn matches(&self, file_name: &str) -> bool {
        self.matcher.is_match(file_name)
    }

    /// True when `fields` look like a header rather than data: every typed column that should be
    /// a number or date is absent or fails to parse. A data row with one bad field is not a
    /// header; it is a bad row.
    pub fn looks_like_header<'a>(&self, fields: impl Fn(usize) -> Option<&'a str>) -> bool {
        let mut typed = 0;
        for (i, col) in self.columns.iter().enumerate() {
            if !col.ty.is_typed() {
                continue;
            }
            typed += 1;
            if let Some(text) = fields(i) {
                if col.ty.parse(text).is_ok() {
                    return false;
                }
            }
        }
        typed > 0
    }
}

/// All known layouts, in match order.
#[derive(Debug, Clone)]
pub struct LayoutSet {
    layouts: Vec<Layout>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LayoutsFile {
    layout: Vec<LayoutToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LayoutToml {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub files: Vec<String>,
    pub columns: Vec<ColumnToml>,
}

#[derive(Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub(crate) struct ColumnToml {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
}

impl LayoutToml {
    pub(crate) fn build(self, origin: &str) -> Result<Layout, LayoutError> {
        let invalid = |message: String| LayoutError::Invalid {
            path: origin.to_string(),
            message,
        };
        if self.columns.is_empty() {
            return Err(invalid(format!(
                "layout `{}` declares no columns",
                self.name
            )));
        }
        let mut columns = Vec::with_capacity(self.columns.len());
        for c in self.columns {
            let ty = ColumnType::from_name(&c.ty).ok_or_else(|| {
                invalid(format!(
                    "column `{}` of layout `{}` has unknown type `{}` (use string, integer, date or decimal(P,S))",
                    c.name, self.name, c.ty
                ))
            })?;
            if columns.iter().any(|x: &ColumnSpec| x.name == c.name) {
                return Err(invalid(format!(
                    "layout `{}` declares column `{}` twice",
                    self.name, c.name
                )));
            }
            columns.push(ColumnSpec { name: c.name, ty });
        }
        let mut builder = GlobSetBuilder::new();
        for g in &self.files {
            builder.add(Glob::new(g).map_err(|e| invalid(format!("bad file glob `{g}`: {e}")))?);
        }
        let matcher = builder
            .build()
            .map_err(|e| invalid(format!("bad file globs: {e}")))?;
        Ok(Layout {
            name: self.name,
            description: self.description,
            columns,
            file_globs: self.files,
            matcher,
        })
    }
}

impl LayoutSet {
    /// The layouts compiled into the binary.
    pub fn embedded() -> LayoutSet {
        Self::parse(EMBEDDED_LAYOUTS, "embedded jobs/layouts.toml")
            .expect("the embedded layouts file is checked by the test suite")
    }

    /// Reads a layouts file.
    pub fn load(path: &Path) -> Result<LayoutSet, LayoutError> {
        let text = std::fs::read_to_string(path).map_err(|cause| LayoutError::Read {
            path: path.display().to_string(),
            cause,
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    pub fn parse(text: &str, origin: &str) -> Result<LayoutSet, LayoutError> {
        let file: LayoutsFile = toml::from_str(text).map_err(|e| LayoutError::Invalid {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
        let layouts = file
            .layout
            .into_iter()
            .map(|l| l.build(origin))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(LayoutSet { layouts })
    }

    /// The layout for a file name: the first whose globs match.
    pub fn for_file(&self, file_name: &str) -> Option<&Layout> {
        self.layouts.iter().find(|l| l.matches(file_name))
    }

    pub fn by_name(&self, name: &str) -> Result<&Layout, LayoutError> {
        self.layouts.iter().find(|l| l.name == name).ok_or_else(|| {
            LayoutError::Unknown(
                name.to_string(),
                self.layouts
                    .iter()
                    .map(|l| l.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            )
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Layout> {
        self.layouts.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rows_fields_are_text_when_the_row_is_or_when_they_are() {
        let row = "s1\tcafé\t2026".as_bytes();
        let text = RowText::new(row);
        assert_eq!(text.field(&row[..2]), Some("s1"));
        assert_eq!(text.field(&row[3..8]), Some("café"));
        assert_eq!(text.field(&row[9..]), Some("2026"));
        // A slice of another buffer is checked on its own.
        assert_eq!(text.field(b"x"), Some("x"));
        let bad = b"s1\ti\xff2\t2026";
        let text = RowText::new(bad);
        assert_eq!(text.field(&bad[..2]), Some("s1"));
        assert_eq!(text.field(&bad[3..6]), None);
        assert_eq!(text.field(&bad[7..]), Some("2026"));
    }

    #[test]
    fn fields_are_trimmed_as_str_trim_trims_them() {
        for text in [
            "",
            " ",
            "\t\r\n",
            "s001",
            " s001",
            "s001 ",
            "\x0bs001",
            "s001\x0c",
            "\u{3000}s001",
            "s001\u{a0}",
            "\u{85}",
            "é",
            " é ",
            "a b",
            "\u{2009}\u{2009}",
            "x\u{200b}",
        ] {
            assert_eq!(trim_field(text), text.trim(), "{text:?}");
        }
    }

    #[test]
    fn type_names_round_trip() {
        for name in [
            "string",
            "integer",
            "date",
            "decimal(18,2)",
            "decimal(38,0)",
        ] {
            assert_eq!(ColumnType::from_name(name).unwrap().to_string(), name);
        }
        assert_eq!(ColumnType::from_name("decimal(2,3)"), None);
        assert_eq!(ColumnType::from_name("float"), None);
    }

    #[test]
    fn embedded_layouts_parse_and_match_by_name() {
        let set = LayoutSet::embedded();
        assert_eq!(set.for_file("IL-101.tdf").unwrap().name, "pos_transactions");
        assert_eq!(
            set.for_file("Item-Master-Data.tdf").unwrap().name,
            "item_master"
        );
        assert_eq!(set.for_file("Item2.csv").unwrap().name, "item_master");
        let pos = set.by_name("pos_transactions").unwrap();
        let fields = ["store", "amount", "code", "item", "date"];
        assert!(pos.looks_like_header(|i| fields.get(i).copied()));
        let data = ["v1", "1.00", "x", "i1", "2016-01-01"];
        assert!(!pos.looks_like_header(|i| data.get(i).copied()));
        assert!(set.by_name("nope").is_err());
    }

    #[test]
    fn bad_layouts_are_refused_with_the_reason() {
        let err = LayoutSet::parse(
            "[[layout]]\nname='x'\ncolumns=[{name='a', type='float'}]",
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("unknown type `float`"), "{err}");
    }
}
