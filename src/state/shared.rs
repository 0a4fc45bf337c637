//! The state as a run's concurrent steps share it. A change returns once a write that contains it is on disk, so a
//! resource is still recorded before anything that depends on it starts. Changes made while a write is in flight go
//! out together in the next one (group commit): a burst of steps finishing at once costs two writes, not one each.
//! The changes wait for the writer asynchronously, so while one runtime thread syncs, the others go on with calls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::{Record, StateError, StateFile};
use crate::model::NodeId;

pub struct SharedState {
    file: Mutex<StateFile>,
    /// Changes made in memory so far, and how many of them are on disk; both only grow.
    changes: AtomicU64,
    written: AtomicU64,
    disk_writes: AtomicU64,
    /// One write at a time, held until it is on disk: versions reach the disk in order.
    writer: tokio::sync::Mutex<()>,
}

impl SharedState {
    pub fn new(file: StateFile) -> Arc<SharedState> {
        Arc::new(SharedState {
            file: Mutex::new(file),
            changes: AtomicU64::new(0),
            written: AtomicU64::new(0),
            disk_writes: AtomicU64::new(0),
            writer: tokio::sync::Mutex::new(()),
        })
    }

    /// The state in memory, for reading (a poisoned lock still holds a consistent map: changes are single inserts).
    pub fn lock(&self) -> MutexGuard<'_, StateFile> {
        self.file.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a node; returns once the file on disk has it.
    pub async fn record(&self, node: &NodeId, record: Record) -> Result<(), StateError> {
        let change = {
            let mut file = self.lock();
            file.set(node, record);
            self.changes.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.write_through(change).await
    }

    /// Forgets a node (its resource is gone); returns once the file on disk no longer has it.
    pub async fn forget(&self, node: &NodeId) -> Result<(), StateError> {
        let change = {
            let mut file = self.lock();
            if !file.unset(node) {
                return Ok(());
            }
            self.changes.fetch_add(1, Ordering::SeqCst) + 1
        };
        self.write_through(change).await
    }

    async fn write_through(&self, change: u64) -> Result<(), StateError> {
        let _writer = self.writer.lock().await;
        if self.written.load(Ordering::SeqCst) >= change {
            return Ok(()); // the write before ours took our change along
        }
        let (snapshot, upto) = {
            let mut file = self.lock();
            (file.snapshot(), self.changes.load(Ordering::SeqCst))
        };
        // While it is written (a local file on this thread, with no await in it, so a dropped future cannot cut it
        // short; an S3 object with one PUT), the other runtime threads carry on with the calls, and changes made
        // meanwhile wait (asynchronously) on `writer` to share the next write.
        snapshot.write().await?;
        self.lock().on_disk = true;
        self.written.store(upto, Ordering::SeqCst);
        let writes = self.disk_writes.fetch_add(1, Ordering::SeqCst) + 1;
        tracing::debug!(changes = upto, writes, "state file written");
        Ok(())
    }
}

impl SharedState {
    /// Removes the state from its store, once every recorded resource is gone (after the writes in flight).
    pub async fn remove(&self) -> Result<(), StateError> {
        let _writer = self.writer.lock().await;
        let store = self.lock().store.clone();
        store.remove().await?;
        self.lock().on_disk = false;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Record {
        Record { id: id.into(), arn: None, digest: "d".into() }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn changes_made_during_a_write_go_out_together_and_each_returns_once_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state.json");
        let state = SharedState::new(StateFile::open(&path, "s", "us-east-1").unwrap());
        // A write in flight: everything recorded meanwhile waits for it.
        let in_flight = state.writer.lock().await;
        let tasks: Vec<_> = (0..50)
            .map(|i| {
                let (state, path) = (state.clone(), path.clone());
                tokio::spawn(async move {
                    let node = NodeId::group(&i.to_string());
                    state.record(&node, record(&format!("sg-{i}"))).await.unwrap();
                    StateFile::open(&path, "s", "us-east-1").unwrap().get(&node).is_some()
                })
            })
            .collect();
        while state.changes.load(Ordering::SeqCst) < 50 {
            tokio::task::yield_now().await;
        }
        assert!(!path.exists(), "nothing is written while the other write holds the file");
        drop(in_flight);
        for task in tasks {
            assert!(task.await.unwrap(), "a record returned before the file had it");
        }
        assert_eq!(state.disk_writes.load(Ordering::SeqCst), 1, "fifty changes, one write");
        assert_eq!(StateFile::open(&path, "s", "us-east-1").unwrap().nodes().len(), 50);

        state.forget(&NodeId::group("7")).await.unwrap();
        state.forget(&NodeId::group("7")).await.unwrap(); // already gone: nothing more to write
        assert!(StateFile::open(&path, "s", "us-east-1").unwrap().get(&NodeId::group("7")).is_none());
        assert_eq!(state.disk_writes.load(Ordering::SeqCst), 2);
    }
}
