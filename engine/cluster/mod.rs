//! Past one machine: a job's physical plan run on an Apache DataFusion Ballista cluster whose
//! scheduler and executors are this same binary (`tally cluster scheduler|executor`).
//!
//! The driver (`tally run --cluster df://HOST:PORT`) lists the inputs and plans the job as a
//! local run does, then sends the physical plan to the scheduler; tally's input scan and its SQL
//! functions travel through [`codec`], so executors read exactly the rows a local run reads.
//! The rows come back to the driver, which checks them and delivers them to the sinks and the
//! state store as a local run does: a cluster changes where the query runs, nothing else.
//!
//! Ballista is behind the `distributed` cargo feature (off by default: it adds a second build of
//! DataFusion). Without it, the commands and `--cluster` exist and say how to get a build that
//! has them.

use std::time::Duration;

#[cfg(feature = "distributed")]
pub mod codec;
#[cfg(feature = "distributed")]
mod driver;
#[cfg(feature = "distributed")]
mod serve;

#[cfg(feature = "distributed")]
pub use driver::execute;
#[cfg(feature = "distributed")]
pub use serve::{run_executor, run_scheduler, ExecutorSettings, EXECUTOR_TIMEOUT, HEARTBEAT};

/// The URL scheme of a cluster: `df://HOST:PORT`, the scheduler's address.
pub const SCHEME: &str = "df://";

/// Where a run's query goes, and how long the driver waits for it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterTarget {
    /// The scheduler, `HOST:PORT`.
    pub scheduler: String,
    /// The longest the job may go without finishing a stage; then it is cancelled and the run
    /// fails.
    pub timeout: Duration,
    /// Partitions the plan is cut into (tasks per stage); executors run as many at once as
    /// their slots.
    pub partitions: usize,
}

/// Waiting for a scheduler to answer at all.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

impl ClusterTarget {
    /// The target named by `df://HOST:PORT`.
    pub fn parse(url: &str, timeout: Duration, partitions: usize) -> Result<ClusterTarget, String> {
        let rest = url
            .strip_prefix(SCHEME)
            .ok_or_else(|| format!("`{url}` is not a cluster URL: expected df://HOST:PORT"))?;
        let address = rest.trim_end_matches('/');
        split_host_port(address)?;
        if partitions == 0 {
            return Err("the cluster's partitions must be at least 1".into());
        }
        Ok(ClusterTarget {
            scheduler: address.to_string(),
            timeout,
            partitions,
        })
    }

    /// `df://HOST:PORT`, for messages.
    pub fn url(&self) -> String {
        format!("{SCHEME}{}", self.scheduler)
    }

    /// How long the driver waits for the scheduler to accept a connection.
    pub fn connect_timeout(&self) -> Duration {
        CONNECT_TIMEOUT.min(self.timeout.max(Duration::from_secs(1)))
    }

    #[cfg_attr(not(feature = "distributed"), allow(dead_code))]
    fn unreachable(&self, reason: String) -> ClusterError {
        ClusterError::Unreachable {
            scheduler: self.url(),
            reason,
        }
    }
}

/// `HOST:PORT` split, the port checked.
pub fn split_host_port(address: &str) -> Result<(String, u16), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| format!("`{address}` has no port: expected HOST:PORT"))?;
    let port: u16 = port
        .parse()
        .map_err(|_| format!("`{port}` in `{address}` is not a port number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || port == 0 {
        return Err(format!("`{address}` is not HOST:PORT"));
    }
    Ok((host.to_string(), port))
}

/// What the input scans of a cluster run read, added up over the executors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadFigures {
    pub rows_in: u64,
    pub bytes_in: u64,
    pub bad_rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("this tally was built without the `distributed` feature, so it cannot {what}; build it with `cargo build --release --features distributed`")]
    NotBuilt { what: &'static str },
    #[error("cannot reach the Ballista scheduler at {scheduler}: {reason}")]
    Unreachable { scheduler: String, reason: String },
    #[error("the Ballista scheduler at {scheduler} refused the job: {reason}")]
    Refused { scheduler: String, reason: String },
    #[error("the job's plan cannot be sent to the cluster")]
    Plan {
        #[source]
        source: datafusion::error::DataFusionError,
    },
    #[error("cluster job {job_id} failed: {reason}")]
    JobFailed { job_id: String, reason: String },
    #[error("cluster job {job_id} finished no stage within {waited:?} ({stages_done} stages done) on {scheduler}; cancelled. Is any executor registered and alive (`tally cluster executor --scheduler ...`)? A stage that legitimately takes longer needs a larger --cluster-timeout")]
    NoProgress {
        scheduler: String,
        job_id: String,
        waited: Duration,
        stages_done: usize,
    },
    #[error("cannot fetch the rows of cluster job {job_id} from executor {executor}: {reason}")]
    Fetch {
        job_id: String,
        executor: String,
        reason: String,
    },
    #[error("the Ballista {role} at {address} stopped: {reason}")]
    Serve {
        role: &'static str,
        address: String,
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_name_the_scheduler() {
        let t = ClusterTarget::parse("df://127.0.0.1:50050", Duration::from_secs(5), 8).unwrap();
        assert_eq!(t.scheduler, "127.0.0.1:50050");
        assert_eq!(t.url(), "df://127.0.0.1:50050");
        assert_eq!(t.connect_timeout(), Duration::from_secs(5));
        let t = ClusterTarget::parse(
            "df://primary.ec2.internal:50050/",
            Duration::from_secs(600),
            1,
        )
        .unwrap();
        assert_eq!(t.scheduler, "primary.ec2.internal:50050");
        assert_eq!(t.connect_timeout(), CONNECT_TIMEOUT);
    }

    #[test]
    fn bad_cluster_urls_say_what_is_wrong() {
        let err = |u: &str| ClusterTarget::parse(u, Duration::from_secs(1), 4).unwrap_err();
        assert!(err("http://h:1").contains("expected df://HOST:PORT"));
        assert!(err("df://h").contains("has no port"));
        assert!(err("df://h:x").contains("is not a port number"));
        assert!(err("df://:50050").contains("is not HOST:PORT"));
        assert!(ClusterTarget::parse("df://h:1", Duration::from_secs(1), 0)
            .unwrap_err()
            .contains("at least 1"));
    }
}
