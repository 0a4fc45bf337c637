//! The fidelity proxy's own suite (localstack/tests, Python with boto3, the AWS SDK for Python): every behaviour
//! against the real error codes AWS returns. Run from here so that `cargo test` is the one test command.

use std::process::Command;

use crate::harness::repo;

#[test]
fn fidelity_proxy_behaves_like_aws() {
    let install = Command::new("bash").arg(repo().join("localstack/install.sh")).status().unwrap();
    assert!(install.success(), "localstack/install.sh failed");
    let out = Command::new(repo().join("localstack/.venv/bin/python"))
        .args(["-m", "unittest", "discover", "-s", "localstack/tests"])
        .current_dir(repo())
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "proxy tests failed:\n{report}");
    assert!(report.contains("\nOK"), "{report}");
}
