//! A panic ends the process (the release profile aborts on panic: no unwinding code in a binary
//! every EMR node downloads), so the run that panicked cannot record its failure the way an
//! error does. The panic hook installed here does it instead: while a run is between RUNNING and
//! its outcome, a panic on any thread records that run FAILED with the panic's message and place
//! (scrubbed of the run's secrets), on a connection of its own, and only then lets the process
//! end. The sinks are left as by any killed run: readers see the previous commit, and the next
//! run rolls the partial work back.
//!
//! Builds that unwind (tests, `cargo build`) keep reporting a worker's panic as the run's error
//! through the normal path; `TALLY_ABORT_ON_PANIC=1` makes them behave as the release build does
//! (record, then abort), which is how the tests check this module.

use std::sync::Mutex;
use std::time::Duration;

use crate::secrets::Scrubber;
use crate::state::StateStore;

/// The run a panic would fail.
pub(super) struct RunningRun {
    pub state_url: String,
    pub run_id: String,
    pub job_config_id: Option<String>,
    pub scrub: Scrubber,
}

static RUNNING: Mutex<Option<RunningRun>> = Mutex::new(None);

/// How long the hook waits for the state store before the process ends anyway.
const RECORD_TIMEOUT: Duration = Duration::from_secs(15);

/// Installs the hook (once per process; the default hook still prints the message first).
pub fn install() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            previous(info);
            let forced = std::env::var_os("TALLY_ABORT_ON_PANIC").is_some_and(|v| v == "1");
            if !(cfg!(panic = "abort") || forced) {
                return;
            }
            // `try_lock`: a panic while this thread holds the slot must not wait for itself (held
            // by another thread for an instant, the run is left to its heartbeat's expiry).
            let running = match RUNNING.try_lock() {
                Ok(mut slot) => slot.take(),
                Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner().take(),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(run) = running {
                // One line, as the state store's other errors: `panicked at FILE:LINE: message`.
                record(run, &format!("tally panicked: {info}").replace('\n', " "));
            }
            if forced {
                std::process::abort();
            }
        }));
    });
}

/// From RUNNING until the outcome is recorded, `run` is what a panic fails.
pub(super) fn running(run: RunningRun) {
    *RUNNING.lock().unwrap_or_else(|e| e.into_inner()) = Some(run);
}

/// The scrubber of the running run now knows more secrets (its sinks').
pub(super) fn knows(scrub: &Scrubber) {
    if let Some(run) = RUNNING.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        run.scrub = scrub.clone();
    }
}

/// Run `run_id`'s outcome is recorded: a panic from now on does not fail it. (A process runs
/// one run at a time; were it to run several, a panic would fail the one started last.)
pub(super) fn finished(run_id: &str) {
    let mut slot = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    if slot.as_ref().is_some_and(|run| run.run_id == run_id) {
        slot.take();
    }
}

/// Records `run` FAILED with `message`, on a thread and runtime of its own (the panicking
/// thread may be one of the run's runtime workers), waiting at most [`RECORD_TIMEOUT`].
fn record(run: RunningRun, message: &str) {
    let message = run.scrub.scrub(message).into_owned();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("tally-panic-report".into())
        .spawn(move || {
            let outcome = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
                .and_then(|rt| {
                    rt.block_on(async {
                        let store = StateStore::connect(&run.state_url)
                            .await
                            .map_err(|e| e.to_string())?;
                        let failed = store
                            .fail_run(&run.run_id, run.job_config_id.as_deref(), &message)
                            .await
                            .map_err(|e| e.to_string());
                        store.close().await;
                        failed
                    })
                });
            let _ = done_tx.send(outcome.map_err(|e| run.scrub.scrub(&e).into_owned()));
        });
    if spawned.is_err() {
        eprintln!("tally: cannot record the panic in the state store: no thread");
        return;
    }
    match done_rx.recv_timeout(RECORD_TIMEOUT) {
        Ok(Ok(())) => eprintln!("tally: the run is recorded FAILED in the state store"),
        Ok(Err(e)) => eprintln!("tally: cannot record the panic in the state store: {e}"),
        Err(_) => {
            eprintln!("tally: the state store did not answer; the run's heartbeat will expire")
        }
    }
}
