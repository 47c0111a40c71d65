//! Field values tally parses itself, exactly: decimals as unscaled integers (never a float, never
//! a rounding) and ISO dates as days since the Unix epoch, with their canonical text forms.

use chrono::NaiveDate;

/// Why one field's text is not a value of its column's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    #[error("is empty")]
    Empty,
    #[error("`{0}` is not an integer")]
    NotAnInteger(String),
    #[error("`{0}` is not a date (YYYY-MM-DD)")]
    NotADate(String),
    #[error("`{0}` is not a decimal number")]
    NotADecimal(String),
    #[error("`{text}` has more than {scale} decimal places")]
    TooManyPlaces { text: String, scale: usize },
    #[error("`{text}` does not fit decimal({precision},{scale})")]
    TooLarge {
        text: String,
        precision: u8,
        scale: usize,
    },
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
            return days_from_civil(year, n(*m0, *m1), n(*d0, *d1));
        }
        _ => NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?,
    };
    Some(date.num_days_from_ce() - UNIX_EPOCH_DAYS_FROM_CE)
}

/// Days since the Unix epoch of a valid proleptic Gregorian date (year 0 to 9999), `None` for a
/// month or day that does not exist. Arithmetic, not a calendar lookup: it runs for every row of
/// every input file. (The days-from-civil method: years counted from March, so the leap day
/// ends a year; eras of 400 years.) Tested against chrono over four centuries.
fn days_from_civil(year: i32, month: u32, day: u32) -> Option<i32> {
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day == 0 || day > month_days {
        return None;
    }
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year as i32;
    Some(era * 146_097 + day_of_era - 719_468)
}

/// Days since the Unix epoch back to `YYYY-MM-DD`.
pub fn format_date(days: i32) -> String {
    use chrono::Datelike;
    match NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE) {
        // Most dates, written digit by digit: this runs for every row of a Hudi write (record
        // keys and partition paths), where chrono's format interpreter was a visible cost.
        Some(d) if (0..=9999).contains(&d.year()) => {
            let (y, m, day) = (d.year() as u32, d.month(), d.day());
            let digit = |v: u32| char::from(b'0' + v as u8);
            let mut text = String::with_capacity(10);
            for v in [y / 1000, y / 100 % 10, y / 10 % 10, y % 10] {
                text.push(digit(v));
            }
            text.push('-');
            text.push(digit(m / 10));
            text.push(digit(m % 10));
            text.push('-');
            text.push(digit(day / 10));
            text.push(digit(day % 10));
            text
        }
        Some(d) => d.format("%Y-%m-%d").to_string(),
        None => format!("day {days}"),
    }
}

/// Parses `[+-]digits[.digits]` into an unscaled integer at `scale`, refusing anything that would
/// need rounding or does not fit `precision` digits.
pub fn parse_decimal(text: &str, precision: u8, scale: i8) -> Result<i128, FieldError> {
    let not_decimal = || FieldError::NotADecimal(text.to_string());
    let (negative, unsigned) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let (int_part, frac_part) = match memchr::memchr(b'.', unsigned.as_bytes()) {
        Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
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
        return Err(FieldError::TooManyPlaces {
            text: text.to_string(),
            scale,
        });
    }
    let int_digits = int_part.trim_start_matches('0');
    if int_digits.len() > precision as usize - scale {
        return Err(FieldError::TooLarge {
            text: text.to_string(),
            precision,
            scale,
        });
    }
    // Up to 19 digits fit a u64, whose arithmetic is cheaper than i128's; more go on in i128.
    let mut digits = int_digits.bytes().chain(kept.bytes());
    let mut small: u64 = 0;
    for b in digits.by_ref().take(19) {
        small = small * 10 + u64::from(b - b'0');
    }
    let mut value = i128::from(small);
    for b in digits {
        value = value * 10 + i128::from(b - b'0');
    }
    for _ in kept.len()..scale {
        value *= 10;
    }
    Ok(if negative { -value } else { value })
}

/// Formats an unscaled decimal: `format_decimal(45000, 2) == "450.00"`.
pub fn format_decimal(value: i128, scale: i8) -> String {
    let mut text = String::with_capacity(24);
    write_decimal(&mut text, value, scale).expect("writing to a String");
    text
}

/// [`format_decimal`] into `out`, without allocating: loaders print millions of these. The text
/// is made on the stack ([`decimal_bytes`]) and written in one piece (a write per part, four per
/// value, was half the cost of a SQLite warehouse's decimal columns).
pub fn write_decimal(out: &mut impl std::fmt::Write, value: i128, scale: i8) -> std::fmt::Result {
    let scale = scale.max(0) as u32;
    let mut buf = [0u8; NUMBER_ROOM];
    if scale <= MAX_DECIMAL_SCALE {
        return out.write_str(ascii(decimal_bytes(value, scale, &mut buf)));
    }
    // Past Decimal128's largest scale every digit is in the fraction.
    let text = decimal_bytes(value, 0, &mut buf);
    let digits = text.strip_prefix(b"-").unwrap_or(text);
    if value < 0 {
        out.write_char('-')?;
    }
    out.write_str("0.")?;
    for _ in digits.len()..scale as usize {
        out.write_char('0')?;
    }
    out.write_str(ascii(digits))
}

/// Room for any i128 or Decimal128 as text: a sign, 39 digits and a point.
pub const NUMBER_ROOM: usize = 48;

/// Decimal128's largest scale (its largest precision), the largest [`decimal_bytes`] takes.
const MAX_DECIMAL_SCALE: u32 = 38;

/// An unscaled decimal as text, built backwards at the end of `buf` and returned as one slice
/// (to be copied in one piece): `123` at scale 2 is `1.23`, `-5` is `-0.05`, scale 0 has no
/// point. `scale` is at most 38, Decimal128's largest.
pub fn decimal_bytes(value: i128, scale: u32, buf: &mut [u8; NUMBER_ROOM]) -> &[u8] {
    let magnitude = value.unsigned_abs();
    let mut at = buf.len();
    if scale == 0 {
        digits(magnitude, 1, buf, &mut at);
    } else {
        debug_assert!(
            scale <= MAX_DECIMAL_SCALE,
            "scale {scale} past Decimal128's"
        );
        let unit = 10u128.pow(scale);
        let (whole, fraction) = match u64::try_from(magnitude) {
            Ok(m) if scale < 20 => {
                let unit = unit as u64;
                ((m / unit) as u128, (m % unit) as u128)
            }
            _ => (magnitude / unit, magnitude % unit),
        };
        digits(fraction, scale as usize, buf, &mut at);
        at -= 1;
        buf[at] = b'.';
        digits(whole, 1, buf, &mut at);
    }
    if value < 0 {
        at -= 1;
        buf[at] = b'-';
    }
    &buf[at..]
}

/// `value`'s decimal digits, at least `width` of them (zeros in front), written into `buf`
/// backwards from `at`.
fn digits(value: u128, width: usize, buf: &mut [u8; NUMBER_ROOM], at: &mut usize) {
    // A u128 division is a library call: amounts fit in 64 bits and are divided natively; a
    // larger value is written as its low 19 digits, then its high ones.
    const LOW: u128 = 10_000_000_000_000_000_000;
    match u64::try_from(value) {
        Ok(value) => digits_u64(value, width, buf, at),
        Err(_) => {
            digits_u64((value % LOW) as u64, 19, buf, at);
            digits(value / LOW, width.saturating_sub(19), buf, at);
        }
    }
}

fn digits_u64(mut value: u64, width: usize, buf: &mut [u8; NUMBER_ROOM], at: &mut usize) {
    let end = *at;
    while value > 0 || end - *at < width {
        *at -= 1;
        buf[*at] = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Text of digits, a point and a sign.
fn ascii(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("ASCII digits, point and sign")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_counted_as_chrono_counts_them_and_impossible_ones_refused() {
        use chrono::Datelike;
        let epoch = NaiveDate::from_ymd_opt(1970, 1, 1).unwrap();
        let mut date = NaiveDate::from_ymd_opt(1600, 1, 1).unwrap();
        let last = NaiveDate::from_ymd_opt(2400, 12, 31).unwrap();
        while date <= last {
            let expected = (date - epoch).num_days() as i32;
            assert_eq!(
                days_from_civil(date.year(), date.month(), date.day()),
                Some(expected),
                "{date}"
            );
            assert_eq!(parse_date(&date.to_string()), Some(expected), "{date}");
            date = date.succ_opt().unwrap();
        }
        for (y, m, d) in [
            (2026, 2, 29),
            (1900, 2, 29),
            (2026, 2, 30),
            (2026, 4, 31),
            (2026, 13, 1),
            (2026, 0, 1),
            (2026, 1, 0),
            (2026, 1, 32),
        ] {
            assert_eq!(days_from_civil(y, m, d), None, "{y}-{m}-{d}");
        }
        assert_eq!(parse_date("2000-02-29"), Some(11_016));
        assert_eq!(parse_date("0000-01-01"), Some(-719_528));
        assert_eq!(parse_date("2026-02-29"), None);
    }

    #[test]
    fn decimals_of_more_digits_than_a_u64_holds_are_exact() {
        assert_eq!(
            parse_decimal("1234567890123456789012.345", 38, 3),
            Ok(1_234_567_890_123_456_789_012_345)
        );
        assert_eq!(
            parse_decimal("-99999999999999999999.99", 38, 2),
            Ok(-9_999_999_999_999_999_999_999)
        );
        assert_eq!(
            parse_decimal("18446744073709551615", 38, 0),
            Ok(18_446_744_073_709_551_615)
        );
    }

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
            .to_string()
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
            .to_string()
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
        assert_eq!(format_decimal(-7, -2), "-7");
        // Past u64, and the one value whose magnitude has no i128.
        assert_eq!(
            format_decimal(i128::MIN, 2),
            "-1701411834604692317316873037158841057.28"
        );
        assert_eq!(
            format_decimal(u64::MAX as i128 + 1, 3),
            "18446744073709551.616"
        );
        assert_eq!(format_decimal(0, 0), "0");
        assert_eq!(format_decimal(1, 38), format!("0.{}1", "0".repeat(37)));
        assert_eq!(
            format_decimal(-12, 127),
            format!("-0.{}12", "0".repeat(125))
        );
        // Against the text made the plain way: digits, zeros in front to one past the scale,
        // the point put in.
        let plain = |value: i128, scale: usize| {
            let digits = value.unsigned_abs().to_string();
            let digits = format!("{digits:0>width$}", width = scale + 1);
            let (int_part, frac_part) = digits.split_at(digits.len() - scale);
            let sign = if value < 0 { "-" } else { "" };
            match scale {
                0 => format!("{sign}{int_part}"),
                _ => format!("{sign}{int_part}.{frac_part}"),
            }
        };
        for scale in 0..6 {
            for value in (-2100..2100).chain([i64::MAX as i128, i64::MIN as i128 - 7]) {
                assert_eq!(format_decimal(value, scale as i8), plain(value, scale));
            }
        }
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
            let chrono = NaiveDate::from_num_days_from_ce_opt(days + UNIX_EPOCH_DAYS_FROM_CE)
                .map(|d| d.format("%Y-%m-%d").to_string());
            assert_eq!(Some(text), chrono);
        }
        // Years chrono writes with a sign or more digits keep its form.
        assert_eq!(format_date(-719_529), "-0001-12-31");
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
}
