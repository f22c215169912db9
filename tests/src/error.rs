//! What can go wrong while driving the binaries. Every message says what failed, on what, and
//! what to look at next.

use std::path::PathBuf;

/// A failure of the harness or of the system under test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A binary is not where the harness looks for it.
    #[error(
        "cannot find the `{name}` binary (looked in {}); build the binaries first with \
         `cargo build --workspace --bins` (add `--release` to run ./target/release/fleetnode-demo), \
         or set FLEETNODE_BIN_DIR to the directory that holds them",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingBinary {
        /// The binary's name.
        name: &'static str,
        /// Where the harness looked.
        searched: Vec<PathBuf>,
    },
    /// A file or process operation failed.
    #[error("cannot {what}: {source}")]
    Io {
        /// What the harness was doing.
        what: String,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// Test material (certificates, configuration) could not be made.
    #[error("cannot set up {what}: {message}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        message: String,
    },
    /// A command-line invocation exited non-zero.
    #[error("`{command}` failed ({status}):\n{stderr}{stdout}")]
    Command {
        /// The command line.
        command: String,
        /// How it ended.
        status: String,
        /// Its standard output.
        stdout: String,
        /// Its standard error.
        stderr: String,
    },
    /// A command printed something that is not the expected JSON.
    #[error("`{command}` printed output that is not the expected JSON ({message}):\n{output}")]
    Unreadable {
        /// The command line.
        command: String,
        /// The parser's message.
        message: String,
        /// What it printed.
        output: String,
    },
    /// A server or agent process ended when it should be running.
    #[error("{what} exited unexpectedly ({status}); the end of its log ({log}):\n{tail}")]
    Exited {
        /// Which process.
        what: String,
        /// How it ended.
        status: String,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// The browser refused or failed a WebDriver command.
    #[error("the browser could not {what}: {code}: {message}")]
    Browser {
        /// What the test asked of the browser.
        what: String,
        /// The WebDriver error code (`no such element`, ...), or what went wrong on the way.
        code: String,
        /// chromedriver's message.
        message: String,
    },
    /// A state was not reached before the deadline.
    #[error("timed out waiting for {what}\n{report}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// The last state seen and the logs' tails.
        report: String,
    },
    /// The host came to rest in another state than the one expected.
    #[error("{what}\n{report}")]
    Unexpected {
        /// What was expected and what happened.
        what: String,
        /// The last state seen and the logs' tails.
        report: String,
    },
}

impl HarnessError {
    /// An [`HarnessError::Io`] error for `what`.
    pub fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    /// An [`HarnessError::Setup`] error for `what`.
    pub fn setup(what: impl Into<String>) -> impl FnOnce(String) -> Self {
        let what = what.into();
        move |message| Self::Setup { what, message }
    }
}
