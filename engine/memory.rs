//! When freed memory goes back to the OS, phase by phase of a run.
//!
//! tally's binaries allocate with mimalloc (engine/main.rs), which hands memory back to the OS a
//! delay after it is freed: [`RUN_PURGE_DELAY_MS`] from start-up. While a run delivers its rows,
//! the sinks free and allocate buffers of the same sizes over and over (a Hudi base file's
//! 64K-row slices and Parquet pages, one after another): memory handed back in between was
//! faulted in and zeroed again by the kernel (page clearing was 15% of the Hudi sink's samples at
//! 10M transactions). While a [`KeepFreedMemory`] lives, freed memory waits
//! [`DELIVERY_PURGE_DELAY_MS`] for reuse; the last one dropped restores the run's delay.
//!
//! When the process is about to end ([`exiting`]), freed memory is no longer handed back at all:
//! mimalloc's exit handed back every range still waiting for its delay, one `madvise` each (18
//! ms of the 1.8M sinks run's last 50 ms, on one core), memory the end of the process hands back
//! at once anyway.
//!
//! Invariant: `MIMALLOC_PURGE_DELAY`, when set, is the user's choice and is never changed here.
//! Without mimalloc as the global allocator (the library's tests) the calls set options nobody
//! reads.

use std::ffi::c_long;
use std::sync::Mutex;

/// mimalloc's `mi_option_purge_delay` (its option number; the crate names only some options).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Milliseconds after which freed memory goes back to the OS during a run, instead of
/// mimalloc's 10: a run frees and allocates large buffers in waves, and handing them back sooner
/// only had them faulted in again page by page (7% of a dry run). Never handing memory back (-1)
/// for the whole run was a few percent faster still, but the 50M province's dry run then peaked
/// at 2.10 GB instead of 1.24 GB (1.16 GB at 10 ms): the query's transient memory (hash tables,
/// sort runs) is what a delay hands back.
pub const RUN_PURGE_DELAY_MS: c_long = 100;

/// Milliseconds after which freed memory goes back to the OS while a run delivers its rows.
/// Measured on the run with both sinks (opt-level 2 builds, `farm-bench` pairs against 100 ms):
/// 10M transactions 0.969× the wall time at 300 ms, 0.969× at 1000 ms, 0.964× never (-1); the
/// 50M province's peak 1.94 GB at 300 ms, 2.03 GB at 1000 ms, 2.06 GB never, against 1.92 GB.
pub const DELIVERY_PURGE_DELAY_MS: c_long = 300;

/// mimalloc's delay for "never hand freed memory back".
const NEVER: c_long = -1;

/// How many [`KeepFreedMemory`] are alive (the delay is [`DELIVERY_PURGE_DELAY_MS`] while any
/// is), and whether the process is ending ([`exiting`]).
static STATE: Mutex<State> = Mutex::new(State {
    keepers: 0,
    exiting: false,
});

struct State {
    keepers: usize,
    exiting: bool,
}

impl State {
    /// The delay this state asks for.
    fn delay(&self) -> c_long {
        match (self.exiting, self.keepers) {
            (true, _) => NEVER,
            (false, 0) => RUN_PURGE_DELAY_MS,
            (false, _) => DELIVERY_PURGE_DELAY_MS,
        }
    }
}

/// Changes the state, then sets the delay it asks for; nothing (false) when the user set the
/// delay.
fn update(change: impl FnOnce(&mut State)) -> bool {
    if user_set_the_delay() {
        return false;
    }
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    change(&mut state);
    set_purge_delay(state.delay());
    true
}

fn user_set_the_delay() -> bool {
    std::env::var_os("MIMALLOC_PURGE_DELAY").is_some()
}

fn set_purge_delay(ms: c_long) {
    // SAFETY: sets one of mimalloc's options, a word it reads when it decides to purge; a purge
    // decided at the same moment sees the old or the new delay, either of which is valid.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, ms) };
}

/// Sets the delay of a run, at start-up.
pub fn start() {
    update(|_| {});
}

/// The process is about to end: freed memory stays with the allocator from now on (see the
/// module's doc). Called once the work is done, before the runtime's threads are stopped.
pub fn exiting() {
    update(|state| state.exiting = true);
}

/// While alive, freed memory stays longer with the allocator for reuse before it goes back to
/// the OS: for a phase that frees and allocates the same sizes again and again and whose peak is
/// its live memory (delivering rows to the sinks), not for the query.
#[must_use = "memory is kept only while the guard lives"]
pub struct KeepFreedMemory {
    active: bool,
}

impl KeepFreedMemory {
    pub fn new() -> KeepFreedMemory {
        KeepFreedMemory {
            active: update(|state| state.keepers += 1),
        }
    }
}

impl Default for KeepFreedMemory {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for KeepFreedMemory {
    fn drop(&mut self) {
        if self.active {
            update(|state| state.keepers -= 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delay() -> c_long {
        // SAFETY: reads one of mimalloc's options.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn memory_is_kept_while_any_keeper_lives() {
        if user_set_the_delay() {
            return;
        }
        start();
        assert_eq!(delay(), RUN_PURGE_DELAY_MS);
        let first = KeepFreedMemory::new();
        let second = KeepFreedMemory::new();
        assert_eq!(delay(), DELIVERY_PURGE_DELAY_MS);
        drop(first);
        assert_eq!(
            delay(),
            DELIVERY_PURGE_DELAY_MS,
            "one keeper is still alive"
        );
        drop(second);
        assert_eq!(delay(), RUN_PURGE_DELAY_MS);
    }

    #[test]
    fn an_ending_process_never_hands_memory_back_whatever_keeps_it() {
        let state = |keepers, exiting| State { keepers, exiting }.delay();
        assert_eq!(state(0, false), RUN_PURGE_DELAY_MS);
        assert_eq!(state(2, false), DELIVERY_PURGE_DELAY_MS);
        assert_eq!(state(0, true), NEVER);
        // A keeper dropped after the end began does not bring the run's delay back.
        assert_eq!(state(1, true), NEVER);
    }
}
