//! The store URL and where its password comes from.
//!
//! Accepted: `postgres://` and `postgresql://` URLs as libpq reads them (a Unix-socket
//! directory as `?host=/run/postgresql`), plus three parameters tokio-postgres does not know,
//! taken out here: `sslmode` (`disable`, `prefer`, `require`, `verify-ca`, `verify-full`),
//! `sslrootcert` (a PEM file of the CAs to trust instead of the system's) and `passfile`.
//!
//! The password comes from exactly one place: the password file given to the server
//! (`--store-password-file`), or the URL, or else a libpq password file (`passfile`,
//! `PGPASSFILE`, or `~/.pgpass`), matched by host, port, database and user as libpq does.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};

use super::error::PgError;
use super::password::{lookup_pgpass, read_password_file};

/// How long a connection attempt may take before the host counts as unreachable, unless the
/// URL says otherwise (`connect_timeout`).
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before TCP keepalives probe a connection, so a dead database is noticed (the
/// system default is two hours).
const KEEPALIVES_IDLE: Duration = Duration::from_secs(15);

/// How to open the store.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// The store URL.
    pub url: String,
    /// A file holding the password (`--store-password-file`).
    pub password_file: Option<PathBuf>,
    /// The libpq password file to consult when there is no other password (`PGPASSFILE`).
    pub pgpassfile: Option<PathBuf>,
    /// The home directory, for `~/.pgpass`.
    pub home: Option<PathBuf>,
    /// Most connections the pool holds.
    pub pool_size: usize,
}

impl PgOptions {
    /// Options for `url`, reading `PGPASSFILE` and `HOME` from the environment.
    pub fn from_env(url: &str, password_file: Option<PathBuf>) -> Self {
        Self {
            url: url.to_owned(),
            password_file,
            pgpassfile: std::env::var_os("PGPASSFILE").map(PathBuf::from),
            home: std::env::var_os("HOME").map(PathBuf::from),
            pool_size: 16,
        }
    }
}

/// How TLS to the database is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain connections (`disable`, and `prefer`, which this store treats as `disable`).
    Off,
    /// TLS required, the certificate chain checked against the roots; with `verify_name`
    /// also the server's name.
    Verify {
        /// Check the name too (`verify-full`).
        verify_name: bool,
        /// The CA file to trust instead of the system's.
        root_cert: Option<PathBuf>,
    },
}

/// A parsed store URL with its password in place.
#[derive(Clone)]
pub struct PgConfig {
    /// The connection settings, password included.
    pub pg: tokio_postgres::Config,
    /// TLS.
    pub tls: TlsMode,
    /// Where the database is, for messages: `user@host:port/dbname`, never a password.
    pub target: String,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("target", &self.target)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl PgConfig {
    /// Parses the URL and finds the password.
    pub fn parse(options: &PgOptions) -> Result<Self, PgError> {
        let url = options.url.trim();
        let invalid = |detail: String| PgError::InvalidUrl {
            url: redact(url),
            detail,
        };
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "it must begin with postgres:// or postgresql:// (e.g. postgres://fleet@db.example/fleet, or postgres:///fleet?host=/run/postgresql for a Unix socket)".into(),
            ));
        }
        let (rest, extra) = take_params(url);
        let mut pg = tokio_postgres::Config::from_str(&rest)
            .map_err(|e| invalid(super::error::describe(&e)))?;
        let tls = tls_mode(&extra).map_err(invalid)?;
        pg.ssl_mode(match tls {
            TlsMode::Off => SslMode::Disable,
            TlsMode::Verify { .. } => SslMode::Require,
        });
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        pg.keepalives_idle(KEEPALIVES_IDLE);
        if pg.get_application_name().is_none() {
            pg.application_name("fleetnode-cp");
        }
        if pg.get_user().is_none() {
            // libpq's default, stated here so messages and the password file can name it.
            pg.user(current_user());
        }
        let target = target_of(&pg);
        let in_url = pg.get_password().is_some();
        match (&options.password_file, in_url) {
            (Some(_), true) => {
                return Err(invalid(
                    "it carries a password and --store-password-file gives one too; give it in one place only".into(),
                ));
            }
            (Some(path), false) => {
                let password = read_password_file(path)?;
                pg.password(password);
            }
            (None, true) => {}
            (None, false) => {
                let passfile = extra
                    .passfile
                    .clone()
                    .or_else(|| options.pgpassfile.clone())
                    .or_else(|| options.home.as_ref().map(|home| home.join(".pgpass")));
                if let Some(path) = passfile
                    && let Some(password) = lookup_pgpass(&path, &pg)?
                {
                    pg.password(password);
                }
            }
        }
        Ok(Self { pg, tls, target })
    }
}

/// The parameters this module handles itself, taken out of the URL.
#[derive(Debug, Default)]
struct Extra {
    sslmode: Option<String>,
    sslrootcert: Option<PathBuf>,
    passfile: Option<PathBuf>,
}

/// Splits `sslmode`, `sslrootcert` and `passfile` off the URL's query; the rest stays as it
/// was written.
fn take_params(url: &str) -> (String, Extra) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), Extra::default());
    };
    let mut extra = Extra::default();
    let mut kept = Vec::new();
    for piece in query.split('&') {
        let (key, value) = piece.split_once('=').unwrap_or((piece, ""));
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .into_owned();
        match key {
            "sslmode" => extra.sslmode = Some(value),
            "sslrootcert" => extra.sslrootcert = Some(PathBuf::from(value)),
            "passfile" => extra.passfile = Some(PathBuf::from(value)),
            _ => kept.push(piece),
        }
    }
    if kept.is_empty() {
        (base.to_owned(), extra)
    } else {
        (format!("{base}?{}", kept.join("&")), extra)
    }
}

fn tls_mode(extra: &Extra) -> Result<TlsMode, String> {
    let mode = extra.sslmode.as_deref().unwrap_or("prefer");
    let verify = |verify_name| TlsMode::Verify {
        verify_name,
        root_cert: extra.sslrootcert.clone(),
    };
    match mode {
        "disable" | "allow" | "prefer" => Ok(TlsMode::Off),
        "require" | "verify-ca" => Ok(verify(false)),
        "verify-full" => Ok(verify(true)),
        other => Err(format!(
            "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
        )),
    }
}

/// `user@host:port/dbname` for messages.
fn target_of(pg: &tokio_postgres::Config) -> String {
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(name)) => name.clone(),
        Some(Host::Unix(dir)) => format!("{} (Unix socket)", dir.display()),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    let user = pg.get_user().unwrap_or_default();
    let dbname = pg.get_dbname().unwrap_or(user);
    format!("{user}@{host}:{port}/{dbname}")
}

/// The user the process runs as, libpq's default user name.
fn current_user() -> String {
    let uid = rustix::process::getuid().as_raw();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let name = fields.next()?;
                let id = fields.nth(1)?;
                (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "postgres".into())
}

/// The URL with any password replaced by `***`, for messages.
pub fn redact(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let start = scheme_end + 3;
        let authority_end = out[start..]
            .find(['/', '?'])
            .map_or(out.len(), |i| start + i);
        if let Some(at) = out[start..authority_end].rfind('@') {
            let userinfo = &out[start..start + at];
            if let Some(colon) = userinfo.find(':') {
                out.replace_range(start + colon + 1..start + at, "***");
            }
        }
    }
    if let Some(query_start) = out.find('?') {
        let (base, query) = out.split_at(query_start + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|piece| match piece.split_once('=') {
                Some(("password", _)) => "password=***".to_owned(),
                Some(_) | None => piece.to_owned(),
            })
            .collect();
        out = format!("{base}{}", query.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn options(url: &str) -> PgOptions {
        PgOptions {
            url: url.into(),
            ..PgOptions::default()
        }
    }

    #[test]
    fn both_schemes_and_a_unix_socket_host_are_read() {
        for url in [
            "postgres:///fleet?host=/run/postgresql",
            "postgresql:///fleet?host=/run/postgresql&user=fleet",
        ] {
            let config = PgConfig::parse(&options(url)).unwrap();
            assert_eq!(
                config.pg.get_hosts(),
                [Host::Unix("/run/postgresql".into())]
            );
            assert_eq!(config.pg.get_dbname(), Some("fleet"));
            assert_eq!(config.tls, TlsMode::Off);
        }
    }

    #[test]
    fn sslmode_and_sslrootcert_choose_tls() {
        let config = PgConfig::parse(&options(
            "postgres://fleet@db.example/fleet?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=3",
        ))
        .unwrap();
        assert_eq!(
            config.tls,
            TlsMode::Verify {
                verify_name: true,
                root_cert: Some("/etc/ca.pem".into())
            }
        );
        assert_eq!(
            config.pg.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        let error = PgConfig::parse(&options("postgres://db/fleet?sslmode=sometimes")).unwrap_err();
        assert!(error.to_string().contains("sslmode=sometimes"), "{error}");
    }

    #[test]
    fn a_password_is_never_shown() {
        assert_eq!(
            redact("postgres://fleet:s3cret@db:5432/fleet?password=other&x=1"),
            "postgres://fleet:***@db:5432/fleet?password=***&x=1"
        );
        let error =
            PgConfig::parse(&options("postgres://fleet:s3cret@db:notaport/fleet")).unwrap_err();
        assert!(!error.to_string().contains("s3cret"), "{error}");
        assert!(error.to_string().contains("fleet:***@db"), "{error}");
    }

    #[test]
    fn the_password_comes_from_one_place() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("password");
        std::fs::write(&file, "from-file\n").unwrap();
        let with_file = |url: &str| PgOptions {
            password_file: Some(file.clone()),
            ..options(url)
        };
        let config = PgConfig::parse(&with_file("postgres://fleet@db/fleet")).unwrap();
        assert_eq!(config.pg.get_password(), Some(&b"from-file"[..]));
        let error = PgConfig::parse(&with_file("postgres://fleet:x@db/fleet")).unwrap_err();
        assert!(error.to_string().contains("one place"), "{error}");

        let pgpass = dir.path().join("pgpass");
        std::fs::write(
            &pgpass,
            "# comment\nother:*:*:*:no\ndb:5432:fleet:fleet:from\\:pgpass\n",
        )
        .unwrap();
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o600)).unwrap();
        let from_pgpass = PgOptions {
            pgpassfile: Some(pgpass.clone()),
            ..options("postgres://fleet@db/fleet")
        };
        let config = PgConfig::parse(&from_pgpass).unwrap();
        assert_eq!(config.pg.get_password(), Some(&b"from:pgpass"[..]));
        std::fs::set_permissions(&pgpass, std::fs::Permissions::from_mode(0o644)).unwrap();
        let error = PgConfig::parse(&from_pgpass).unwrap_err();
        assert!(error.to_string().contains("chmod 0600"), "{error}");
    }
}
