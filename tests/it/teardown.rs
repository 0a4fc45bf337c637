//! Teardown after a crash, under AWS's rules and clock: `up` killed at any point, then a plain `down`, leaves
//! nothing tagged for the stack (what the dead run made but never recorded carries the state file's
//! `secep:lineage`); `down` killed at any point, then `down` again, too; and a plain `down` never deletes what
//! another state file of the same stack name made.

use crate::harness::{Aws, Project, Proxy, aws, emulator};
use crate::kill::{kill_at, mesh};

/// Everything tagged for the stack, kind by kind, with independent describes: `down::leftovers` and the log group.
async fn anything_left(aws: &Aws, p: &Project) -> Vec<String> {
    let mut left = crate::down::leftovers(aws, p).await;
    let group = format!("/secep/{}", p.stack);
    let groups = aws.logs.describe_log_groups().log_group_name_prefix(&group).send().await.unwrap();
    if groups.log_groups().iter().any(|g| g.log_group_name() == Some(group.as_str())) {
        left.push(format!("log group {group}"));
    }
    left
}

/// For each K: the project `make(K)` goes through `crash(K)` on a proxy of its own (with AWS's rules), then a plain
/// `down --delete-logs` through the same proxy, four at a time. Returns a line per K for the report.
async fn crash_then_down(
    positions: Vec<usize>,
    make: impl Fn(usize) -> Project + Sync,
    crash: impl Fn(&Project, &Proxy, usize) + Sync,
) -> Vec<String> {
    let aws = aws().await;
    let mut report = Vec::new();
    for batch in positions.chunks(4) {
        let projects: Vec<(usize, Project)> = batch.iter().map(|&k| (k, make(k))).collect();
        let upstream = &emulator();
        let downs: Vec<crate::harness::Run> = std::thread::scope(|scope| {
            let crash = &crash;
            let handles: Vec<_> = projects
                .iter()
                .map(|(k, p)| {
                    scope.spawn(move || {
                        let proxy = Proxy::start_on(upstream, &["--strict"]);
                        crash(p, &proxy, *k);
                        p.secep_at(&proxy.url, &["down", "--yes", "--delete-logs"])
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for ((k, p), down) in projects.iter().zip(downs) {
            assert_eq!(down.code, 0, "K={k}: a plain down after the crash failed:\n{}", down.stderr);
            assert_eq!(anything_left(&aws, p).await, Vec::<String>::new(), "K={k}: left behind\n{}", down.stderr);
            assert!(!p.state_path().exists(), "K={k}: the state file is removed once everything is gone");
            report.push(format!("K={k}: 0 left"));
        }
    }
    report
}

fn kill_up(p: &Project, proxy: &Proxy, k: usize) {
    kill_at(p, proxy, &["up"], k);
}

#[tokio::test]
async fn a_plain_down_after_up_is_killed_at_any_create_of_the_seed_config_leaves_nothing() {
    // Every mutating call of a fresh seed `up` (tests/it/kill.rs counts them): the VPC, the role, the endpoints,
    // the namespace, the ECS services (the cluster holds them, recorded or not), and everything between.
    let report = crash_then_down(
        (1..=40).collect(),
        |k| Project::from_shipped("secure-endpoints.toml", &format!("crash{k}")),
        kill_up,
    )
    .await;
    eprintln!("seed kill-then-down:\n{}", report.join("\n"));
}

#[tokio::test]
async fn a_plain_down_after_up_of_a_ten_service_mesh_is_killed_leaves_nothing() {
    let (text, _) = mesh(10);
    let report =
        crash_then_down(vec![3, 20, 45, 64], |k| Project::with_config(&format!("crashmesh{k}"), &text), kill_up).await;
    eprintln!("mesh kill-then-down:\n{}", report.join("\n"));
}

#[tokio::test]
async fn down_killed_at_any_point_is_finished_by_the_next_down() {
    // A seed `down` makes 30 mutating calls: the ECS services first, the namespace and the VPC last.
    let positions = vec![1, 3, 8, 14, 21, 29];
    let report = crash_then_down(
        positions,
        |k| Project::from_shipped("secure-endpoints.toml", &format!("downkill{k}")),
        |p, proxy, k| {
            p.secep_at(&proxy.url, &["up"]).success();
            kill_at(p, proxy, &["down", "--yes", "--delete-logs"], k);
        },
    )
    .await;
    eprintln!("down kill-then-down:\n{}", report.join("\n"));
}

#[tokio::test]
async fn two_state_files_of_one_stack_name_never_delete_each_others_resources() {
    // Two users deploy the same config, each with a state file of their own.
    let alice = Project::from_shipped("secure-endpoints.toml", "two-users");
    let aws = aws().await;
    alice.secep(&["up"]).success();
    let hers = anything_left(&aws, &alice).await;
    let bobs_state = alice.state_path().with_file_name("bob.state.json");
    let bob = |args: &[&str]| alice.secep(&[args, &["--state", bobs_state.to_str().unwrap()]].concat());

    let up = bob(&["up"]);
    assert_eq!(up.code, 1, "another state file's copy of the stack is not taken over silently:\n{}", up.stderr);
    assert!(up.stderr.contains("another state file made") && up.stderr.contains("--adopt"), "{}", up.stderr);
    assert!(!bobs_state.exists(), "a refused up writes no state file");
    let status = bob(&["status"]);
    assert!(status.stderr.contains("ANOTHER STATE") || status.stdout.contains("ANOTHER STATE"), "{}", status.stdout);

    let down = bob(&["down", "--yes", "--delete-logs"]);
    assert_eq!(down.code, 1, "what is left in place is reported as not done:\n{}", down.stderr);
    // Regression: a run that ended with an error left its pid in the lock file, so the next one reported it dead.
    assert!(!down.stderr.contains("ended without finishing"), "the refused up ended cleanly:\n{}", down.stderr);
    let vpc = hers.iter().find(|r| r.starts_with("vpc ")).unwrap().trim_start_matches("vpc ");
    assert!(
        down.stderr.contains("made from another state file") && down.stderr.contains(vpc),
        "Alice's resources are named:\n{}",
        down.stderr
    );
    assert_eq!(anything_left(&aws, &alice).await, hers, "Bob's plain down deleted nothing of Alice's");
    alice.secep(&["status"]).success();

    alice.secep(&["down", "--yes", "--delete-logs"]).success();
    assert_eq!(anything_left(&aws, &alice).await, Vec::<String>::new());
}

/// Ctrl-C inside a bounded wait (here: interface endpoints pending for a minute) ends it at once: `up` exits 130
/// with what it was waiting for, the endpoints stay recorded, and the next `up` finishes without duplicating them.
#[tokio::test]
async fn ctrl_c_while_waiting_for_endpoints_exits_130_and_the_next_up_resumes() {
    let proxy = Proxy::start(&["--strict"]);
    proxy.configure(r#"{"endpoint_pending_seconds": 60}"#);
    let p = Project::from_shipped("secure-endpoints.toml", "ctrl-c");
    let mut up = p.command(&proxy.url, &["up"]);
    let child = up.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let waiting = |calls: &[serde_json::Value]| {
        calls
            .iter()
            .filter(|c| c["operation"] == "DescribeVpcEndpoints" && c["injected"] == "rule:endpoint-pending")
            .count()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while waiting(&proxy.calls()) < 2 {
        assert!(std::time::Instant::now() < deadline, "up never waited for its endpoints");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let sent = std::process::Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted while waiting for VPC endpoint"), "{stderr}");

    let aws = crate::harness::aws_at(&proxy.url).await;
    let tagged = crate::harness::ec2_filter("tag:secep:stack", &p.stack);
    let endpoints = aws.ec2.describe_vpc_endpoints().filters(tagged.clone()).send().await.unwrap();
    let pending = endpoints.vpc_endpoints().iter().filter(|v| v.state().map(|s| s.as_str()) == Some("pending")).count();
    assert!(pending > 0, "the wait ended before the endpoints were available: {:?}", endpoints.vpc_endpoints());

    proxy.configure(r#"{"endpoint_pending_seconds": 0.45}"#);
    let again = p.secep_at(&proxy.url, &["up"]).success();
    let endpoints = aws.ec2.describe_vpc_endpoints().filters(tagged).send().await.unwrap();
    assert_eq!(endpoints.vpc_endpoints().len(), 4, "no endpoint made twice\n{}", again.stderr);
    p.secep_at(&proxy.url, &["down", "--yes", "--delete-logs"]).success();
}

/// Regression (EC2 API reference, ReleaseAddress): releasing an address already released answers `AuthFailure`
/// once the address is someone else's. A release whose answer was lost is retried by the SDK and meets exactly
/// that; it counts as gone once the account no longer lists the address, instead of failing the teardown.
#[tokio::test]
async fn an_address_already_released_answers_auth_failure_and_counts_as_gone() {
    let proxy = Proxy::start(&["--strict", "--fail-after-nth", "ReleaseAddress:1"]);
    let p = crate::egress::project("eip-twice", "egress = \"nat\"");
    let aws = aws().await;
    p.secep_at(&proxy.url, &["up"]).success();
    let down = p.secep_at(&proxy.url, &["down", "--yes", "--delete-logs"]).success();
    let refused =
        proxy.calls().iter().filter(|c| c["operation"] == "ReleaseAddress" && c["error"] == "AuthFailure").count();
    assert_eq!(refused, 1, "the retried release met AuthFailure (what the test is about)\n{}", down.stderr);
    assert_eq!(anything_left(&aws, &p).await, Vec::<String>::new(), "{}", down.stderr);
}
