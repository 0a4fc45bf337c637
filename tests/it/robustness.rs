//! Crash safety and bad input: one writer at a time, corrupt state refused without touching anything, clear errors
//! for missing credentials, unreachable endpoints and the wrong region, secrets never printed, and convergence
//! under injected 5xx faults and throttling.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{Project, Proxy, aws, ec2_filter};

fn mutating(proxy: &Proxy) -> usize {
    proxy.calls().iter().filter(|c| c["mutating"] == true).count()
}

#[tokio::test]
async fn two_concurrent_ups_one_runs_the_other_fails_fast_naming_the_holder() {
    // Slow calls keep the first run busy while the second starts.
    let proxy = Proxy::start(&["--latency-ms", "150"]);
    let p = Project::from_shipped("secure-endpoints.toml", "lock");
    let mut first = p.command(&proxy.url, &["up"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
    // Wait until the first run holds the lock (its first call reached the proxy).
    for _ in 0..100 {
        if !proxy.calls().is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let second = p.secep_at(&proxy.url, &["up"]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains(&format!("another secep is working on this stack (pid {}", first.id())),
        "{}",
        second.stderr
    );
    assert!(first.wait().unwrap().success(), "the first run is not disturbed");
    let status = p.secep(&["status"]);
    assert_eq!(status.code, 0, "the state is intact: {}", status.stdout);
    let aws = aws().await;
    let vpcs = aws.ec2.describe_vpcs().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    assert_eq!(vpcs.vpcs().len(), 1, "no twin from the refused run");
}

#[tokio::test]
async fn a_run_that_died_is_reported_and_the_next_one_continues() {
    let p = Project::from_shipped("secure-endpoints.toml", "stale");
    p.secep(&["up"]).success();
    let lock = p.state_path().with_file_name(format!("{}.state.json.lock", p.stack));
    std::fs::write(&lock, "pid=999999 started=1\n").unwrap();
    let run = p.secep(&["up"]).success();
    assert!(run.stderr.contains("(pid 999999") && run.stderr.contains("ended without finishing"), "{}", run.stderr);
}

#[tokio::test]
async fn corrupt_truncated_and_future_state_files_are_refused_and_nothing_changes() {
    let p = Project::from_shipped("secure-endpoints.toml", "corrupt");
    p.secep(&["up"]).success();
    let good = std::fs::read_to_string(p.state_path()).unwrap();
    let cases = [
        ("truncated", good[..good.len() / 2].to_string(), "is not valid"),
        ("not JSON", "this is not a state file".to_string(), "is not valid"),
        ("future format", good.replacen("\"format_version\": 1", "\"format_version\": 7", 1), "format version 7"),
        (
            "another stack",
            good.replacen(&format!("\"stack\": \"{}\"", p.stack), "\"stack\": \"someone-else\"", 1),
            "belongs to stack `someone-else`",
        ),
    ];
    let proxy = Proxy::start(&[]);
    for (what, text, expected) in cases {
        std::fs::write(p.state_path(), &text).unwrap();
        for command in [&["up"][..], &["down", "--yes"][..], &["status"][..]] {
            let run = p.secep_at(&proxy.url, command);
            assert_eq!(run.code, 1, "{what} / {command:?}: {}", run.stderr);
            assert!(
                run.stderr.contains(expected) && run.stderr.contains(".state.json"),
                "{what} / {command:?}: {}",
                run.stderr
            );
            assert_eq!(std::fs::read_to_string(p.state_path()).unwrap(), text, "{what}: the file is not touched");
        }
    }
    assert_eq!(mutating(&proxy), 0, "nothing changed live");
    std::fs::write(p.state_path(), &good).unwrap();
    p.secep(&["down", "--yes"]).success();
}

#[tokio::test]
async fn the_previous_state_is_kept_as_a_backup() {
    let p = Project::from_shipped("secure-endpoints.toml", "backup");
    p.secep(&["up"]).success();
    let backup = p.state_path().with_file_name(format!("{}.state.json.bak", p.stack));
    let previous: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&backup).unwrap()).unwrap();
    let current: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(p.state_path()).unwrap()).unwrap();
    assert_eq!(previous["nodes"].as_object().unwrap().len() + 1, current["nodes"].as_object().unwrap().len());
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777, 0o600);
    p.secep(&["down", "--yes"]).success();
    assert!(!backup.exists() && !p.state_path().exists(), "down removes both once everything is gone");
}

#[test]
fn missing_credentials_unreachable_endpoint_and_wrong_region_are_clear_errors() {
    let p = Project::from_shipped("secure-endpoints.toml", "inputs");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());

    let out = p
        .command(&endpoint, &["up"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("no usable AWS credentials") && stderr.contains("AWS_ACCESS_KEY_ID=test"), "{stderr}");
    // Regression: the SDK's error context ended in a Debug dump of the raw IMDS response.
    assert!(!stderr.contains("raw: Response") && !stderr.contains("SdkBody"), "no SDK dump: {stderr}");
    assert!(listener.accept().is_err(), "no call without credentials");

    let unreachable = p.secep_at("http://127.0.0.1:1", &["up", "--max-attempts", "1"]);
    assert_eq!(unreachable.code, 1);
    assert!(
        unreachable.stderr.contains("could not reach AWS") && unreachable.stderr.contains("--endpoint-url"),
        "{}",
        unreachable.stderr
    );
    assert!(!p.state_path().exists(), "no state file for a run that created nothing");

    p.secep(&["up"]).success();
    let other_region = p.secep(&["up", "--region", "eu-west-1"]);
    assert_eq!(other_region.code, 1);
    assert!(
        other_region.stderr.contains("in region us-east-1, but this run targets eu-west-1"),
        "{}",
        other_region.stderr
    );
    for bad in [&["up", "--max-attempts", "0"][..], &["frobnicate"][..], &["up", "--parallelism", "many"][..]] {
        let run = p.secep(bad);
        assert_eq!(run.code, 1, "{bad:?}: {}", run.stderr);
        assert!(run.stderr.starts_with("error:"), "{bad:?}: {}", run.stderr);
    }
    p.secep(&["down", "--yes"]).success();
}

#[test]
fn secret_environment_values_never_appear_in_output_logs_or_state() {
    const SECRET: &str = "hunter2-do-not-print";
    let p = Project::from_shipped("secure-endpoints.toml", "secret");
    let config = std::fs::read_to_string(p.config_path()).unwrap();
    p.write_config(
        &config.replace("LOG_LEVEL = \"info\"", &format!("LOG_LEVEL = \"info\", DB_PASSWORD = \"{SECRET}\"")),
    );
    let mut seen = String::new();
    for args in
        [&["up", "--json", "-vv"][..], &["status", "--json", "-vv"][..], &["plan", "-vv"][..], &["up", "-vv"][..]]
    {
        let run = p.secep(args);
        assert!(run.code == 0, "{args:?}: {}", run.stderr);
        seen.push_str(&run.stdout);
        seen.push_str(&run.stderr);
    }
    seen.push_str(&std::fs::read_to_string(p.state_path()).unwrap());
    assert!(!seen.contains(SECRET), "a secret value was printed or stored");
    p.secep(&["down", "--yes"]).success();
}

#[tokio::test]
async fn up_and_down_converge_through_random_faults_and_throttling() {
    // 10% of calls fail with 500/503 (seeded) and EC2 mutating calls are throttled: the retries absorb both.
    // Without the lingering-ENI rule: its check lists every cluster's services in the shared emulator on each
    // DeleteSecurityGroup/DeleteSubnet attempt, which under the full suite took over 30 s per attempt (tests/it/down.rs
    // covers the rule itself).
    let proxy = Proxy::start(&[
        "--fault-rate",
        "0.1",
        "--fault-seed",
        "7",
        "--throttle",
        "ec2-mutating=5:10",
        "--strict",
        "--no-rule",
        "eni-in-use",
    ]);
    let p = Project::from_shipped("shop.toml", "faults");
    let up = p.secep_at(&proxy.url, &["up", "--json"]).success();
    let retries = up.json()["api_calls"]["retries"].as_u64().unwrap();
    let injected = proxy.calls().iter().filter(|c| c["injected"] == "fault" || c["injected"] == "throttle").count();
    assert!(injected > 0 && retries > 0, "faults were injected ({injected}) and retried ({retries})");
    assert_eq!(p.secep(&["status"]).code, 0, "the stack is exactly as declared");
    let down = p.secep_at(&proxy.url, &["down", "--yes", "--json"]).success();
    assert!(down.json()["ok"] == true);
    let aws = aws().await;
    let vpcs = aws.ec2.describe_vpcs().filters(ec2_filter("tag:secep:stack", &p.stack)).send().await.unwrap();
    assert!(vpcs.vpcs().is_empty());
    eprintln!(
        "faults: {injected} injected, up retried {retries} times, down retried {}",
        down.json()["api_calls"]["retries"]
    );
}

/// Regression: at N = 50 behind an EC2-style token bucket (5/s), retries with exponential backoff ran calls out of
/// attempts ("Request limit exceeded") and the SDK's retry quota (100 throttled retries) failed the rest. Now each
/// service's calls go through an AIMD concurrency window, the SDK paces attempts once throttled, and throttled
/// retries cost no quota: a deploy against a tighter bucket than EC2's still finishes.
#[tokio::test]
async fn a_throttled_account_slows_the_deploy_down_instead_of_failing_it() {
    let proxy = Proxy::start(&["--throttle", "ec2-mutating=4:4"]);
    let (text, _) = crate::kill::mesh(10);
    let p = Project::with_config("throttled", &text);
    let up = p.secep_at(&proxy.url, &["up", "--json"]);
    assert_eq!(up.code, 0, "{}", up.stderr);
    let throttled = up.json()["api_calls"]["throttled"].as_u64().unwrap();
    let answered = proxy.calls().iter().filter(|c| c["injected"] == "throttle").count() as u64;
    assert!(
        throttled > 0 && throttled == answered,
        "secep saw {throttled} throttling answers, the proxy sent {answered}"
    );
    // Every service exists, checked independently of secep.
    let aws = aws().await;
    let names: Vec<String> = (0..10).map(|i| format!("s{i}")).collect();
    let services = aws
        .ecs
        .describe_services()
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .cluster(&p.stack)
        .set_services(Some(names))
        .send()
        .await
        .unwrap();
    assert_eq!(services.services().iter().filter(|s| s.status() == Some("ACTIVE")).count(), 10);
    p.secep(&["down", "--yes"]).success();
}

/// Regression: ECS's `LimitExceededException` (a quota: clusters, services per cluster, ...) is on the SDK's list of
/// throttling codes, so an account at its limit was retried with backoff, then reported as slow. Now the first
/// answer ends the step, naming the quota.
#[test]
fn a_quota_answer_is_reported_as_the_quota_and_not_retried() {
    let proxy = Proxy::start(&["--strict", "--fail-nth", "CreateCluster:1:LimitExceededException:400"]);
    let p = Project::from_shipped("secure-endpoints.toml", "quota");
    let up = p.secep_at(&proxy.url, &["up"]);
    // Only the first call fails: a retry would have succeeded, and so would the run.
    assert_eq!(up.code, 1, "{}", up.stderr);
    assert!(up.stderr.contains("LimitExceededException"), "{}", up.stderr);
    let attempts = proxy.calls().iter().filter(|c| c["operation"] == "CreateCluster").count();
    assert_eq!(attempts, 1, "a quota is not retried");
}
