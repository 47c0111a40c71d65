//! Progress on a terminal: bars on stderr when it is a TTY, nothing otherwise (logs and pipes stay
//! clean).

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Makes progress bars, or hidden ones when progress should not be shown.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Bars on stderr if it is a terminal and `quiet` is not set.
    pub fn for_terminal(quiet: bool) -> Progress {
        Progress {
            visible: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Never draws.
    pub fn hidden() -> Progress {
        Progress { visible: false }
    }

    /// A bar counting `total` bytes.
    pub fn bytes(&self, message: &'static str, total: u64) -> ProgressBar {
        self.bar(
            message,
            Some(total),
            "{msg:>12} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
        )
    }

    /// A bar counting `total` items (rows, lines).
    pub fn count(&self, message: &'static str, total: u64) -> ProgressBar {
        self.bar(
            message,
            Some(total),
            "{msg:>12} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {per_sec} eta {eta}",
        )
    }

    /// A spinner for a step of unknown length.
    pub fn spinner(&self, message: &'static str) -> ProgressBar {
        self.bar(
            message,
            None,
            "{spinner} {msg} [{elapsed_precise}] {pos} rows",
        )
    }

    /// A live status line for a long-running loop (`tally watch`); set its message as it goes.
    pub fn status_line(&self, message: &'static str) -> ProgressBar {
        self.bar(message, None, "{spinner} {msg} [{elapsed_precise}]")
    }

    fn bar(&self, message: &'static str, total: Option<u64>, template: &str) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
        bar.set_style(ProgressStyle::with_template(template).expect("static template"));
        bar.set_message(message);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }
}
