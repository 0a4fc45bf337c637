//! A state file on this machine: written atomically (temp file, fsync, rename, fsync of the folder), mode 0600,
//! the previous version kept as `<state>.bak`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::{Location, StateError};

/// The file's bytes; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateError::Unreadable { at: Location::local(path), reason: e.to_string() }),
    }
}

pub fn write(path: &Path, json: &[u8]) -> Result<(), StateError> {
    let err = |e: std::io::Error| StateError::Write { at: Location::local(path), reason: e.to_string() };
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    create_private_dir(&dir).map_err(err)?;
    // tempfile creates the file with mode 0600, so the state is never readable by others, even briefly.
    let mut tmp = tempfile::Builder::new().prefix(".secep-state-").suffix(".tmp").tempfile_in(&dir).map_err(err)?;
    tmp.write_all(json).map_err(err)?;
    tmp.as_file().sync_all().map_err(err)?;
    keep_backup(path, &dir).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    // Make the rename itself durable.
    fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(err)?;
    Ok(())
}

/// Removes the file and its backup.
pub fn remove(path: &Path) -> Result<(), StateError> {
    let _ = fs::remove_file(backup_path(path));
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(StateError::Write { at: Location::local(path), reason: e.to_string() }),
    }
}

/// The previous version, kept as `<state>.bak` (itself written atomically) before each write: a hand edit or a bug
/// never costs more than the last write.
fn keep_backup(path: &Path, dir: &Path) -> std::io::Result<()> {
    let temp = || tempfile::Builder::new().prefix(".secep-state-").suffix(".tmp").to_owned();
    // A hard link to the previous version: nothing to copy or fsync (that version is on disk already, and it is
    // never changed in place), and the folder's fsync after the main rename makes this rename durable too.
    match temp().make_in(dir, |link| fs::hard_link(path, link)) {
        Ok(link) => return link.persist(backup_path(path)).map(|_| ()).map_err(|e| e.error),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {} // a file system without hard links: copy
    }
    let previous = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let mut tmp = temp().tempfile_in(dir)?;
    tmp.write_all(&previous)?;
    tmp.as_file().sync_all()?;
    tmp.persist(backup_path(path)).map_err(|e| e.error)?;
    Ok(())
}

pub fn backup_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".bak");
    state.with_file_name(name)
}

pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}
