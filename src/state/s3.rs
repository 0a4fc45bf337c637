//! A state shared by a team in S3, the way Terraform's S3 backend does it with `use_lockfile`: S3 is the engine.
//! - The lock is an object `KEY.lock` created with `If-None-Match: *` (only one creator wins), removed with
//!   `If-Match` on its own ETag (so nobody removes a lock they do not hold).
//! - Every write of the state is conditional on the ETag this run last read or wrote (`If-Match`; `If-None-Match: *`
//!   for the first), so a write from anyone else in between is detected and never overwritten.
//! - Always encrypted at rest (SSE-S3, or SSE-KMS with a key). The previous version is kept: by the bucket's
//!   versioning when it is on, else as `KEY.bak` (the state as the last run found it).

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::ServerSideEncryption;
use aws_smithy_types::error::display::DisplayErrorContext;
use serde::{Deserialize, Serialize};

use super::{Location, StateError};
use crate::aws::Clients;

#[derive(Debug)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    pub bucket: String,
    pub key: String,
    pub region: String,
    kms_key_id: Option<String>,
    /// The ETag of the state object as this run last read or wrote it; `None` while there is none.
    etag: Mutex<Option<String>>,
    /// The version this run read, until its first write keeps it as `KEY.bak` (when the bucket keeps no versions).
    previous: Mutex<Option<Vec<u8>>>,
}

/// Why an S3 call failed, as far as the state cares.
enum Failure {
    /// 412 (the condition did not hold) or 409 (a concurrent conditional write won).
    Precondition,
    NoSuchKey,
    NoSuchBucket,
    Denied(String),
    Other(String),
}

fn failure<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> Failure {
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.code().unwrap_or_default().to_string();
    match (status, code.as_str()) {
        (Some(412 | 409), _) | (_, "PreconditionFailed" | "ConditionalRequestConflict") => Failure::Precondition,
        (_, "NoSuchKey") => Failure::NoSuchKey,
        (_, "NoSuchBucket") => Failure::NoSuchBucket,
        (Some(403), _) | (_, "AccessDenied") => {
            Failure::Denied(err.message().map_or_else(|| "access denied".to_string(), str::to_string))
        }
        (Some(404), "" | "NotFound") => Failure::NoSuchKey,
        _ => Failure::Other(match err.message() {
            Some(m) => format!("{m} ({code})"),
            None => DisplayErrorContext(&err).to_string(),
        }),
    }
}

impl S3Store {
    /// Finds the bucket's region (never assumed: a bucket elsewhere is reached there) and connects to it.
    pub async fn connect(
        clients: &Clients,
        bucket: &str,
        key: &str,
        kms_key_id: Option<String>,
    ) -> Result<S3Store, StateError> {
        let at = Location::S3 { bucket: bucket.into(), key: key.into() };
        let probe = clients.s3(&clients.region);
        let region = match probe.get_bucket_location().bucket(bucket).send().await {
            // us-east-1 answers no constraint; "EU" is the old name of eu-west-1.
            Ok(out) => match out.location_constraint().map(|c| c.as_str()) {
                None | Some("") => "us-east-1".to_string(),
                Some("EU") => "eu-west-1".to_string(),
                Some(region) => region.to_string(),
            },
            Err(e) => return Err(error("s3:GetBucketLocation", &at, failure(e))),
        };
        let client = if region == clients.region { probe } else { clients.s3(&region) };
        Ok(S3Store {
            client,
            bucket: bucket.into(),
            key: key.into(),
            region,
            kms_key_id,
            etag: Mutex::new(None),
            previous: Mutex::new(None),
        })
    }

    pub fn location(&self) -> Location {
        Location::S3 { bucket: self.bucket.clone(), key: self.key.clone() }
    }

    fn lock_key(&self) -> String {
        format!("{}.lock", self.key)
    }

    fn backup_key(&self) -> String {
        format!("{}.bak", self.key)
    }

    /// The state object's bytes (and, remembered, its ETag); `None` when there is none yet.
    pub async fn read(&self) -> Result<Option<Vec<u8>>, StateError> {
        let out = match self.client.get_object().bucket(&self.bucket).key(&self.key).send().await {
            Ok(out) => out,
            Err(e) => match failure(e) {
                Failure::NoSuchKey => {
                    *self.etag.lock().expect("etag lock") = None;
                    return Ok(None);
                }
                f => return Err(error("s3:GetObject", &self.location(), f)),
            },
        };
        let etag = out.e_tag().map(str::to_string);
        let bytes = out.body.collect().await.map_err(|e| StateError::Unreadable {
            at: self.location(),
            reason: format!("the download broke off: {e}"),
        })?;
        let bytes = bytes.into_bytes().to_vec();
        *self.etag.lock().expect("etag lock") = etag;
        *self.previous.lock().expect("previous lock") = Some(bytes.clone());
        Ok(Some(bytes))
    }

    /// Writes the state, only over the version this run last read or wrote.
    pub async fn write(&self, json: &[u8]) -> Result<(), StateError> {
        let expected = self.etag.lock().expect("etag lock").clone();
        let put = self.encrypted(self.client.put_object().bucket(&self.bucket).key(&self.key));
        let put = match &expected {
            Some(etag) => put.if_match(etag),
            None => put.if_none_match("*"),
        };
        let out =
            put.body(ByteStream::from(json.to_vec())).content_type("application/json").send().await.map_err(|e| {
                match failure(e) {
                    Failure::Precondition => StateError::Changed { at: self.location(), created: expected.is_none() },
                    f => error("s3:PutObject", &self.location(), f),
                }
            })?;
        *self.etag.lock().expect("etag lock") = out.e_tag().map(str::to_string);
        // A versioned bucket keeps the history (S3 names each version). Without versioning, the version this run
        // found is kept as KEY.bak after its first write: one PUT per write after that (the group commit's), and
        // the backup undoes the whole run.
        let previous = self.previous.lock().expect("previous lock").take();
        if let Some(previous) = previous
            && !versioned(out.version_id())
        {
            let put = self.encrypted(self.client.put_object().bucket(&self.bucket).key(self.backup_key()));
            put.body(ByteStream::from(previous))
                .content_type("application/json")
                .send()
                .await
                .map_err(|e| error("s3:PutObject", &self.location().with_suffix(".bak"), failure(e)))?;
        }
        Ok(())
    }

    /// Removes the state (only the version this run last wrote) and its backup.
    pub async fn remove(&self) -> Result<(), StateError> {
        let expected = self.etag.lock().expect("etag lock").clone();
        if let Some(etag) = &expected {
            match self.client.delete_object().bucket(&self.bucket).key(&self.key).if_match(etag).send().await {
                Ok(_) => {}
                Err(e) => match failure(e) {
                    Failure::NoSuchKey => {}
                    Failure::Precondition => {
                        return Err(StateError::Changed { at: self.location(), created: false });
                    }
                    f => return Err(error("s3:DeleteObject", &self.location(), f)),
                },
            }
        }
        let _ = self.client.delete_object().bucket(&self.bucket).key(self.backup_key()).send().await;
        *self.etag.lock().expect("etag lock") = None;
        Ok(())
    }

    fn encrypted(
        &self,
        put: aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder,
    ) -> aws_sdk_s3::operation::put_object::builders::PutObjectFluentBuilder {
        match &self.kms_key_id {
            Some(key) => put.server_side_encryption(ServerSideEncryption::AwsKms).ssekms_key_id(key),
            None => put.server_side_encryption(ServerSideEncryption::Aes256),
        }
    }

    /// What `secep state show` prints of the object: its ETag, version, encryption.
    pub async fn describe(&self) -> Result<Vec<(String, String)>, StateError> {
        let mut lines = vec![("bucket region".to_string(), self.region.clone())];
        match self.client.head_object().bucket(&self.bucket).key(&self.key).send().await {
            Ok(out) => {
                let history = if versioned(out.version_id()) {
                    "the bucket's versioning (on)".to_string()
                } else {
                    format!("{} (the bucket's versioning is off)", self.location().with_suffix(".bak"))
                };
                lines.push(("history".into(), history));
                lines.push(("etag".into(), out.e_tag().unwrap_or("-").to_string()));
                if let Some(version) = out.version_id().filter(|v| *v != "null") {
                    lines.push(("version id".into(), version.to_string()));
                }
                let sse = match out.server_side_encryption() {
                    Some(ServerSideEncryption::AwsKms) => {
                        format!("SSE-KMS ({})", out.ssekms_key_id().unwrap_or("the account's aws/s3 key"))
                    }
                    Some(other) => format!("SSE-S3 ({})", other.as_str()),
                    None => "none reported".into(),
                };
                lines.push(("encryption".into(), sse));
            }
            Err(e) => match failure(e) {
                Failure::NoSuchKey => {}
                f => return Err(error("s3:GetObject", &self.location(), f)),
            },
        }
        Ok(lines)
    }

    /// Takes the lock or fails at once naming its holder and its age. `force` removes a lock a dead run left,
    /// only if it is still that same lock (its ETag), then takes it.
    pub async fn lock(&self, operation: &str, force: bool) -> Result<(S3Lock, Option<String>), StateError> {
        let at = self.location().with_suffix(".lock");
        let mine = Holder::me(operation);
        let body = serde_json::to_vec_pretty(&mine).expect("a holder serialises");
        let mut broken = None;
        for _ in 0..2 {
            let put = self.encrypted(self.client.put_object().bucket(&self.bucket).key(self.lock_key()));
            match put
                .if_none_match("*")
                .body(ByteStream::from(body.clone()))
                .content_type("application/json")
                .send()
                .await
            {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    let lock = S3Lock {
                        client: self.client.clone(),
                        bucket: self.bucket.clone(),
                        key: self.lock_key(),
                        etag,
                        released: false,
                    };
                    return Ok((lock, broken));
                }
                Err(e) => match failure(e) {
                    Failure::Precondition => {}
                    f => return Err(error("s3:PutObject", &at, f)),
                },
            }
            // Held: by whom, since when.
            let (holder, etag) = match self.client.get_object().bucket(&self.bucket).key(self.lock_key()).send().await {
                Ok(out) => {
                    let etag = out.e_tag().unwrap_or_default().to_string();
                    let bytes = out.body.collect().await.map(|b| b.into_bytes().to_vec()).unwrap_or_default();
                    (Holder::describe(&bytes), etag)
                }
                Err(e) => match failure(e) {
                    Failure::NoSuchKey => continue, // released meanwhile: try again
                    f => return Err(error("s3:GetObject", &at, f)),
                },
            };
            if !force {
                return Err(StateError::Locked { at: at.clone(), holder });
            }
            match self.client.delete_object().bucket(&self.bucket).key(self.lock_key()).if_match(&etag).send().await {
                Ok(_) => broken = Some(holder),
                Err(e) => match failure(e) {
                    // Someone else removed or replaced it meanwhile: the next round sees who holds it now.
                    Failure::Precondition | Failure::NoSuchKey => {}
                    f => return Err(error("s3:DeleteObject", &at, f)),
                },
            }
        }
        let holder = "another run that took it while this one was breaking the previous lock".to_string();
        Err(StateError::Locked { at, holder })
    }

    /// The lock's holder, if any (for `state show`).
    pub async fn lock_holder(&self) -> Result<Option<String>, StateError> {
        match self.client.get_object().bucket(&self.bucket).key(self.lock_key()).send().await {
            Ok(out) => {
                let bytes = out.body.collect().await.map(|b| b.into_bytes().to_vec()).unwrap_or_default();
                Ok(Some(Holder::describe(&bytes)))
            }
            Err(e) => match failure(e) {
                Failure::NoSuchKey => Ok(None),
                f => Err(error("s3:GetObject", &self.location().with_suffix(".lock"), f)),
            },
        }
    }
}

/// The state's lock in S3, held until released or dropped.
#[derive(Debug)]
pub struct S3Lock {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    etag: String,
    released: bool,
}

impl S3Lock {
    pub async fn release(mut self) {
        self.released = true;
        self.delete().await;
    }

    async fn delete(&self) {
        let delete = self.client.delete_object().bucket(&self.bucket).key(&self.key).if_match(&self.etag);
        if let Err(e) = delete.send().await {
            match failure(e) {
                Failure::NoSuchKey => {}
                Failure::Precondition => tracing::warn!(
                    "s3://{}/{} is no longer this run's lock (someone broke it with --force-unlock): left alone",
                    self.bucket,
                    self.key
                ),
                Failure::Denied(why) | Failure::Other(why) => tracing::warn!(
                    "could not remove the lock s3://{}/{}: {why}; the next run reports it, and --force-unlock removes it",
                    self.bucket,
                    self.key
                ),
                Failure::NoSuchBucket => {}
            }
        }
    }
}

/// A run that ends with an error, or with Ctrl-C, removes its lock too: only a killed run leaves one.
impl Drop for S3Lock {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        let Ok(handle) = tokio::runtime::Handle::try_current() else { return };
        if handle.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread {
            tokio::task::block_in_place(|| handle.block_on(self.delete()));
        }
    }
}

/// Who holds a lock: enough for a teammate to know whom to ask, and for anyone to see a lock is old.
#[derive(Debug, Serialize, Deserialize)]
struct Holder {
    who: String,
    host: String,
    pid: u32,
    operation: String,
    /// Unix seconds.
    started: u64,
    secep: String,
}

impl Holder {
    fn me(operation: &str) -> Holder {
        let who = ["USER", "LOGNAME", "USERNAME"].iter().find_map(|v| std::env::var(v).ok()).unwrap_or("?".into());
        Holder {
            who,
            host: hostname(),
            pid: std::process::id(),
            operation: operation.into(),
            started: now(),
            secep: env!("CARGO_PKG_VERSION").into(),
        }
    }

    fn describe(bytes: &[u8]) -> String {
        let Ok(h) = serde_json::from_slice::<Holder>(bytes) else {
            return "a lock object that does not say who holds it".into();
        };
        let age = now().saturating_sub(h.started);
        let gone = if h.host == hostname() && !std::path::Path::new(&format!("/proc/{}", h.pid)).exists() {
            "; that process no longer runs on this host: the run died"
        } else {
            ""
        };
        format!("{}@{}, pid {}, `secep {}`, locked {age}s ago{gone}", h.who, h.host, h.pid, h.operation)
    }
}

/// Whether an object's version id says its bucket keeps versions ("null" is the id of a version written while
/// versioning was off or suspended).
fn versioned(version_id: Option<&str>) -> bool {
    version_id.is_some_and(|v| !v.is_empty() && v != "null")
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs()
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "?".into())
}

fn error(action: &str, at: &Location, f: Failure) -> StateError {
    match f {
        Failure::NoSuchBucket => StateError::NoBucket { at: at.clone() },
        Failure::Denied(reason) => StateError::Denied { action: action.into(), at: at.clone(), reason },
        Failure::Precondition => StateError::Changed { at: at.clone(), created: false },
        Failure::NoSuchKey => StateError::Unreadable { at: at.clone(), reason: "no such object".into() },
        Failure::Other(reason) => StateError::S3 { action: action.into(), at: at.clone(), reason },
    }
}
