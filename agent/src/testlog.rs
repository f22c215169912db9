//! Captures the log lines of one test (the thread's default subscriber; tokio tests run their
//! tasks on the test's thread).

use std::io::Write;
use std::sync::{Arc, Mutex};

use tracing::subscriber::DefaultGuard;

/// The captured text, one formatted line per event, with its level, target and spans.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<u8>>>);

impl Logs {
    /// Starts capturing on this thread until the guard is dropped.
    pub fn capture() -> (Self, DefaultGuard) {
        // tracing caches each call site's interest process-wide. Tests on other threads run
        // the same call sites with no subscriber at all, which can cache them as "never" and
        // silence them here too. A process-wide subscriber that wants everything (and writes
        // nothing) keeps every call site live; this thread's default still gets the events.
        static LIVE: std::sync::Once = std::sync::Once::new();
        LIVE.call_once(|| {
            let discard = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::TRACE)
                .with_writer(std::io::sink)
                .finish();
            // Another global subscriber (set by a test) serves the same purpose.
            let _ = tracing::subscriber::set_global_default(discard);
        });
        let logs = Self::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_target(true)
            .with_writer(logs.clone())
            .finish();
        (logs.clone(), tracing::subscriber::set_default(subscriber))
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The captured lines containing `needle`.
    pub fn lines_with(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| line.contains(needle))
            .map(str::to_owned)
            .collect()
    }
}

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Logs {
    type Writer = Self;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}
