//! An exclusive advisory lock on a state file, held for the whole of a state-changing command. The lock file names
//! its holder (pid, start time), so a second run can say who is busy, and a run can tell that the previous one died.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::StateError;

/// Held until dropped; the operating system releases it if the process dies.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    /// Set when the previous holder died without finishing: (pid, seconds since its start).
    pub stale: Option<(u32, u64)>,
}

pub fn lock_path(state: &Path) -> PathBuf {
    let mut name = state.file_name().unwrap_or_default().to_os_string();
    name.push(".lock");
    state.with_file_name(name)
}

impl StateLock {
    /// Takes the lock or fails at once, naming the holder. `force` breaks a lock held by a hung process (the lock
    /// file is replaced, so the old holder keeps a lock on a file nobody uses any more).
    pub fn acquire(state: &Path, force: bool) -> Result<StateLock, StateError> {
        let path = lock_path(state);
        let err = |e: std::io::Error| StateError::Write { path: path.clone(), reason: e.to_string() };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            super::create_private_dir(dir).map_err(err)?;
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
                return Err(StateError::Locked { path, holder: describe(&holder) });
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
        Ok(StateLock { _file: file, stale: stale.map(|(pid, started)| (pid, now.saturating_sub(started))) })
    }

    /// Marks a clean finish, so the next run does not report this one as dead (dropping the lock does the same).
    pub fn release(self) {}
}

/// A run that ends, even with an error, ends cleanly: only a killed process leaves its name in the lock file.
impl Drop for StateLock {
    fn drop(&mut self) {
        let _ = self._file.set_len(0);
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
        let first = StateLock::acquire(&state, false).unwrap();
        let second = StateLock::acquire(&state, false).unwrap_err().to_string();
        assert!(second.contains(&format!("pid {}", std::process::id())), "{second}");
        first.release();
        let third = StateLock::acquire(&state, false).unwrap();
        assert!(third.stale.is_none(), "a released lock is not stale");
    }

    #[test]
    fn a_dead_holder_is_reported_as_stale() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("s.state.json");
        std::fs::write(lock_path(&state), "pid=999999 started=1\n").unwrap();
        let lock = StateLock::acquire(&state, false).unwrap();
        assert_eq!(lock.stale.map(|(pid, _)| pid), Some(999999));
    }
}
