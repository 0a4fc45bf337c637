//! The state's exclusive lock, held for the whole of a state-changing command.
//! - A local state: an advisory lock (flock) on `<state>.lock`, which names its holder (pid, start time), so a second
//!   run can say who is busy, and a run can tell that the previous one died (the operating system releases the lock
//!   of a dead process; its name stays in the file).
//! - An S3 state: the object `KEY.lock` (see `s3`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::s3::{S3Lock, S3Store};
use super::{Location, StateError};

/// Held until released or dropped.
#[derive(Debug)]
pub struct StateLock {
    held: Held,
    /// What the user should know about the lock's previous holder: it died without finishing, or its lock was
    /// broken with --force-unlock.
    pub notice: Option<String>,
}

#[derive(Debug)]
enum Held {
    File(FileLock),
    S3(S3Lock),
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    state.with_file_name(name)
}

impl StateLock {
    pub(super) fn local(state: &Path, force: bool) -> Result<StateLock, StateError> {
        let (lock, stale) = FileLock::acquire(state, force)?;
        let notice = stale.map(|(pid, age)| {
            format!(
                "the previous run on this stack (pid {pid}, started {age}s ago) ended without finishing; what it created is recorded, and this run continues from there"
            )
        });
        Ok(StateLock { held: Held::File(lock), notice })
    }

    pub(super) async fn s3(store: &S3Store, operation: &str, force: bool) -> Result<StateLock, StateError> {
        let (lock, broken) = store.lock(operation, force).await?;
        let notice = broken.map(|holder| {
            format!(
                "broke the lock of {holder}; what that run created is recorded or carries this state's lineage, and this run continues from there"
            )
        });
        Ok(StateLock { held: Held::S3(lock), notice })
    }

    /// Who holds a local state's lock, without taking it (`state show`).
    pub fn local_holder(state: &Path) -> Option<String> {
        let path = lock_path(state);
        let mut file = OpenOptions::new().read(true).write(true).open(&path).ok()?;
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        match file.try_lock() {
            Err(std::fs::TryLockError::WouldBlock) => Some(describe(&text)),
            _ => parse(&text).map(|(pid, _)| format!("not held; its last holder, pid {pid}, ended without finishing")),
        }
    }

    /// Ends the lock. `forget`: the state is gone too, so a local lock file goes with it (a later `up` starts a new
    /// lifecycle with a new one).
    pub async fn release(self, forget: bool) {
        match self.held {
            Held::File(lock) => {
                let path = lock.path.clone();
                drop(lock);
                if forget {
                    let _ = std::fs::remove_file(path);
                }
            }
            Held::S3(lock) => lock.release().await,
        }
    }
}

/// The local lock file, locked.
#[derive(Debug)]
struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Takes the lock or fails at once, naming the holder; also returns a previous holder that died: (pid, seconds
    /// since its start). `force` breaks a lock held by a hung process (the lock file is replaced, so the old holder
    /// keeps a lock on a file nobody uses any more).
    fn acquire(state: &Path, force: bool) -> Result<(FileLock, Option<(u32, u64)>), StateError> {
        let path = lock_path(state);
        let err = |e: std::io::Error| StateError::Write { at: Location::local(&path), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::local::create_private_dir(dir).map_err(err)?;
        }
        if force {
            let _ = std::fs::remove_file(&path);
        }
        let mut file = open(&path).map_err(err)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(StateError::Locked { at: Location::local(&path), holder: describe(&holder) });
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(err(e)),
        }
        // Whoever wrote the file last and is gone did not finish (a finished run leaves it empty).
        let mut previous = String::new();
        file.read_to_string(&mut previous).map_err(err)?;
        let stale = parse(&previous).filter(|(pid, _)| *pid != std::process::id());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        file.set_len(0).and_then(|()| file.rewind()).map_err(err)?;
        writeln!(file, "pid={} started={now}", std::process::id()).and_then(|()| file.sync_all()).map_err(err)?;
        let stale = stale.map(|(pid, started)| (pid, now.saturating_sub(started)));
        Ok((FileLock { file, path }, stale))
    }
}

/// A run that ends, even with an error, ends cleanly: only a killed process leaves its name in the lock file.
impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.file.set_len(0);
    }
}

fn open(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

fn parse(text: &str) -> Option<(u32, u64)> {
    let mut pid = None;
    let mut started = None;
    for part in text.split_whitespace() {
        if let Some(v) = part.strip_prefix("pid=") {
            pid = v.parse().ok();
        } else if let Some(v) = part.strip_prefix("started=") {
            started = v.parse().ok();
        }
    }
    Some((pid?, started?))
}

fn describe(holder: &str) -> String {
    match parse(holder) {
        Some((pid, started)) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            format!("pid {pid}, started {}s ago", now.saturating_sub(started))
        }
        None => "a process that did not say who it is".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.state.json");
        let first = FileLock::acquire(&state, false).unwrap();
        let second = FileLock::acquire(&state, false).unwrap_err().to_string();
        assert!(second.contains(&format!("pid {}", std::process::id())), "{second}");
        drop(first);
        let (_third, stale) = FileLock::acquire(&state, false).unwrap();
        assert!(stale.is_none(), "a released lock is not stale");
    }

    #[test]
    fn a_dead_holder_is_reported_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.state.json");
        std::fs::write(lock_path(&state), "pid=999999 started=1\n").unwrap();
        let (_lock, stale) = FileLock::acquire(&state, false).unwrap();
        assert_eq!(stale.map(|(pid, _)| pid), Some(999999));
    }
}
