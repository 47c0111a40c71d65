//! `.hoodie/hoodie.properties` and `.hoodie_partition_metadata`: Java properties files.

use std::collections::BTreeMap;

use chrono::Utc;

/// Parses Java properties text (`key=value`, `#` comments, `\`-escapes).
pub fn parse(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
            continue;
        }
        let mut key = String::new();
        let mut value = String::new();
        let mut in_value = false;
        let mut chars = line.chars();
        while let Some(c) = chars.next() {
            let target = if in_value { &mut value } else { &mut key };
            match c {
                '\\' => match chars.next() {
                    Some('n') => target.push('\n'),
                    Some('t') => target.push('\t'),
                    Some('r') => target.push('\r'),
                    Some(other) => target.push(other),
                    None => {}
                },
                '=' | ':' if !in_value => in_value = true,
                _ => target.push(c),
            }
        }
        out.insert(key.trim().to_string(), value.to_string());
    }
    out
}

fn escape(text: &str, out: &mut String) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '=' => out.push_str("\\="),
            ':' => out.push_str("\\:"),
            '#' => out.push_str("\\#"),
            '!' => out.push_str("\\!"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c => out.push(c),
        }
    }
}

/// Writes properties the way `java.util.Properties.store` does (a dated comment, escaped text).
pub fn render(props: &BTreeMap<String, String>, comment: &str) -> String {
    let mut out = format!(
        "#{comment}\n#{}\n",
        Utc::now().format("%a %b %d %H:%M:%S UTC %Y")
    );
    for (k, v) in props {
        escape(k, &mut out);
        out.push('=');
        escape(v, &mut out);
        out.push('\n');
    }
    out
}

/// `hoodie.table.checksum`: CRC32 of `<database>.<table>`, as Hudi computes it.
pub fn table_checksum(database: &str, table: &str) -> u32 {
    crc32fast::hash(format!("{database}.{table}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_checksum_matches_a_spark_written_table() {
        assert_eq!(
            table_checksum("default", "v6_simplekeygen_nonhivestyle"),
            616688896
        );
        assert_eq!(
            table_checksum("default", "v6_complexkeygen_hivestyle"),
            281415413
        );
    }

    #[test]
    fn escaped_values_round_trip() {
        let mut props = BTreeMap::new();
        props.insert(
            "a.b".to_string(),
            r#"{"type":"record","x":"a=b#c\d"}"#.to_string(),
        );
        props.insert("plain".to_string(), "v".to_string());
        let text = render(&props, "test");
        assert!(
            text.contains(r#"a.b={"type"\:"record","x"\:"a\=b\#c\\d"}"#),
            "{text}"
        );
        assert_eq!(parse(&text), props);
    }
}
