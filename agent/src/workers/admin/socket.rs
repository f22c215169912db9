//! The admin socket's file: who may connect is decided by its owner, group and mode.
//!
//! The socket is bound under a temporary name next to its final path, given its mode (0600, or
//! 0660 with the admin group) and group, and only then renamed into place: no client ever sees
//! it with the mode the process's umask happened to give, and a socket left by an earlier run is
//! replaced in one step. The directory must not let anyone but its owner replace the socket
//! (no write bit for group or others), or a local user could put their own socket in its place
//! and answer the CLI.

use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::input::WorkerError;

/// The socket's mode without an admin group: root only.
pub const MODE_ROOT_ONLY: u32 = 0o600;
/// The socket's mode with an admin group: root and the group's members.
pub const MODE_WITH_GROUP: u32 = 0o660;
/// Where the group database is read (the NixOS module's `users.groups` end up there).
const GROUP_FILE: &str = "/etc/group";

/// Binds the admin socket at `path`, reachable by root and, when `group` is set, by its members.
pub fn bind(path: &Path, group: Option<&str>) -> Result<UnixListener, WorkerError> {
    let gid = group
        .map(|name| group_id(Path::new(GROUP_FILE), name))
        .transpose()?;
    let dir = path.parent().ok_or_else(|| {
        WorkerError::Listener(format!("admin.socket {} has no directory", path.display()))
    })?;
    prepare_directory(dir)?;
    refuse_non_socket(path)?;
    let partial = partial_name(path);
    let _ = std::fs::remove_file(&partial);
    let listener = UnixListener::bind(&partial).map_err(|e| {
        WorkerError::Listener(format!(
            "cannot bind the admin socket {} (admin.socket): {e}",
            partial.display()
        ))
    })?;
    let placed = restrict(&partial, gid).and_then(|()| {
        std::fs::rename(&partial, path).map_err(|e| {
            format!(
                "cannot move the admin socket into place at {}: {e}",
                path.display()
            )
        })
    });
    if let Err(message) = placed {
        let _ = std::fs::remove_file(&partial);
        return Err(WorkerError::Listener(message));
    }
    tracing::info!(socket = %path.display(), group = group.unwrap_or("-"), "admin socket ready");
    Ok(listener)
}

/// The group id of `name` in a group file (`name:password:gid:members` lines).
pub fn group_id(file: &Path, name: &str) -> Result<u32, WorkerError> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        WorkerError::Listener(format!(
            "cannot read {} to find admin.group {name:?}: {e}",
            file.display()
        ))
    })?;
    find_group(&text, name).ok_or_else(|| {
        WorkerError::Listener(format!(
            "admin.group {name:?} is not in {}; create it (groupadd {name}, or users.groups on NixOS) or remove admin.group",
            file.display()
        ))
    })
}

/// The gid of `name` in the text of a group file; `None` when absent or malformed.
pub fn find_group(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        let (found, _password, gid) = (fields.next()?, fields.next()?, fields.next()?);
        if found == name {
            gid.trim().parse().ok()
        } else {
            None
        }
    })
}

/// Creates the directory (0711: traversable, not listable, so the socket's own mode decides)
/// when missing, and refuses one that others could write in.
fn prepare_directory(dir: &Path) -> Result<(), WorkerError> {
    if !dir.exists() {
        std::fs::create_dir_all(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)))
            .map_err(|e| {
                WorkerError::Listener(format!(
                    "cannot create the admin socket's directory {}: {e}",
                    dir.display()
                ))
            })?;
    }
    let metadata = std::fs::metadata(dir).map_err(|e| {
        WorkerError::Listener(format!(
            "cannot read the admin socket's directory {}: {e}",
            dir.display()
        ))
    })?;
    let ours = rustix::process::geteuid().as_raw();
    if metadata.uid() != ours || metadata.mode() & 0o022 != 0 {
        return Err(WorkerError::Listener(format!(
            "the admin socket's directory {} is owned by uid {} with mode {:o}: anyone who may write in it could replace the socket; \
             use a directory owned by uid {ours} without group or other write permission (such as /run/fleetnode)",
            dir.display(),
            metadata.uid(),
            metadata.mode() & 0o7777,
        )));
    }
    Ok(())
}

/// Refuses to replace anything at `path` that is not a socket.
fn refuse_non_socket(path: &Path) -> Result<(), WorkerError> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => Ok(()),
        Ok(_) => Err(WorkerError::Listener(format!(
            "{} exists and is not a socket; remove it or choose another admin.socket",
            path.display()
        ))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(WorkerError::Listener(format!(
            "cannot inspect {} (admin.socket): {e}",
            path.display()
        ))),
    }
}

fn partial_name(path: &Path) -> PathBuf {
    let name = path.file_name().map_or_else(
        || "admin.sock".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    path.with_file_name(format!(".{name}.{}", std::process::id()))
}

/// Gives the socket its group and mode. Under its unit the agent runs with the admin group as
/// its group (`Group=`, which the NixOS module sets for `admin.group`), so the socket already
/// has it: the unit's system call filter refuses `chown` (it is in `@privileged`), and without
/// `CAP_CHOWN` it could only give a file to a group it is in anyway. Elsewhere (a root shell,
/// the tests) the socket is handed to the group.
fn restrict(path: &Path, gid: Option<u32>) -> Result<(), String> {
    if let Some(gid) = gid {
        let current = std::fs::metadata(path)
            .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?
            .gid();
        if current != gid {
            std::os::unix::fs::chown(path, None, Some(gid)).map_err(|e| {
                format!(
                    "cannot give the admin socket {} to gid {gid} (admin.group): {e}; \
                     run the agent with that group as its own (Group= in its unit, as the NixOS module does)",
                    path.display()
                )
            })?;
        }
    }
    let mode = if gid.is_some() {
        MODE_WITH_GROUP
    } else {
        MODE_ROOT_ONLY
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_found_by_exact_name() {
        let text =
            "root:x:0:\nfleetnode-admin:x:991:alice,bob\nfleetnode:x:990:\nbroken\nbad:x:nan:\n";
        assert_eq!(find_group(text, "fleetnode-admin"), Some(991));
        assert_eq!(find_group(text, "fleetnode"), Some(990));
        assert_eq!(find_group(text, "fleet"), None);
        assert_eq!(find_group(text, "bad"), None);
        assert_eq!(find_group(text, "broken"), None);
    }

    #[test]
    fn an_unknown_group_says_how_to_create_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("group");
        std::fs::write(&file, "root:x:0:\n").unwrap();
        let error = group_id(&file, "fleetnode-admin").unwrap_err();
        assert!(
            error.to_string().contains("groupadd fleetnode-admin"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn the_socket_is_root_only_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        let first = bind(&path, None).unwrap();
        drop(first);
        // The file of the first run is still there; a second bind takes its place.
        let _second = bind(&path, None).unwrap();
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o777, MODE_ROOT_ONLY);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("admin.sock")]);
    }

    #[tokio::test]
    async fn a_directory_others_may_write_in_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let error = bind(&dir.path().join("admin.sock"), None).unwrap_err();
        assert!(
            error.to_string().contains("could replace the socket"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn a_file_in_the_way_is_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, "not a socket").unwrap();
        let error = bind(&path, None).unwrap_err();
        assert!(error.to_string().contains("is not a socket"), "{error}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
    }
}
