//! Where the store's password comes from besides the URL: a password file given to the server
//! (its first line), or a libpq password file (`host:port:database:user:password` lines, `*`
//! matching anything, `\:` and `\\` escaped), matched as libpq matches it.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use tokio_postgres::config::Host;

use super::error::PgError;

/// Unix-socket directories for which libpq's password file matches the host name `localhost`.
const DEFAULT_SOCKET_DIRS: [&str; 3] = ["/run/postgresql", "/var/run/postgresql", "/tmp"];

/// The password in a file: its first line, without the line end.
pub(super) fn read_password_file(path: &Path) -> Result<Vec<u8>, PgError> {
    let bad = |detail: String| PgError::PasswordFile {
        path: path.to_owned(),
        detail,
    };
    let bytes = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let line = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.is_empty() {
        return Err(bad(
            "it is empty; write the password on its first line".into()
        ));
    }
    Ok(line.to_vec())
}

/// The password for this connection in a libpq password file, if a line matches. A file that
/// does not exist holds none; one others can read is refused, as libpq ignores it.
pub(super) fn lookup_pgpass(
    path: &Path,
    pg: &tokio_postgres::Config,
) -> Result<Option<Vec<u8>>, PgError> {
    let bad = |detail: String| PgError::PasswordFile {
        path: path.to_owned(),
        detail,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(e.to_string())),
    };
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(bad(format!(
            "it may be read by group or others (mode {:o}); chmod 0600 it",
            meta.permissions().mode() & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => dir.display().to_string(),
        None => "localhost".to_owned(),
    };
    let local = DEFAULT_SOCKET_DIRS.contains(&host.as_str());
    let port = pg.get_ports().first().copied().unwrap_or(5432).to_string();
    let user = pg.get_user().unwrap_or_default();
    let dbname = pg.get_dbname().unwrap_or(user);
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let fields = split_pgpass(line);
        let [f_host, f_port, f_db, f_user, password] = fields.as_slice() else {
            continue;
        };
        let matches = |field: &str, value: &str| field == "*" || field == value;
        let host_ok = matches(f_host, &host) || (local && f_host == "localhost");
        if host_ok && matches(f_port, &port) && matches(f_db, dbname) && matches(f_user, user) {
            return Ok(Some(password.as_bytes().to_vec()));
        }
    }
    Ok(None)
}

/// A password-file line's five fields, `\:` and `\\` unescaped.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(field)) = (chars.next(), fields.last_mut()) {
                    field.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(field) = fields.last_mut() {
                    field.push(c);
                }
            }
        }
    }
    fields
}
