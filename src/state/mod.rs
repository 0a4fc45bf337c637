//! The local record of what secep created: for each node, its AWS id/ARN and the digest of the spec it was created
//! from. Written atomically (temp file, fsync, rename, fsync of the folder) after every change, mode 0600; changes
//! made while a write is in flight share the next one (see `SharedState`).

mod lock;
mod shared;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::model::NodeId;

/// Bumped when the layout changes incompatibly; older secep refuses newer files instead of misreading them.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateDoc {
    pub format_version: u32,
    pub stack: String,
    pub region: String,
    /// Random per stack lifecycle (a new one after `down` removed the file): salts idempotency tokens so that a
    /// re-created stack never replays the tokens of a deleted one.
    #[serde(default)]
    pub nonce: String,
    pub nodes: BTreeMap<NodeId, Record>,
    /// How many times each node was forgotten (deleted) in this lifecycle: a node created again gets new
    /// idempotency tokens, never the ones of the resource it follows.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub generations: BTreeMap<NodeId, u32>,
}

/// What secep knows about one created resource.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The AWS id (vpc-…, subnet-…, sg-…, sgr-…, ns-…, srv-…) or ARN where the kind has no shorter id.
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arn: Option<String>,
    /// Digest of the spec the resource was created from (see `model::Spec::digest`).
    pub digest: String,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state file {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error(
        "state file {} is not valid: {reason}\n  hint: nothing was changed; restore the file from a backup or version control, or move it away and run `secep down --adopt` to find the stack's resources by tag",
        path.display()
    )]
    Invalid { path: PathBuf, reason: String },
    #[error(
        "state file {} has format version {found}, but this secep understands up to {FORMAT_VERSION}\n  hint: use the newer secep that wrote it",
        path.display()
    )]
    FutureVersion { path: PathBuf, found: u32 },
    #[error(
        "state file {} belongs to stack `{found}`, not `{expected}`\n  hint: pass the right file with --state, or the config of stack `{found}` with -c",
        path.display()
    )]
    OtherStack { path: PathBuf, found: String, expected: String },
    #[error(
        "state file {} records stack `{stack}` in region {recorded}, but this run targets {requested}\n  hint: pass --region {recorded}, or use another --state file for a second copy of the stack",
        path.display()
    )]
    OtherRegion { path: PathBuf, stack: String, recorded: String, requested: String },
    #[error("cannot write state file {}: {reason}", path.display())]
    Write { path: PathBuf, reason: String },
    #[error(
        "another secep is working on this stack ({holder}): {} is locked\n  hint: wait for it to finish; if that process hangs, stop it, or pass --force-unlock",
        path.display()
    )]
    Locked { path: PathBuf, holder: String },
}

/// The state file on disk and its content in memory.
#[derive(Debug)]
pub struct StateFile {
    path: PathBuf,
    doc: StateDoc,
    on_disk: bool,
}

pub use lock::{StateLock, lock_path};
pub use shared::SharedState;

/// The default location: `.secep/<stack>.state.json` under the working directory.
pub fn default_path(stack: &str) -> PathBuf {
    Path::new(".secep").join(format!("{stack}.state.json"))
}

impl StateFile {
    /// Loads the file, or starts an empty state (not yet written) when there is none.
    pub fn open(path: &Path, stack: &str, region: &str) -> Result<StateFile, StateError> {
        let doc = match Self::read(path)? {
            Some(doc) => doc,
            None => {
                let doc = StateDoc {
                    format_version: FORMAT_VERSION,
                    stack: stack.into(),
                    region: region.into(),
                    nonce: new_nonce(stack),
                    nodes: BTreeMap::new(),
                    generations: BTreeMap::new(),
                };
                return Ok(StateFile { path: path.to_path_buf(), doc, on_disk: false });
            }
        };
        if doc.stack != stack {
            return Err(StateError::OtherStack { path: path.into(), found: doc.stack, expected: stack.into() });
        }
        if doc.region != region {
            return Err(StateError::OtherRegion {
                path: path.into(),
                stack: doc.stack,
                recorded: doc.region,
                requested: region.into(),
            });
        }
        let mut doc = doc;
        if doc.nonce.is_empty() {
            // Written by a release before lineages: this lifecycle gets one from now on.
            doc.nonce = new_nonce(stack);
        }
        Ok(StateFile { path: path.to_path_buf(), doc, on_disk: true })
    }

    /// Reads and checks a state file without binding it to a stack; `None` when the file does not exist.
    pub fn read(path: &Path) -> Result<Option<StateDoc>, StateError> {
        let text = match fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StateError::Unreadable { path: path.into(), reason: e.to_string() }),
        };
        // Read the version first, so a newer layout is reported as such and not as garbage.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let invalid = |e: serde_json::Error| StateError::Invalid { path: path.into(), reason: e.to_string() };
        let version: Version = serde_json::from_str(&text).map_err(invalid)?;
        if version.format_version > FORMAT_VERSION {
            return Err(StateError::FutureVersion { path: path.into(), found: version.format_version });
        }
        let doc: StateDoc = serde_json::from_str(&text).map_err(invalid)?;
        Ok(Some(doc))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn exists_on_disk(&self) -> bool {
        self.on_disk
    }

    pub fn get(&self, node: &NodeId) -> Option<&Record> {
        self.doc.nodes.get(node)
    }

    /// The lifecycle's nonce: the `secep:lineage` tag of everything it creates, and the salt of its tokens.
    pub fn nonce(&self) -> &str {
        &self.doc.nonce
    }

    /// How many times the node was deleted in this lifecycle.
    pub fn generation(&self, node: &NodeId) -> u32 {
        self.doc.generations.get(node).copied().unwrap_or(0)
    }

    /// Writes the file, even with nothing recorded yet, before a run's first change: what that change makes
    /// carries this lifecycle's lineage, which a later `down` then finds even if the run dies before recording it.
    pub fn begin(&mut self) -> Result<(), StateError> {
        if self.on_disk { Ok(()) } else { self.save() }
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, Record> {
        &self.doc.nodes
    }

    /// Records a node and writes the file before returning.
    pub fn record(&mut self, node: &NodeId, record: Record) -> Result<(), StateError> {
        self.set(node, record);
        self.save()
    }

    /// Removes the file (and its backup); only once every recorded resource is gone.
    pub fn remove_file(&mut self) -> Result<(), StateError> {
        let _ = fs::remove_file(backup_path(&self.path));
        match fs::remove_file(&self.path) {
            Ok(()) => {
                self.on_disk = false;
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StateError::Write { path: self.path.clone(), reason: e.to_string() }),
        }
    }

    fn save(&mut self) -> Result<(), StateError> {
        self.snapshot().write()?;
        self.on_disk = true;
        Ok(())
    }

    /// The file's next content, taken under the lock and written outside it (see `SharedState`).
    fn snapshot(&self) -> Snapshot {
        let mut json = serde_json::to_vec_pretty(&self.doc).expect("state always serialises");
        json.push(b'\n');
        Snapshot { path: self.path.clone(), json }
    }

    /// Changes memory only; `SharedState` writes it.
    fn set(&mut self, node: &NodeId, record: Record) {
        self.doc.nodes.insert(node.clone(), record);
    }

    fn unset(&mut self, node: &NodeId) -> bool {
        let removed = self.doc.nodes.remove(node).is_some();
        if removed {
            *self.doc.generations.entry(node.base().clone()).or_default() += 1;
        }
        removed
    }
}

/// One version of the state file, ready to be written.
struct Snapshot {
    path: PathBuf,
    json: Vec<u8>,
}

impl Snapshot {
    fn write(&self) -> Result<(), StateError> {
        let err = |e: std::io::Error| StateError::Write { path: self.path.clone(), reason: e.to_string() };
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        create_private_dir(&dir).map_err(err)?;
        // tempfile creates the file with mode 0600, so the state is never readable by others, even briefly.
        let mut tmp = tempfile::Builder::new().prefix(".secep-state-").suffix(".tmp").tempfile_in(&dir).map_err(err)?;
        tmp.write_all(&self.json).map_err(err)?;
        tmp.as_file().sync_all().map_err(err)?;
        keep_backup(&self.path, &dir).map_err(err)?;
        tmp.persist(&self.path).map_err(|e| err(e.error))?;
        // Make the rename itself durable.
        fs::File::open(&dir).and_then(|d| d.sync_all()).map_err(err)?;
        Ok(())
    }
}

/// Unpredictable enough to never repeat between two lifecycles of a stack (time, process, a stack-local address).
fn new_nonce(stack: &str) -> String {
    use sha2::{Digest, Sha256};
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let local = 0u8;
    let seed = format!("{stack}/{}/{}/{:p}", now.as_nanos(), std::process::id(), &local);
    Sha256::digest(seed.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
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

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn record(id: &str) -> Record {
        Record { id: id.into(), arn: None, digest: "d".into() }
    }

    #[test]
    fn writes_atomically_with_private_mode_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/s.state.json");
        let mut state = StateFile::open(&path, "s", "us-east-1").unwrap();
        assert!(!state.exists_on_disk() && !path.exists(), "an empty state is not written until something is recorded");
        state.record(&NodeId::Vpc, record("vpc-1")).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let again = StateFile::open(&path, "s", "us-east-1").unwrap();
        assert_eq!(again.get(&NodeId::Vpc).unwrap().id, "vpc-1");
        state.record(&NodeId::subnet("a"), record("subnet-1")).unwrap();
        let backup: StateDoc = serde_json::from_str(&fs::read_to_string(backup_path(&path)).unwrap()).unwrap();
        assert!(
            backup.nodes.contains_key(&NodeId::Vpc) && !backup.nodes.contains_key(&NodeId::subnet("a")),
            "the backup is the previous version"
        );
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "no temp file may remain");
    }

    #[test]
    fn begin_writes_the_lineage_before_anything_is_recorded_and_a_deleted_node_gets_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state.json");
        let mut state = StateFile::open(&path, "s", "us-east-1").unwrap();
        let nonce = state.nonce().to_string();
        state.begin().unwrap();
        let again = StateFile::open(&path, "s", "us-east-1").unwrap();
        assert!(again.nodes().is_empty() && again.nonce() == nonce, "the lineage survives a crash before any record");
        state.record(&NodeId::Vpc, record("vpc-1")).unwrap();
        assert_eq!(state.generation(&NodeId::Vpc), 0);
        assert!(state.unset(&NodeId::Vpc));
        assert!(!state.unset(&NodeId::Vpc), "forgetting twice counts once");
        assert_eq!(state.generation(&NodeId::Vpc), 1, "created again, it gets new idempotency tokens");
    }

    #[test]
    fn a_state_without_a_nonce_gets_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state.json");
        fs::write(&path, r#"{"format_version": 1, "stack": "s", "region": "us-east-1", "nodes": {}}"#).unwrap();
        assert!(!StateFile::open(&path, "s", "us-east-1").unwrap().nonce().is_empty());
    }

    #[test]
    fn truncated_file_is_an_error_that_names_the_file_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state.json");
        fs::write(&path, "{\"format_version\": 1, \"stack\": \"s\", \"nod").unwrap();
        let err = StateFile::open(&path, "s", "us-east-1").unwrap_err().to_string();
        assert!(err.contains("s.state.json") && err.contains("is not valid"), "{err}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "{\"format_version\": 1, \"stack\": \"s\", \"nod");
    }

    #[test]
    fn future_format_and_other_stack_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state.json");
        fs::write(&path, r#"{"format_version": 99, "stack": "s", "region": "us-east-1", "nodes": {}, "new": 1}"#)
            .unwrap();
        assert!(matches!(StateFile::open(&path, "s", "us-east-1"), Err(StateError::FutureVersion { found: 99, .. })));
        fs::write(&path, r#"{"format_version": 1, "stack": "other", "region": "us-east-1", "nodes": {}}"#).unwrap();
        assert!(matches!(StateFile::open(&path, "s", "us-east-1"), Err(StateError::OtherStack { .. })));
        assert!(matches!(StateFile::open(&path, "other", "eu-west-1"), Err(StateError::OtherRegion { .. })));
    }
}
