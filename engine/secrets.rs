//! Connection URLs that carry secrets: where they come from, and how they are shown.
//!
//! Invariants:
//! - a URL is shown (messages, summaries, the state store, EMR step arguments) only through
//!   [`redact_url`], which masks the user-info password and every query parameter whose name says
//!   it is a secret (`password`, `sslpassword`, `secret`, `token`, ...);
//! - text that may quote a URL another library formatted (a driver's error) goes through a
//!   [`Scrubber`] holding the run's secrets before it is printed or stored;
//! - a URL argument may name where the URL is instead of holding it: `env:NAME` (an environment
//!   variable) or `arn:aws:secretsmanager:...` (an AWS Secrets Manager secret holding the URL, or
//!   an RDS-style JSON secret). Those references are what the scheduler hands to runs, so a
//!   password never sits on a command line.

use std::borrow::Cow;

/// Query parameters whose values are secrets (compared case-insensitively, `-`/`_` ignored).
const SECRET_PARAMS: &[&str] = &[
    "password",
    "pass",
    "passwd",
    "pwd",
    "sslpassword",
    "secret",
    "secretkey",
    "secretaccesskey",
    "token",
    "sessiontoken",
    "accesstoken",
    "apikey",
];

const MASK: &str = "****";

fn is_secret_param(name: &str) -> bool {
    let normal: String = name
        .chars()
        .filter(|c| *c != '_' && *c != '-')
        .flat_map(char::to_lowercase)
        .collect();
    SECRET_PARAMS.contains(&normal.as_str())
}

/// The URL with its password and secret query parameters masked. Text that is not a URL is
/// returned as it is unless it looks like it carries credentials (`user:pass@`), in which case
/// everything between `://` and `@` is masked.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some(MASK));
            }
            if u.query().is_some() {
                let pairs: Vec<(String, String)> = u
                    .query_pairs()
                    .map(|(k, v)| {
                        let v = if is_secret_param(&k) {
                            MASK.to_string()
                        } else {
                            v.into_owned()
                        };
                        (k.into_owned(), v)
                    })
                    .collect();
                u.query_pairs_mut().clear().extend_pairs(pairs);
            }
            u.to_string()
        }
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(scheme_end), Some(at)) if at > scheme_end => {
                format!("{}://{MASK}{}", &url[..scheme_end], &url[at..])
            }
            _ => url.to_string(),
        },
    }
}

/// The secrets a URL carries: its user-info password and secret query parameters, both as given
/// and percent-decoded.
pub fn secrets_in_url(url: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Ok(u) = url::Url::parse(url) {
        if let Some(p) = u.password() {
            found.push(p.to_string());
            found.push(percent_decode(p));
        }
        for (k, v) in u.query_pairs() {
            if is_secret_param(&k) && !v.is_empty() {
                found.push(v.into_owned());
            }
        }
        if let Some(query) = u.query() {
            for pair in query.split('&') {
                if let Some((k, v)) = pair.split_once('=') {
                    if is_secret_param(k) && !v.is_empty() {
                        found.push(v.to_string());
                    }
                }
            }
        }
    }
    found.retain(|s| s.len() >= 3);
    found.sort();
    found.dedup();
    found
}

/// `%XX` escapes decoded (a `+` stays a `+`: user-info is not form-encoded).
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("k={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Removes known secrets from text before it is printed or stored.
#[derive(Debug, Clone, Default)]
pub struct Scrubber {
    secrets: Vec<String>,
}

impl Scrubber {
    /// A scrubber for the secrets of these URLs.
    pub fn for_urls<'a>(urls: impl IntoIterator<Item = &'a str>) -> Scrubber {
        let mut s = Scrubber::default();
        for url in urls {
            s.add_url(url);
        }
        s
    }

    pub fn add_url(&mut self, url: &str) {
        self.secrets.extend(secrets_in_url(url));
        self.secrets.sort();
        self.secrets.dedup();
        // Longest first, so a secret that contains another is masked whole.
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// The text with every known secret masked.
    pub fn scrub<'t>(&self, text: &'t str) -> Cow<'t, str> {
        if !self.secrets.iter().any(|s| text.contains(s.as_str())) {
            return Cow::Borrowed(text);
        }
        let mut out = text.to_string();
        for s in &self.secrets {
            out = out.replace(s.as_str(), MASK);
        }
        Cow::Owned(out)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("environment variable {0} (named by `env:{0}`) is not set")]
    MissingEnv(String),
    #[error("cannot read secret {arn}: {message}")]
    SecretsManager { arn: String, message: String },
    #[error("secret {arn} holds neither a URL nor a JSON object with engine, host, username and password")]
    Unusable { arn: String },
}

/// Where a URL argument's real value is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UrlSource {
    /// The URL itself.
    Plain(String),
    /// `env:NAME`.
    Env(String),
    /// `arn:aws:secretsmanager:...`.
    SecretsManager(String),
}

impl UrlSource {
    pub fn parse(text: &str) -> UrlSource {
        if let Some(name) = text.strip_prefix("env:") {
            UrlSource::Env(name.to_string())
        } else if text.starts_with("arn:aws:secretsmanager:")
            || text.starts_with("arn:aws-cn:secretsmanager:")
            || text.starts_with("arn:aws-us-gov:secretsmanager:")
        {
            UrlSource::SecretsManager(text.to_string())
        } else {
            UrlSource::Plain(text.to_string())
        }
    }

    /// True when the argument is a reference rather than a URL (safe to show and to hand on).
    pub fn is_reference(&self) -> bool {
        !matches!(self, UrlSource::Plain(_))
    }
}

/// Resolves a URL argument (`env:NAME`, a Secrets Manager ARN, or the URL itself).
pub async fn resolve_url(text: &str) -> Result<String, SecretError> {
    match UrlSource::parse(text) {
        UrlSource::Plain(url) => Ok(url),
        UrlSource::Env(name) => std::env::var(&name).map_err(|_| SecretError::MissingEnv(name)),
        UrlSource::SecretsManager(arn) => {
            let region = arn.split(':').nth(3).unwrap_or_default().to_string();
            let mut loader = crate::aws::config_loader();
            if !region.is_empty() {
                loader = loader.region(aws_config::Region::new(region));
            }
            let client = aws_sdk_secretsmanager::Client::new(&loader.load().await);
            resolve_secret(&client, &arn).await
        }
    }
}

/// Reads a Secrets Manager secret and turns it into a connection URL: either the secret string
/// is the URL, or it is the JSON RDS and Redshift store (`engine`, `host`, `port`, `username`,
/// `password`, `dbname`).
pub async fn resolve_secret(
    client: &aws_sdk_secretsmanager::Client,
    arn: &str,
) -> Result<String, SecretError> {
    let answer = client
        .get_secret_value()
        .secret_id(arn)
        .send()
        .await
        .map_err(|e| SecretError::SecretsManager {
            arn: arn.to_string(),
            message: aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string(),
        })?;
    let text = answer
        .secret_string()
        .ok_or_else(|| SecretError::Unusable {
            arn: arn.to_string(),
        })?
        .trim();
    url_from_secret(text).ok_or_else(|| SecretError::Unusable {
        arn: arn.to_string(),
    })
}

/// The URL a secret string stands for (see [`resolve_secret`]).
pub fn url_from_secret(text: &str) -> Option<String> {
    if !text.starts_with('{') {
        return text.contains("://").then(|| text.to_string());
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str().map(str::to_string));
    let engine = field("engine")?.to_ascii_lowercase();
    let scheme = match engine.as_str() {
        "mysql" | "mariadb" | "aurora-mysql" => "mysql",
        "postgres" | "postgresql" | "aurora-postgresql" => "postgres",
        "redshift" => "redshift",
        _ => return None,
    };
    let host = field("host")?;
    let user = field("username")?;
    let password = field("password")?;
    let port = v
        .get("port")
        .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()));
    let db = field("dbname").or_else(|| field("database"));
    let mut u = url::Url::parse(&format!("{scheme}://placeholder")).ok()?;
    u.set_host(Some(&host)).ok()?;
    u.set_username(&user).ok()?;
    u.set_password(Some(&password)).ok()?;
    u.set_port(port.map(|p| p as u16)).ok()?;
    if let Some(db) = db {
        u.set_path(&db);
    }
    Some(u.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_masked_in_user_info_and_query() {
        assert_eq!(redact_url("mysql://u:secret@h/db"), "mysql://u:****@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=hunter2&sslmode=require"),
            "postgres://h/db?user=u&password=****&sslmode=require"
        );
        assert_eq!(
            redact_url("redshift://h:5439/dev?Ssl_Password=x1y2&token=abc"),
            "redshift://h:5439/dev?Ssl_Password=****&token=****"
        );
        assert_eq!(redact_url("sqlite:///tmp/a.db"), "sqlite:///tmp/a.db");
        // Not a URL the parser accepts, yet it carries credentials.
        assert_eq!(redact_url("pg://u:p w@[bad/x"), "pg://****@[bad/x");
    }

    #[test]
    fn the_scrubber_masks_every_form_of_a_secret() {
        let s = Scrubber::for_urls([
            "postgres://u:p%40ss@h/db",
            "postgres://h/db?password=qs-secret",
        ]);
        let text = "failed for postgres://u:p%40ss@h/db (password p@ss) and qs-secret";
        let out = s.scrub(text);
        assert!(!out.contains("p%40ss") && !out.contains("p@ss") && !out.contains("qs-secret"));
        assert_eq!(s.scrub("nothing here"), "nothing here");
    }

    #[test]
    fn references_are_recognised() {
        assert_eq!(UrlSource::parse("env:WH"), UrlSource::Env("WH".into()));
        assert!(UrlSource::parse("arn:aws:secretsmanager:us-east-1:1:secret:x").is_reference());
        assert!(!UrlSource::parse("postgres://h/db").is_reference());
    }

    #[test]
    fn rds_json_secrets_become_urls() {
        let url = url_from_secret(
            r#"{"engine":"mysql","host":"db.example","port":3306,"username":"tally","password":"p@ss/w","dbname":"aggr"}"#,
        )
        .unwrap();
        assert_eq!(url, "mysql://tally:p%40ss%2Fw@db.example:3306/aggr");
        assert_eq!(
            url_from_secret("postgres://u:p@h/db").as_deref(),
            Some("postgres://u:p@h/db")
        );
        assert!(url_from_secret(r#"{"engine":"oracle"}"#).is_none());
        assert!(url_from_secret("just text").is_none());
    }
}
