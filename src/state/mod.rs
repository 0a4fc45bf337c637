//! The record of what secep created: for each node, its AWS id/ARN and the digest of the spec it was created from.
//! It lives in a local file (the default; see `local`) or in S3 for a team (see `s3`), and is written after every
//! change; changes made while a write is in flight share the next one (see `SharedState`).

mod local;
mod location;
mod lock;
mod s3;
mod shared;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::aws::Clients;
use crate::model::NodeId;

pub use local::backup_path;
pub use location::Location;
pub use lock::StateLock;
pub use s3::S3Store;
pub use shared::SharedState;

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
    /// How many times the state was written in this lifecycle (as Terraform's `serial`): shows a change at a glance.
    #[serde(default)]
    pub serial: u64,
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

/// The README's list of what the S3 state needs, for the hints.
const S3_ACTIONS: &str = "s3:GetObject, s3:PutObject and s3:DeleteObject on the key and on KEY.lock and KEY.bak and s3:GetBucketLocation on the bucket";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot read state {at}: {reason}")]
    Unreadable { at: Location, reason: String },
    #[error(
        "state {at} is not valid: {reason}\n  hint: nothing was changed; restore it from a backup or version control ({at}.bak, or an older version of the S3 object), or move it away and run `secep down --adopt` to find the stack's resources by tag"
    )]
    Invalid { at: Location, reason: String },
    #[error(
        "state {at} has format version {found}, but this secep understands up to {FORMAT_VERSION}\n  hint: use the newer secep that wrote it"
    )]
    FutureVersion { at: Location, found: u32 },
    #[error(
        "state {at} belongs to stack `{found}`, not `{expected}`\n  hint: pass the right state with --state, or the config of stack `{found}` with -c"
    )]
    OtherStack { at: Location, found: String, expected: String },
    #[error(
        "state {at} records stack `{stack}` in region {recorded}, but this run targets {requested}\n  hint: pass --region {recorded}, or use another --state for a second copy of the stack"
    )]
    OtherRegion { at: Location, stack: String, recorded: String, requested: String },
    #[error("cannot write state {at}: {reason}")]
    Write { at: Location, reason: String },
    #[error(
        "another secep is working on this stack ({holder}): {at} is held\n  hint: wait for it to finish; if it hangs, stop it; if it died (killed, its machine lost), pass --force-unlock"
    )]
    Locked { at: Location, holder: String },
    #[error(
        "{at} was {} by someone else since this run read it (a run whose lock was broken, or a hand edit): nothing was overwritten\n  hint: what this run made is tagged with the state's lineage; look at it with `secep state show`, then run again: the next run reads the new version and finds what this one made",
        if *created { "created" } else { "changed" }
    )]
    Changed { at: Location, created: bool },
    #[error(
        "the S3 bucket of state {at} does not exist, or these credentials cannot see it\n  hint: check the bucket name in --state / [state] url, or create it (README, \"Team state in S3\")"
    )]
    NoBucket { at: Location },
    #[error("access denied: {action} on {at} ({reason})\n  hint: the S3 state needs {S3_ACTIONS}")]
    Denied { action: String, at: Location, reason: String },
    #[error("{action} on {at} failed: {reason}")]
    S3 { action: String, at: Location, reason: String },
}

/// Where the state is kept, and how it is read and written there.
#[derive(Debug, Clone)]
pub enum Store {
    Local(PathBuf),
    S3(Arc<S3Store>),
}

impl Store {
    /// Connects to the state's location (for S3: finds the bucket's region).
    pub async fn connect(at: &Location, clients: &Clients, kms_key_id: Option<&str>) -> Result<Store, StateError> {
        Ok(match at {
            Location::Local(path) => Store::Local(path.clone()),
            Location::S3 { bucket, key } => {
                Store::S3(Arc::new(S3Store::connect(clients, bucket, key, kms_key_id.map(str::to_string)).await?))
            }
        })
    }

    pub fn location(&self) -> Location {
        match self {
            Store::Local(path) => Location::Local(path.clone()),
            Store::S3(s3) => s3.location(),
        }
    }

    async fn read(&self) -> Result<Option<Vec<u8>>, StateError> {
        match self {
            Store::Local(path) => local::read(path),
            Store::S3(s3) => s3.read().await,
        }
    }

    /// A local write has no await in it: written on this thread, a dropped future cannot cut it short.
    async fn write(&self, json: &[u8]) -> Result<(), StateError> {
        match self {
            Store::Local(path) => local::write(path, json),
            Store::S3(s3) => s3.write(json).await,
        }
    }

    async fn remove(&self) -> Result<(), StateError> {
        match self {
            Store::Local(path) => local::remove(path),
            Store::S3(s3) => s3.remove().await,
        }
    }

    /// The state's exclusive lock, for a command that changes the stack (`operation` names it to others).
    pub async fn lock(&self, operation: &str, force: bool) -> Result<StateLock, StateError> {
        match self {
            Store::Local(path) => StateLock::local(path, force),
            Store::S3(s3) => StateLock::s3(s3, operation, force).await,
        }
    }
}

/// The state and its content in memory.
#[derive(Debug)]
pub struct StateFile {
    store: Store,
    doc: StateDoc,
    on_disk: bool,
}

/// The default location: `.secep/<stack>.state.json` under the working directory.
pub fn default_path(stack: &str) -> PathBuf {
    Path::new(".secep").join(format!("{stack}.state.json"))
}

impl StateFile {
    /// Loads a local state file, or starts an empty state (not yet written) when there is none.
    pub fn open(path: &Path, stack: &str, region: &str) -> Result<StateFile, StateError> {
        let bytes = local::read(path)?;
        StateFile::from_bytes(Store::Local(path.to_path_buf()), bytes, stack, region)
    }

    /// Loads the state from its store, or starts an empty one (not yet written) when there is none.
    pub async fn load(store: Store, stack: &str, region: &str) -> Result<StateFile, StateError> {
        let bytes = store.read().await?;
        StateFile::from_bytes(store, bytes, stack, region)
    }

    fn from_bytes(store: Store, bytes: Option<Vec<u8>>, stack: &str, region: &str) -> Result<StateFile, StateError> {
        let at = store.location();
        let Some(bytes) = bytes else {
            let doc = StateDoc {
                format_version: FORMAT_VERSION,
                stack: stack.into(),
                region: region.into(),
                nonce: new_nonce(stack),
                serial: 0,
                nodes: BTreeMap::new(),
                generations: BTreeMap::new(),
            };
            return Ok(StateFile { store, doc, on_disk: false });
        };
        let mut doc = parse(&at, &bytes)?;
        if doc.stack != stack {
            return Err(StateError::OtherStack { at, found: doc.stack, expected: stack.into() });
        }
        if doc.region != region {
            return Err(StateError::OtherRegion {
                at,
                stack: doc.stack,
                recorded: doc.region,
                requested: region.into(),
            });
        }
        if doc.nonce.is_empty() {
            // Written by a release before lineages: this lifecycle gets one from now on.
            doc.nonce = new_nonce(stack);
        }
        Ok(StateFile { store, doc, on_disk: true })
    }

    /// Reads and checks a local state file without binding it to a stack; `None` when the file does not exist.
    pub fn read(path: &Path) -> Result<Option<StateDoc>, StateError> {
        local::read(path)?.map(|bytes| parse(&Location::local(path), &bytes)).transpose()
    }

    pub fn location(&self) -> Location {
        self.store.location()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn doc(&self) -> &StateDoc {
        &self.doc
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

    /// Writes the state, even with nothing recorded yet, before a run's first change: what that change makes
    /// carries this lifecycle's lineage, which a later `down` then finds even if the run dies before recording it.
    pub async fn begin(&mut self) -> Result<(), StateError> {
        if self.on_disk { Ok(()) } else { self.save().await }
    }

    /// Writes this content to the store as it is (a migration's copy; the store must hold no state yet).
    pub async fn save(&mut self) -> Result<(), StateError> {
        self.snapshot().write().await?;
        self.on_disk = true;
        Ok(())
    }

    /// The same state in another store (a migration), not yet written there.
    pub fn moved_to(&self, store: Store) -> StateFile {
        StateFile { store, doc: self.doc.clone(), on_disk: false }
    }

    pub fn nodes(&self) -> &BTreeMap<NodeId, Record> {
        &self.doc.nodes
    }

    /// Records a node and writes a local file before returning (unit tests; a run records through `SharedState`).
    #[cfg(test)]
    pub fn record(&mut self, node: &NodeId, record: Record) -> Result<(), StateError> {
        self.set(node, record);
        let snapshot = self.snapshot();
        let Store::Local(path) = &snapshot.store else { panic!("record() is for local test states") };
        local::write(path, &snapshot.json)?;
        self.on_disk = true;
        Ok(())
    }

    /// Removes the state (and its backup); only once every recorded resource is gone.
    pub async fn remove(&mut self) -> Result<(), StateError> {
        self.store.remove().await?;
        self.on_disk = false;
        Ok(())
    }

    /// The state's next content, taken under the lock and written outside it (see `SharedState`).
    fn snapshot(&mut self) -> Snapshot {
        self.doc.serial += 1;
        let mut json = serde_json::to_vec_pretty(&self.doc).expect("state always serialises");
        json.push(b'\n');
        Snapshot { store: self.store.clone(), json }
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

/// Checks and reads a state's bytes.
fn parse(at: &Location, bytes: &[u8]) -> Result<StateDoc, StateError> {
    // Read the version first, so a newer layout is reported as such and not as garbage.
    #[derive(Deserialize)]
    struct Version {
        format_version: u32,
    }
    let invalid = |e: serde_json::Error| StateError::Invalid { at: at.clone(), reason: e.to_string() };
    let version: Version = serde_json::from_slice(bytes).map_err(invalid)?;
    if version.format_version > FORMAT_VERSION {
        return Err(StateError::FutureVersion { at: at.clone(), found: version.format_version });
    }
    serde_json::from_slice(bytes).map_err(invalid)
}

/// One version of the state, ready to be written.
struct Snapshot {
    store: Store,
    json: Vec<u8>,
}

impl Snapshot {
    async fn write(&self) -> Result<(), StateError> {
        self.store.write(&self.json).await
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
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

    #[tokio::test]
    async fn begin_writes_the_lineage_before_anything_is_recorded_and_a_deleted_node_gets_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state.json");
        let mut state = StateFile::open(&path, "s", "us-east-1").unwrap();
        let nonce = state.nonce().to_string();
        state.begin().await.unwrap();
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
