//! The single integration-test binary: each module is one feature, driven like a user would drive it.

mod config_errors;
mod converge;
mod down;
mod egress;
mod half_made;
mod harness;
mod iam_policy;
mod kill;
mod proxy;
mod public;
mod robustness;
mod rollout;
mod s3_state;
mod secrets;
mod snapshots;
mod status;
mod teardown;
mod up;
