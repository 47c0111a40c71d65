//! Helpers shared by the integration tests: running the real `tally` binary, writing raw files
//! with chosen times, and reading CSV output back.
#![allow(dead_code)]

pub mod hudi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use chrono::{DateTime, Utc};

/// The repository root (jobs/, samples/).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `tally` with the repository's jobs folder and no progress bars.
pub fn tally() -> Command {
    Command::from_std(tally_process())
}

/// [`tally`] as a plain process, for a test that handles its pipes itself.
pub fn tally_process() -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("tally"));
    cmd.current_dir(repo())
        .arg("--quiet")
        .env_remove("TALLY_LOG");
    cmd
}

/// Runs tally with `args`, returning its output (whatever the exit status).
pub fn run(args: &[&str]) -> Output {
    tally().args(args).output().expect("tally runs")
}

/// Runs tally and insists on success, returning stdout.
pub fn ok(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        out.status.success(),
        "tally {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 stdout")
}

/// Runs tally and insists on failure, returning stderr.
pub fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "tally {args:?} should have failed; stdout:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stderr).expect("utf-8 stderr")
}

/// One `tally run` of a job for a province over a folder, built up flag by flag: the
/// invocation most tests make, written once.
///
/// ```ignore
/// job_run("province_sales", "WI", &val).table(&url).state(&state).ok();
/// ```
#[derive(Debug, Clone)]
pub struct JobRun {
    args: Vec<String>,
    env: Vec<(String, String)>,
}

/// `tally run --job JOB --province PROVINCE --input INPUT`.
pub fn job_run(job: &str, province: &str, input: impl AsRef<Path>) -> JobRun {
    JobRun {
        args: vec![
            "run".into(),
            "--job".into(),
            job.into(),
            "--province".into(),
            province.into(),
            "--input".into(),
            input.as_ref().display().to_string(),
        ],
        env: Vec::new(),
    }
}

impl JobRun {
    /// Any other flags, as given.
    pub fn args(mut self, more: &[&str]) -> JobRun {
        self.args.extend(more.iter().map(|a| a.to_string()));
        self
    }

    /// An environment variable for the run.
    pub fn env(mut self, name: &str, value: &str) -> JobRun {
        self.env.push((name.into(), value.into()));
        self
    }

    fn flag(self, name: &str, value: impl std::fmt::Display) -> JobRun {
        let value = value.to_string();
        self.args(&[name, &value])
    }

    pub fn dry_run(self) -> JobRun {
        self.args(&["--dry-run"])
    }

    pub fn format(self, format: &str) -> JobRun {
        self.flag("--format", format)
    }

    pub fn output(self, path: impl AsRef<Path>) -> JobRun {
        self.flag("--output", path.as_ref().display())
    }

    pub fn table(self, url: &str) -> JobRun {
        self.flag("--table", url)
    }

    pub fn warehouse(self, url: &str) -> JobRun {
        self.flag("--warehouse", url)
    }

    pub fn state(self, url: &str) -> JobRun {
        self.flag("--state", url)
    }

    fn argv(&self) -> Vec<&str> {
        self.args.iter().map(String::as_str).collect()
    }

    /// Runs it, whatever the exit status.
    pub fn run(&self) -> Output {
        tally()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .args(self.argv())
            .output()
            .expect("tally runs")
    }

    /// Runs it and insists on success; returns stdout.
    pub fn ok(&self) -> String {
        let out = self.run();
        assert!(
            out.status.success(),
            "tally {:?} failed:\nstdout:\n{}\nstderr:\n{}",
            self.args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 stdout")
    }

    /// Runs it and insists on failure; returns stderr.
    pub fn fails(&self) -> String {
        let out = self.run();
        assert!(
            !out.status.success(),
            "tally {:?} should have failed; stdout:\n{}",
            self.args,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).expect("utf-8 stderr")
    }
}

/// Writes a file and sets its modification time.
pub fn write_file(dir: &Path, name: &str, content: impl AsRef<[u8]>, time: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    let time: DateTime<Utc> = time.parse().unwrap();
    tally::storage::set_local_mtime(&path, time).unwrap();
}

/// Parses CSV text with a header into rows of column → value.
pub fn csv_rows(text: &str) -> Vec<BTreeMap<String, String>> {
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|r| {
            let r = r.unwrap();
            headers
                .iter()
                .zip(r.iter())
                .map(|(h, v)| (h.to_string(), v.to_string()))
                .collect()
        })
        .collect()
}

/// The result rows reduced to the columns of `expected_columns`, as CSV lines, sorted.
pub fn project(rows: &[BTreeMap<String, String>], columns: &[&str]) -> Vec<String> {
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            columns
                .iter()
                .map(|c| {
                    r.get(*c)
                        .cloned()
                        .unwrap_or_else(|| panic!("no column {c}"))
                })
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    lines.sort();
    lines
}

/// The columns of the province job's expected files.
pub const RESULT_COLUMNS: &[&str] = &[
    "province",
    "store_id",
    "item_id",
    "trans_date",
    "sale_amount",
    "tax_amount",
    "discount_amount",
];

/// `samples/expected_WI.csv` as sorted lines without its header.
pub fn expected_sample() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("samples/expected_WI.csv")).unwrap();
    let mut lines: Vec<String> = text.lines().skip(1).map(str::to_string).collect();
    lines.sort();
    lines
}

/// Formats cents as a decimal with two places.
pub fn cents(v: i64) -> String {
    let sign = if v < 0 { "-" } else { "" };
    format!("{sign}{}.{:02}", v.abs() / 100, v.abs() % 100)
}

/// A deterministic generator (64-bit LCG), so a failure reproduces.
pub struct Lcg(pub u64);

impl Lcg {
    pub fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

/// One transaction: store, cents, code, item, date.
pub type Txn = (String, i64, u64, String, String);

/// A province whose stores send cumulative files: each version adds transactions to a store's
/// day so far. Expected sums are computed here, independently of tally.
pub struct Province {
    pub code: String,
    rng: Lcg,
    stores: Vec<Vec<Txn>>,
    days: u64,
}

impl Province {
    pub fn new(code: &str, stores: usize, days: u64, seed: u64) -> Province {
        Province {
            code: code.to_string(),
            rng: Lcg(seed),
            stores: vec![Vec::new(); stores],
            days,
        }
    }

    /// Adds transactions to the stores `which` selects and writes their cumulative raw files
    /// `<code>-<store>-<label>.tdf`, stamped `time`.
    pub fn write_version(
        &mut self,
        raw: &Path,
        label: &str,
        time: &str,
        which: impl Fn(usize) -> bool,
    ) {
        for store in 0..self.stores.len() {
            if !which(store) {
                continue;
            }
            for _ in 0..(3 + self.rng.next(20)) {
                let code = [4, 5, 6, 4, 13][self.rng.next(5) as usize];
                let cents = self.rng.next(100_000) as i64 + 1;
                let item = format!("it{}", self.rng.next(8));
                let date = format!("2026-05-{:02}", 1 + self.rng.next(self.days));
                self.stores[store].push((format!("st{store}"), cents, code, item, date));
            }
            let mut text = String::from("------ additional invalid data\n");
            for (s, c, code, item, date) in &self.stores[store] {
                text.push_str(&format!("{s}\t{}\t{code}\t{item}\t{date}\tx\n", cents(*c)));
            }
            write_file(
                raw,
                &format!("{}-{store}-{label}.tdf", self.code),
                &text,
                time,
            );
        }
    }

    /// The expected result lines (`RESULT_COLUMNS`), sorted, from every store's latest file.
    pub fn expected(&self) -> Vec<String> {
        let mut sums: BTreeMap<(String, String, String), [i64; 3]> = BTreeMap::new();
        for rows in &self.stores {
            for (s, c, code, item, date) in rows {
                let slot = match code {
                    4 => 0,
                    5 => 1,
                    6 => 2,
                    _ => continue,
                };
                sums.entry((s.clone(), item.clone(), date.clone()))
                    .or_insert([0; 3])[slot] += c;
            }
        }
        sums.iter()
            .map(|((s, i, d), [a, b, c])| {
                format!(
                    "{},{s},{i},{d},{},{},{}",
                    self.code,
                    cents(*a),
                    cents(*b),
                    cents(*c)
                )
            })
            .collect()
    }
}

/// Writes a Hudi writer-lock record into `table` as if process `pid` on this host held it with a
/// lease far in the future (a live writer when `pid` is this process, a dead one otherwise).
/// Leaves a writer's lock record on a local Hudi table as process `pid` would. For this test's own
/// process the lock is also really held (an exclusive `flock`) until the returned file is dropped;
/// for another pid it is the record a killed writer leaves, which holds nothing.
pub fn hold_hudi_lock(table: &Path, pid: u32) -> Option<std::fs::File> {
    let host = gethostname::gethostname().to_string_lossy().to_string();
    let start = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s[s.rfind(')')? + 1..]
                .split_whitespace()
                .nth(19)?
                .parse::<u64>()
                .ok()
        });
    let record = serde_json::json!({
        "host": host, "pid": pid, "process_start": start, "token": "test",
        "acquired_at": "2026-01-01T00:00:00Z", "expires_at": "2999-01-01T00:00:00Z"
    });
    let path = table.join(".hoodie/.aux/tally-writer.lock");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, record.to_string()).unwrap();
    (pid == std::process::id()).then(|| {
        let file = std::fs::File::open(&path).unwrap();
        file.lock().unwrap();
        file
    })
}

/// A server URL from the environment tests/run.sh sets; a missing server fails the test.
pub fn server_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the suite with tests/run.sh, which starts the servers")
    })
}

/// A unique, empty PostgreSQL schema; the URL's connections use it as their search path.
pub async fn fresh_postgres_schema(prefix: &str) -> String {
    use sqlx::Connection;
    let base = server_url("TALLY_TEST_POSTGRES_URL");
    let name = format!(
        "t_{prefix}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let mut conn = sqlx::PgConnection::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{base}?options=-c%20search_path%3D{name}")
}

/// A unique, empty MariaDB database.
pub async fn fresh_mysql_database(prefix: &str) -> String {
    use sqlx::Connection;
    let base = server_url("TALLY_TEST_MYSQL_URL");
    let name = format!(
        "t_{prefix}_{}_{}",
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    );
    let mut conn = sqlx::MySqlConnection::connect(&base).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&mut conn)
        .await
        .unwrap();
    format!("{}/{name}", base.rsplit_once('/').unwrap().0)
}

/// A fresh, empty state store on `backend` (`sqlite` at `sqlite_path`, `postgres`, `mysql`).
pub async fn fresh_state_store(backend: &str, sqlite_path: &Path, prefix: &str) -> String {
    match backend {
        "sqlite" => format!("sqlite://{}", sqlite_path.display()),
        "postgres" => fresh_postgres_schema(prefix).await,
        "mysql" => fresh_mysql_database(prefix).await,
        other => panic!("unknown backend {other}"),
    }
}

/// The state store at `state` holds exactly one run, FAILED: the error it recorded.
pub async fn only_run_failed(state: &str) -> String {
    let store = tally::state::StateStore::connect(state).await.unwrap();
    let runs = store.recent_runs(5).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].status, "FAILED");
    runs[0].error.clone().unwrap_or_default()
}

/// Writes the bundled sample province under `dir/raw`, validates it into `dir/val`, and returns
/// the validated folder.
pub fn validated_sample(dir: &Path) -> std::path::PathBuf {
    let (raw, val) = (dir.join("raw"), dir.join("val"));
    tally::demo::write_sample_files(&raw).unwrap();
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        val.to_str().unwrap(),
    ]);
    val
}

/// The bundled sample province's raw files validated into a fresh folder on the S3 test server
/// (`{prefix(name)}/validated`), whose URL is returned. Blocking: it runs `tally validate`.
pub fn validated_sample_on_s3(name: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("raw");
    tally::demo::write_sample_files(&raw).unwrap();
    let val = format!("{}/validated", prefix(name));
    ok(&[
        "validate",
        "--input",
        raw.to_str().unwrap(),
        "--output",
        &val,
    ]);
    val
}

/// The warehouse table's rows as text, data columns then `updated_at`.
pub const WAREHOUSE_SELECT: &str = "SELECT province, store_id, item_id, CAST(trans_date AS TEXT) AS d, CAST(sale_amount AS TEXT) AS s, \
    CAST(tax_amount AS TEXT) AS t, CAST(discount_amount AS TEXT) AS x, CAST(updated_at AS TEXT) AS u FROM store_item_daily_sales";

/// Sorted `province,...,discount_amount` lines, and sorted `key:updated_at` lines.
pub fn warehouse_lines(rows: Vec<[String; 8]>) -> (Vec<String>, Vec<String>) {
    let mut data: Vec<String> = rows.iter().map(|r| r[..7].join(",")).collect();
    data.sort();
    let mut updated: Vec<String> = rows
        .iter()
        .map(|r| format!("{},{},{}:{}", r[1], r[2], r[3], r[7]))
        .collect();
    updated.sort();
    (data, updated)
}

/// [`warehouse_lines`] over an open sqlx connection of any database (a macro: the row types
/// differ per database).
#[macro_export]
macro_rules! warehouse_rows {
    ($conn:expr) => {{
        let rows = sqlx::query($crate::common::WAREHOUSE_SELECT)
            .fetch_all($conn)
            .await
            .unwrap();
        $crate::common::warehouse_lines(
            rows.iter()
                .map(|r| std::array::from_fn(|i| sqlx::Row::get::<String, _>(r, i)))
                .collect(),
        )
    }};
}

/// [`warehouse_lines`] of a SQLite warehouse file.
pub async fn read_sqlite_warehouse(path: &Path) -> (Vec<String>, Vec<String>) {
    let url = format!("sqlite://{}", path.display());
    let mut conn = <sqlx::SqliteConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    warehouse_rows!(&mut conn)
}

/// The names of the files directly in a folder (local or `s3://`).
pub async fn file_names(folder: &str) -> Vec<String> {
    tally::storage::Location::open(folder)
        .await
        .unwrap()
        .list_files()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect()
}

/// The test bucket; the server must be running.
pub fn bucket() -> String {
    std::env::var("TALLY_TEST_S3_BUCKET").unwrap_or_else(|_| {
        panic!("TALLY_TEST_S3_BUCKET is not set: run the suite with tests/run.sh, which starts the S3 test server")
    })
}

/// A fresh prefix per test so runs never see each other's files.
pub fn prefix(name: &str) -> String {
    format!(
        "s3://{}/{name}-{}-{}",
        bucket(),
        std::process::id(),
        chrono::Utc::now().timestamp_micros()
    )
}

/// A loopback port nothing listens on (yet).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits (a minute at most) until something accepts connections on loopback `port`.
pub fn wait_for_port(port: u16, what: &str) {
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "{what} never listened on port {port}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A child process (a server, a watcher, an emulator) stopped when dropped, however the test
/// ends.
pub struct Running(pub std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The files tracked in a state store, with their validation times, by URL.
pub async fn tracked_files(state_url: &str) -> Vec<(String, Option<String>)> {
    let store = tally::state::StateStore::connect(state_url).await.unwrap();
    let mut files = store.tracked_files().await.unwrap();
    store.close().await;
    files.sort();
    files
}
