//! Progress bars for the build stages.

use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressStyle};
use lemur::Stage;

/// One bar per build stage, replaced when the stage changes; hidden with
/// `--quiet`.
pub(crate) struct StageBars {
    quiet: bool,
    current: Mutex<Option<(Stage, ProgressBar)>>,
}

impl StageBars {
    pub(crate) fn new(quiet: bool) -> Self {
        StageBars {
            quiet,
            current: Mutex::new(None),
        }
    }

    /// The callback the builder calls from any thread.
    pub(crate) fn update(&self, stage: Stage, done: usize, total: usize) {
        if self.quiet {
            return;
        }
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if current.as_ref().is_none_or(|(s, _)| *s != stage) {
            if let Some((_, bar)) = current.take() {
                bar.finish();
            }
            let bar = ProgressBar::new(total as u64);
            let style = ProgressStyle::with_template(
                "{prefix:>12} [{bar:40}] {pos}/{len} ({elapsed}, ETA {eta})",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(format!("{stage:?}"));
            *current = Some((stage, bar));
        }
        if let Some((_, bar)) = current.as_ref() {
            bar.set_position(done as u64);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some((_, bar)) = self
            .current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            bar.finish();
        }
    }
}

/// A spinner for a step without a count (loading, saving).
pub(crate) fn spinner(quiet: bool, message: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    bar.set_message(message.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

/// A bar counting `total` items, labelled `prefix`; hidden when `quiet`.
pub(crate) fn count_bar(quiet: bool, total: usize, prefix: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total as u64);
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} ({elapsed})")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix.to_owned());
    bar
}
