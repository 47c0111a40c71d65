//! Pieces of the command line shared by several commands: value parsers and the state store
//! argument. Each command's arguments and its `run` live in a file of their own.

pub mod cluster;
pub mod ddl;
pub mod generate;
pub mod global;
pub mod hudi_args;
pub mod jobs;
pub mod query;
pub mod run;
pub mod schedule;
pub mod status;
pub mod track;
pub mod validate;
pub mod watch;

use anyhow::{Context, Result};
use tally::secrets::resolve_url;
use tally::state::StateStore;

/// The `--state` argument, shared by the commands that read or write the state store.
#[derive(Debug, Clone, clap::Args)]
pub struct StateArgs {
    /// The state store: sqlite://PATH, mysql://..., postgres://..., or env:NAME or a Secrets
    /// Manager ARN holding the URL.
    #[arg(long, env = "TALLY_STATE", default_value = "sqlite://.tally/state.db")]
    pub state: String,
}

/// Connects to the state store named by a `--state` argument: a URL, `env:NAME`, or a Secrets
/// Manager ARN. Returns the store and the resolved URL.
pub async fn connect_state(argument: &str) -> Result<(StateStore, String)> {
    let url = resolve_url(argument)
        .await
        .context("cannot find the state store URL")?;
    Ok((StateStore::connect(&url).await?, url))
}

/// Why a flag's value was refused (clap shows it with the flag's name).
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum BadValue {
    #[error("`{0}` is not a size like 512M or 2G")]
    NotASize(String),
    #[error("`{0}` is not a count like 1800000, 1.8M or 500K")]
    NotACount(String),
    #[error("`{0}` is out of range")]
    OutOfRange(String),
    #[error("`{0}` is not NAME=VALUE")]
    NotNameValue(String),
    #[error("`{0}` is not a duration like 90, 90s, 5m or 1h")]
    NotADuration(String),
}

/// Parses a size in bytes: `1073741824`, `512M`, `1.5G` (binary units).
pub fn parse_bytes(text: &str) -> Result<u64, BadValue> {
    let text = text.trim();
    let upper = text.to_ascii_uppercase();
    // `M`, `MB`, `MiB` all mean mebibytes.
    let stem = upper.trim_end_matches(['B', 'I']);
    let (number, scale) = match stem.chars().last() {
        Some('K') => (&stem[..stem.len() - 1], 1u64 << 10),
        Some('M') => (&stem[..stem.len() - 1], 1 << 20),
        Some('G') => (&stem[..stem.len() - 1], 1 << 30),
        _ => (upper.as_str(), 1),
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| BadValue::NotASize(text.to_string()))?;
    if value.is_nan() || value <= 0.0 || value * scale as f64 > 1e15 {
        return Err(BadValue::OutOfRange(text.to_string()));
    }
    Ok((value * scale as f64) as u64)
}

/// Parses `1800000`, `1.8M`, `500K`.
pub fn parse_count(text: &str) -> Result<u64, BadValue> {
    let text = text.trim().replace('_', "");
    let (number, scale) = match text.chars().last() {
        Some('k' | 'K') => (&text[..text.len() - 1], 1e3),
        Some('m' | 'M') => (&text[..text.len() - 1], 1e6),
        Some('g' | 'G' | 'b' | 'B') => (&text[..text.len() - 1], 1e9),
        _ => (text.as_str(), 1.0),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| BadValue::NotACount(text.clone()))?;
    if value.is_nan() || value < 0.0 || value * scale > 1e13 {
        return Err(BadValue::OutOfRange(text.to_string()));
    }
    Ok((value * scale).round() as u64)
}

/// Parses a duration: `90` or `90s` (seconds), `5m`, `1h`; at least a second.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, BadValue> {
    let text = text.trim();
    let (number, scale) = match text.chars().last() {
        Some('s') => (&text[..text.len() - 1], 1),
        Some('m') => (&text[..text.len() - 1], 60),
        Some('h') => (&text[..text.len() - 1], 3600),
        _ => (text, 1),
    };
    let value: u64 = number
        .trim()
        .parse()
        .map_err(|_| BadValue::NotADuration(text.to_string()))?;
    match value.checked_mul(scale) {
        Some(secs) if secs > 0 && secs <= 7 * 24 * 3600 => Ok(std::time::Duration::from_secs(secs)),
        _ => Err(BadValue::OutOfRange(text.to_string())),
    }
}

/// Parses `NAME=VALUE` (the value may hold `=`).
pub fn parse_param(text: &str) -> Result<(String, String), BadValue> {
    text.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| BadValue::NotNameValue(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_in_binary_units() {
        assert_eq!(parse_bytes("512M").unwrap(), 512 << 20);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_duration("90").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("1h").unwrap().as_secs(), 3600);
        assert_eq!(parse_duration("0s"), Err(BadValue::OutOfRange("0s".into())));
        assert_eq!(
            parse_duration("soon"),
            Err(BadValue::NotADuration("soon".into()))
        );
        assert_eq!(parse_bytes("0"), Err(BadValue::OutOfRange("0".into())));
        assert_eq!(parse_bytes("lots"), Err(BadValue::NotASize("lots".into())));
    }

    #[test]
    fn counts_parse_with_suffixes() {
        assert_eq!(parse_count("1.8M").unwrap(), 1_800_000);
        assert_eq!(parse_count("500K").unwrap(), 500_000);
        assert_eq!(parse_count("1_000").unwrap(), 1000);
        assert!(parse_count("-1").is_err());
    }

    #[test]
    fn params_are_name_equals_value() {
        assert_eq!(
            parse_param("province = IL").unwrap(),
            ("province".to_string(), "IL".to_string())
        );
        assert_eq!(parse_param("a=b=c").unwrap().1, "b=c");
        assert!(parse_param("=x").is_err());
        assert!(parse_param("novalue").is_err());
    }
}
