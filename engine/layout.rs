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

use chrono::NaiveDate;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde::Deserialize;

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
    pub fn parse(&self, raw: &str) -> Result<FieldValue, String> {
        Ok(match self.parse_ref(raw)? {
            FieldRef::String(s) => FieldValue::String(s.to_string()),
            FieldRef::Decimal(v) => FieldValue::Decimal(v),
            FieldRef::Integer(v) => FieldValue::Integer(v),
            FieldRef::Date(v) => FieldValue::Date(v),
        })
    }

    /// [`parse`](Self::parse) without allocating: text stays borrowed.
    pub fn parse_ref<'a>(&self, raw: &'a str) -> Result<FieldRef<'a>, String> {
        let text = raw.trim();
        match self {
            ColumnType::String => {
                if text.is_empty() {
                    Err("is empty".into())
                } else {
                    Ok(FieldRef::String(text))
                }
            }
            ColumnType::Integer => text
                .parse::<i64>()
                .map(FieldRef::Integer)
                .map_err(|_| format!("`{text}` is not an integer")),
            ColumnType::Date => parse_date(text)
                .map(FieldRef::Date)
                .ok_or_else(|| format!("`{text}` is not a date (YYYY-MM-DD)")),
            ColumnType::Decimal { precision, scale } => {
                parse_decimal(text, *precision, *scale).map(FieldRef::Decimal)
            }
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

const UNIX_EPOCH_DAYS_FROM_CE: i32 = 719_163;

/// `YYYY-MM-DD` (one- or two-digit month and day accepted) to days since the Unix epoch.
pub fn parse_date(text: &str) -> Option<i32> {
    use chrono::Datelike;
    if text.len() < 8 || text.len() > 10 || !text.as_bytes()[0].is_ascii_digit() {
        return None;
    }
    let date = match text.as_bytes() {
        // The canonical form, parsed without a format interpreter: it is most of every file.
        [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] => {
            let digits = [*y0, *y1, *y2, *y3, *m0, *m1, *d0, *d1];
            if !digits.iter().all(u8::is_ascii_digit) {
                return None;
            }
            let n = |a: u8, b: u8| u32::from(a - b'0') * 10 + u32::from(b - b'0');
            let year = (n(*y0, *y1) * 100 + n(*y2, *y3)) as i32;
            NaiveDate::from_ymd_opt(year, n(*m0, *m1), n(*d0, *d1))?
        }
        _ => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?,
    };
    Some(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

/// Days since the Unix epoch back to `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE)
        .map(|d| d.format("%Y-%m-%d").to_string())
        .unwrap_or_else(|| format!("day {days}"))
}

/// Parses `[+-]digits[.digits]` into an unscaled integer at `scale`, refusing anything that would
/// need rounding or does not fit `precision` digits.
pub fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, String> {
    let not_decimal = || format!("`{text}` is not a decimal number");
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = match unsigned.split_once('.') {
        Some((i, f)) => (i, f),
        None => (unsigned, ""),
    };
    if int_part.is_empty() && frac_part.is_empty() {
        return Err(not_decimal());
    }
    if !int_part.bytes().all(|b| b.is_ascii_digit())
        || !frac_part.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(not_decimal());
    }
    let scale = scale.max(0) as usize;
    let (kept, dropped) = frac_part.split_at(frac_part.len().min(scale));
    if dropped.bytes().any(|b| b != b'0') {
        return Err(format!("`{text}` has more than {scale} decimal places"));
    }
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > precision as usize - scale {
        return Err(format!(
            "`{text}` does not fit decimal({precision},{scale})"
        ));
    }
    let mut value: i128 = 0;
    for b in int_digits.bytes().chain(kept.bytes()) {
        value = value * 10 + i128::from(b - b'0');
    }
    for _ in kept.len()..scale {
        value *= 10;
    }
    Ok(if negative { -value } else { value })
}

/// Formats an unscaled decimal: `format_decimal(45000, 2) == "450.00"`.
pub fn format_decimal(value: i128, scale: i8) -> String {
    let scale = scale.max(0) as usize;
    let digits = value.unsigned_abs().to_string();
    let sign = if value < 0 { "-" } else { "" };
    if scale == 0 {
        return format!("{sign}{digits}");
    }
    let padded = format!("{digits:0>width$}", width = scale + 1);
    let (int_part, frac_part) = padded.split_at(padded.len() - scale);
    format!("{sign}{int_part}.{frac_part}")
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
    ) -> Result<(), String> {
        out.clear();
        if n_fields < self.columns.len() {
            return Err(format!(
                "expected at least {} fields, found {}",
                self.columns.len(),
                n_fields
            ));
        }
        for (i, col) in self.columns.iter().enumerate() {
            let text = std::str::from_utf8(field(i))
                .map_err(|_| format!("column `{}` is not valid UTF-8", col.name))?;
            let value = col
                .ty
                .parse_ref(text)
                .map_err(|reason| format!("column `{}`: {reason}", col.name))?;
            out.push(match value {
                FieldRef::String(_) => Parsed::String(i),
                FieldRef::Decimal(v) => Parsed::Decimal(v),
                FieldRef::Integer(v) => Parsed::Integer(v),
                FieldRef::Date(v) => Parsed::Date(v),
            });
        }
        Ok(())
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
    fn decimals_are_exact_or_refused() {
        assert_eq!(parse_decimal("450.00", 18, 2), Ok(45000));
        assert_eq!(parse_decimal("450", 18, 2), Ok(45000));
        assert_eq!(parse_decimal("0.5", 18, 2), Ok(50));
        assert_eq!(parse_decimal(".5", 18, 2), Ok(50));
        assert_eq!(parse_decimal("-12.34", 18, 2), Ok(-1234));
        assert_eq!(parse_decimal("+1.230", 18, 2), Ok(123));
        assert_eq!(parse_decimal("0001.10", 18, 2), Ok(110));
        assert!(parse_decimal("1.234", 18, 2)
            .unwrap_err()
            .contains("decimal places"));
        assert!(parse_decimal("1e3", 18, 2).is_err());
        assert!(parse_decimal("", 18, 2).is_err());
        assert!(parse_decimal(".", 18, 2).is_err());
        assert!(parse_decimal("-", 18, 2).is_err());
        assert!(parse_decimal("1,000.00", 18, 2).is_err());
        assert!(parse_decimal("12.3.4", 18, 2).is_err());
        assert_eq!(
            parse_decimal("9999999999999999.99", 18, 2),
            Ok(999_999_999_999_999_999)
        );
        assert!(parse_decimal("10000000000000000.00", 18, 2)
            .unwrap_err()
            .contains("fit"));
    }

    #[test]
    fn decimals_format_back() {
        assert_eq!(format_decimal(45000, 2), "450.00");
        assert_eq!(format_decimal(5, 2), "0.05");
        assert_eq!(format_decimal(-5, 2), "-0.05");
        assert_eq!(format_decimal(-1234, 2), "-12.34");
        assert_eq!(format_decimal(0, 2), "0.00");
        assert_eq!(format_decimal(7, 0), "7");
    }

    #[test]
    fn dates_are_iso_only() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2016-06-01"), Some(16953));
        assert_eq!(parse_date("2016-6-1"), Some(16953));
        assert_eq!(format_date(16953), "2016-06-01");
        assert_eq!(parse_date("2016-02-30"), None);
        assert_eq!(parse_date("06/01/2016"), None);
        assert_eq!(parse_date("date"), None);
        assert_eq!(parse_date("2016-06-01x"), None);
        assert_eq!(parse_date("2016-13-01"), None);
        assert_eq!(parse_date("2016-00-10"), None);
        assert_eq!(parse_date("2016-+6-01"), None);
        assert_eq!(parse_date("2016-06-0 "), None);
    }

    #[test]
    fn the_fast_date_path_agrees_with_chrono() {
        use chrono::Datelike;
        // Every day from 1900 to 2100, plus the invalid day numbers of each month.
        for days in -25_567..47_482 {
            let text = format_date(days);
            assert_eq!(parse_date(&text), Some(days), "{text}");
        }
        for year in [1900, 2000, 2023, 2024] {
            for month in 1..=12 {
                for day in 28..=32 {
                    let text = format!("{year:04}-{month:02}-{day:02}");
                    let chrono = NaiveDate::parse_from_str(&text, "%Y-%m-%d")
                        .ok()
                        .map(|d| d.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE);
                    assert_eq!(parse_date(&text), chrono, "{text}");
                }
            }
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
