//! A file for a token shown once (a host's or an operator's): created before the request, so
//! that a token the server made is never lost to a file that cannot be written.

use std::fs::File;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::client::CliError;

/// A token file created (mode 0600) but not written yet.
#[derive(Debug)]
pub struct TokenFile {
    file: File,
    path: PathBuf,
}

/// Makes `call`, with the token file at `path` (when one is asked for) created before it: if
/// the file cannot be created, nothing is added whose token would be lost; if the call fails,
/// the file is removed again. Returns the answer and the file to write its token to.
pub async fn created_around<T>(
    path: Option<&Path>,
    call: impl Future<Output = Result<T, CliError>>,
) -> Result<(T, Option<TokenFile>), CliError> {
    let file = path.map(TokenFile::create).transpose()?;
    match call.await {
        Ok(answer) => Ok((answer, file)),
        Err(error) => {
            if let Some(file) = file {
                file.abandon();
            }
            Err(error)
        }
    }
}

impl TokenFile {
    /// Creates the file; it must not exist yet.
    pub fn create(path: &Path) -> Result<Self, CliError> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| {
                CliError::Usage(format!(
                    "cannot create the token file {}: {e} (it must not exist yet)",
                    path.display()
                ))
            })?;
        Ok(Self {
            file,
            path: path.to_owned(),
        })
    }

    /// Removes the file (the request failed: there is no token to keep).
    pub fn abandon(self) {
        let Self { file, path } = self;
        drop(file);
        let _ = std::fs::remove_file(path);
    }

    /// Writes the token and a newline, durably; `what_now` says what to do when that fails.
    pub fn write(
        mut self,
        token: &str,
        what_now: impl FnOnce() -> String,
    ) -> Result<PathBuf, CliError> {
        let written = self
            .file
            .write_all(token.as_bytes())
            .and_then(|()| self.file.write_all(b"\n"))
            .and_then(|()| self.file.sync_all());
        written.map_err(|e| {
            CliError::Usage(format!("{}: {}: {e}", what_now(), self.path.display()))
        })?;
        Ok(self.path)
    }
}
