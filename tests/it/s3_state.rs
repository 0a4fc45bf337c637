//! Team state in S3 (`--state s3://BUCKET/KEY` or `[state] url`): two working directories stand for two machines
//! sharing one state; the lock object, conditional writes, a killed holder, migration both ways, and bad objects.
//! Every check of the stack is an independent describe; the S3 objects are read with an S3 client of the test's own.

use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::harness::{Aws, Project, Proxy, aws, unique};
use crate::kill::{census, expected, kill_at};

/// A fresh bucket (unique: a shared emulator may hold others') and the state URL of a key in it.
async fn bucket(aws: &Aws) -> (String, String) {
    let name = unique("secep-state").to_lowercase();
    aws.s3.create_bucket().bucket(&name).send().await.unwrap();
    let url = format!("s3://{name}/teams/platform/secure-endpoints.state.json");
    (name, url)
}

async fn object(aws: &Aws, bucket: &str, key: &str) -> Option<Vec<u8>> {
    let out = aws.s3.get_object().bucket(bucket).key(key).send().await.ok()?;
    Some(out.body.collect().await.unwrap().into_bytes().to_vec())
}

async fn keys(aws: &Aws, bucket: &str) -> Vec<String> {
    let out = aws.s3.list_objects_v2().bucket(bucket).send().await.unwrap();
    out.contents().iter().filter_map(|o| o.key()).map(str::to_string).collect()
}

const KEY: &str = "teams/platform/secure-endpoints.state.json";
const LOCK: &str = "teams/platform/secure-endpoints.state.json.lock";

/// Two machines (two folders, one stack, one S3 state): while Alice's `up` holds the lock, Bob's is refused at once,
/// naming her; the topology exists once; Bob's later `up`, `status` and `down` work from the shared state.
#[tokio::test]
async fn two_machines_racing_on_one_s3_state_make_the_stack_once() {
    let aws = aws().await;
    let (bucket, url) = bucket(&aws).await;
    // A versioned bucket, as the README advises: the history is S3's, no KEY.bak.
    let versioning = aws_sdk_s3::types::VersioningConfiguration::builder()
        .status(aws_sdk_s3::types::BucketVersioningStatus::Enabled)
        .build();
    aws.s3.put_bucket_versioning().bucket(&bucket).versioning_configuration(versioning).send().await.unwrap();
    let alice = Project::from_shipped("secure-endpoints.toml", "team");
    let bob = Project::from_shipped_as("secure-endpoints.toml", alice.stack.clone());
    // Slow calls keep Alice's run busy while Bob's starts.
    let slow = Proxy::start(&["--strict", "--latency-ms", "100"]);
    let alices_up = alice
        .command(&slow.url, &["up", "--state", &url])
        .env("USER", "alice")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while object(&aws, &bucket, LOCK).await.is_none() {
        assert!(Instant::now() < deadline, "Alice's up never took the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let bobs_up = bob.secep_at(&slow.url, &["up", "--state", &url]);
    assert_eq!(bobs_up.code, 1, "Bob's up must be refused while Alice's runs:\n{}", bobs_up.stderr);
    assert!(
        bobs_up.stderr.contains("alice@") && bobs_up.stderr.contains("`secep up`, locked"),
        "the refusal names the holder and the lock's age:\n{}",
        bobs_up.stderr
    );
    assert!(bobs_up.stderr.contains(&format!("{url}.lock is held")), "{}", bobs_up.stderr);
    let alices = alices_up.wait_with_output().unwrap();
    assert!(alices.status.success(), "Alice's run is not disturbed:\n{}", String::from_utf8_lossy(&alices.stderr));
    assert_eq!(census(&aws, &alice).await, expected(2, 2, 2), "the topology exists once");
    assert_eq!(keys(&aws, &bucket).await, vec![KEY.to_string()], "a finished run removes its lock; no KEY.bak");
    let versions = aws.s3.list_object_versions().bucket(&bucket).prefix(KEY).send().await.unwrap();
    assert!(versions.versions().len() > 1, "the bucket keeps the earlier versions");
    let shown = bob.secep_at(&slow.url, &["state", "show", "--state", &url]).success();
    assert!(shown.stderr.contains("versioning (on)"), "{}", shown.stderr);
    assert!(!alice.state_path().exists() && !bob.state_path().exists(), "no local state file on either machine");

    // The rest through the same proxy (its clock saw Alice's tasks start), without the latency.
    slow.configure(r#"{"latency_ms": 0}"#);
    let again = bob.secep_at(&slow.url, &["up", "--state", &url]).success();
    assert!(again.stderr.contains("Up to date"), "Bob's up reads Alice's state:\n{}", again.stderr);
    let status = bob.secep_at(&slow.url, &["status", "--state", &url]);
    assert_eq!(status.code, 0, "in sync from the second machine:\n{}{}", status.stdout, status.stderr);
    bob.secep_at(&slow.url, &["down", "--yes", "--delete-logs", "--state", &url]).success();
    assert_eq!(crate::down::leftovers(&aws, &alice).await, Vec::<String>::new());
    assert_eq!(keys(&aws, &bucket).await, Vec::<String>::new(), "state, backup and lock are gone");
}

/// A holder killed with SIGKILL leaves its lock: the next run refuses, saying so with the lock's age and that the
/// process is gone; `--force-unlock` breaks it and `up` converges without a duplicate.
#[tokio::test]
async fn a_killed_holders_lock_is_reported_and_force_unlock_then_up_converges() {
    let aws = aws().await;
    let (bucket, url) = bucket(&aws).await;
    let p = Project::from_shipped("secure-endpoints.toml", "s3kill");
    let proxy = Proxy::start(&["--strict"]);
    kill_at(&p, &proxy, &["up", "--state", &url], 12);
    assert!(object(&aws, &bucket, LOCK).await.is_some(), "a killed run cannot remove its lock");

    let refused = p.secep_at(&proxy.url, &["up", "--state", &url]);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    for says in ["is held", "locked", "no longer runs on this host", "--force-unlock"] {
        assert!(refused.stderr.contains(says), "missing {says:?}:\n{}", refused.stderr);
    }
    let shown = p.secep_at(&proxy.url, &["state", "show", "--state", &url]).success();
    assert!(shown.stderr.contains("lock: ") && shown.stderr.contains("`secep up`"), "{}", shown.stderr);

    let resumed = p.secep_at(&proxy.url, &["up", "--force-unlock", "--state", &url]).success();
    assert!(resumed.stderr.contains("broke the lock of"), "{}", resumed.stderr);
    let backup = format!("{KEY}.bak");
    assert_eq!(keys(&aws, &bucket).await, vec![KEY.to_string(), backup], "unversioned: the state and its backup");
    assert_eq!(census(&aws, &p).await, expected(2, 2, 2), "no duplicate after the resume");
    assert!(object(&aws, &bucket, LOCK).await.is_none());
    p.secep_at(&proxy.url, &["down", "--yes", "--delete-logs", "--state", &url]).success();
    assert_eq!(crate::down::leftovers(&aws, &p).await, Vec::<String>::new());
}

/// The seed `up` killed at points across the run, then resumed, with the state in S3: what the dead run made is
/// adopted (its lineage is in the S3 state written before the first change), never duplicated; `down` leaves nothing.
#[tokio::test]
async fn up_killed_and_resumed_with_an_s3_state_leaves_no_duplicate() {
    let aws = aws().await;
    let (bucket, url) = bucket(&aws).await;
    for k in [1, 10, 20, 30, 40] {
        let p = Project::from_shipped("secure-endpoints.toml", &format!("s3resume{k}"));
        let url = url.replace("secure-endpoints", &p.stack);
        let proxy = Proxy::start(&["--strict"]);
        kill_at(&p, &proxy, &["up", "--state", &url], k);
        p.secep_at(&proxy.url, &["up", "--force-unlock", "--state", &url]).success();
        assert_eq!(census(&aws, &p).await, expected(2, 2, 2), "K={k}: duplicates or missing resources");
        let down = p.secep_at(&proxy.url, &["down", "--yes", "--delete-logs", "--state", &url]).success();
        // Regression: the summary said "state file removed" of an S3 object.
        assert!(down.stderr.contains(&format!("state {url} removed")), "{}", down.stderr);
        assert_eq!(crate::down::leftovers(&aws, &p).await, Vec::<String>::new(), "K={k}");
    }
    assert_eq!(keys(&aws, &bucket).await, Vec::<String>::new());
}

/// Someone writes the state object while a run works (a broken lock, a hand edit): the run's next write is refused
/// by S3 (If-Match), the run says so naming the object, and the other write is what the object still holds. The next
/// `up` reads that version and finishes the stack without a duplicate.
#[tokio::test]
async fn a_write_from_elsewhere_during_a_run_is_detected_and_not_overwritten() {
    let aws = aws().await;
    let (bucket, url) = bucket(&aws).await;
    let p = Project::from_shipped("secure-endpoints.toml", "s3race");
    let slow = Proxy::start(&["--strict", "--latency-ms", "100"]);
    let run =
        p.command(&slow.url, &["up", "--state", &url]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // The run writes the state before its first change; rewrite that version at once, as another writer would.
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        if let Some(bytes) = object(&aws, &bucket, KEY).await {
            break bytes;
        }
        assert!(Instant::now() < deadline, "the run never wrote its state");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let doc: serde_json::Value = serde_json::from_slice(&first).unwrap();
    let theirs = serde_json::to_vec(&doc).unwrap(); // the same state, written by someone else: a new ETag
    aws.s3.put_object().bucket(&bucket).key(KEY).body(theirs.clone().into()).send().await.unwrap();

    let out = run.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the lost race fails the run:\n{stderr}");
    assert!(
        stderr.contains(&format!("{url} was changed by someone else")) && stderr.contains("nothing was overwritten"),
        "{stderr}"
    );
    assert_eq!(object(&aws, &bucket, KEY).await.unwrap(), theirs, "the other write is kept as it was");
    assert!(object(&aws, &bucket, LOCK).await.is_none(), "a run that fails removes its lock");

    p.secep(&["up", "--state", &url]).success();
    assert_eq!(census(&aws, &p).await, expected(2, 2, 2), "what the refused run made is adopted, not duplicated");
    p.secep(&["down", "--yes", "--delete-logs", "--state", &url]).success();
    assert_eq!(crate::down::leftovers(&aws, &p).await, Vec::<String>::new());
}

/// local → S3 (named by the config's `[state] url`) → local: `plan` finds nothing to do after each move, the source
/// is removed only after the copy, and `state show` tells where the state is and what it holds.
#[tokio::test]
async fn migrating_local_to_s3_and_back_changes_no_resource() {
    let aws = aws().await;
    let (bucket, url) = bucket(&aws).await;
    let p = Project::from_shipped("secure-endpoints.toml", "migrate");
    p.secep(&["up"]).success();
    let local = p.state_path();
    let lineage =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(&local).unwrap()).unwrap()["nonce"]
            .as_str()
            .unwrap()
            .to_string();

    let moved = p.secep(&["state", "migrate", "--to", &url]).success();
    assert!(moved.stderr.contains("Migrated") && moved.stderr.contains("[state]"), "{}", moved.stderr);
    assert!(!local.exists(), "the local file is removed once the copy is confirmed");
    assert!(object(&aws, &bucket, KEY).await.is_some());
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(&format!("{config}\n[state]\nurl = \"{url}\"\n"));
    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 0, "nothing to do after the move to S3:\n{}{}", plan.stdout, plan.stderr);
    let shown = p.secep(&["state", "show"]).success();
    for says in [url.as_str(), lineage.as_str(), "SSE-S3", "versioning is off", "lock: not held"] {
        assert!(shown.stderr.contains(says), "state show lacks {says:?}:\n{}", shown.stderr);
    }

    let back = local.to_str().unwrap().to_string();
    p.secep(&["state", "migrate", "--to", &back]).success();
    assert!(local.exists() && object(&aws, &bucket, KEY).await.is_none(), "back in the local file only");
    p.write_config(&config);
    let plan = p.secep(&["plan"]);
    assert_eq!(plan.code, 0, "nothing to do after the move back:\n{}{}", plan.stdout, plan.stderr);
    p.secep(&["down", "--yes", "--delete-logs"]).success();
    assert_eq!(keys(&aws, &bucket).await, Vec::<String>::new());
}

/// Objects that are not this stack's state, and a bucket that does not exist: clear errors, nothing changed.
#[tokio::test]
async fn a_corrupt_or_foreign_object_or_a_missing_bucket_is_refused_and_left_alone() {
    let aws = aws().await;
    let (bucket, url) = bucket(&aws).await;
    let p = Project::from_shipped("secure-endpoints.toml", "s3bad");
    let put =
        |body: &'static str| aws.s3.put_object().bucket(&bucket).key(KEY).body(body.as_bytes().to_vec().into()).send();

    put(r#"{"version": 4, "terraform_version": "1.10.0", "resources": []}"#).await.unwrap();
    let up = p.secep(&["up", "--state", &url]);
    assert_eq!(up.code, 1);
    assert!(up.stderr.contains(&format!("state {url} is not valid")), "{}", up.stderr);
    put(r#"{"format_version": 1, "stack": "someone-else", "region": "us-east-1", "nodes": {}}"#).await.unwrap();
    let up = p.secep(&["up", "--state", &url]);
    assert!(up.code == 1 && up.stderr.contains("belongs to stack `someone-else`"), "{}", up.stderr);
    assert_eq!(
        object(&aws, &bucket, KEY).await.unwrap(),
        br#"{"format_version": 1, "stack": "someone-else", "region": "us-east-1", "nodes": {}}"#.to_vec(),
        "the foreign object is left as it was"
    );
    assert_eq!(keys(&aws, &bucket).await, vec![KEY.to_string()], "no lock or backup left behind");
    assert_eq!(crate::down::leftovers(&aws, &p).await, Vec::<String>::new(), "nothing was created");

    let missing = p.secep(&["plan", "--state", "s3://no-such-bucket-for-secep/state.json"]);
    assert!(
        missing.code == 1
            && missing.stderr.contains("bucket of state s3://no-such-bucket-for-secep/state.json does not exist"),
        "{}",
        missing.stderr
    );
    let typo = p.secep(&["plan", "--state", "s3://Bad_Bucket/k"]);
    assert!(typo.code != 0 && typo.stderr.contains("not an S3 bucket name"), "{}", typo.stderr);
}
