//! The commands. Each one loads the config, connects, opens the state, walks the graph and reports.

pub mod down;
pub mod iam_policy;
pub mod inspect;
pub mod state;
pub mod up;

use std::path::PathBuf;

use anyhow::Result;

use crate::aws::{Clients, Target};
use crate::config::Config;
use crate::output::Console;
use crate::state::{Location, StateFile, StateLock, Store, default_path};

/// The flags every command shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub config: PathBuf,
    /// `--state`: a path or `s3://BUCKET/KEY` (else the config's `[state] url`, else the local default).
    pub state: Option<Location>,
    pub target: Target,
    /// Break a lock held by a hung secep.
    pub force_unlock: bool,
}

/// Exit codes, documented in the README.
pub mod exit {
    pub const OK: u8 = 0;
    pub const ERROR: u8 = 1;
    /// `status` / `plan`: the live stack differs from the config (like `terraform plan -detailed-exitcode`).
    pub const DIFFERENCES: u8 = 2;
    /// `status`: a service's rollout failed, was rolled back, or keeps failing tasks.
    pub const UNHEALTHY: u8 = 3;
    pub const INTERRUPTED: u8 = 130;
}

/// Config, clients and state, in that order: a bad config fails before any AWS call.
pub struct Opened {
    pub config: Config,
    pub clients: Clients,
    pub state: StateFile,
    /// Held by state-changing commands for their whole run.
    pub lock: Option<StateLock>,
}

/// `lock`: take the state's exclusive lock (commands that change the stack, named by `operation`), before anything
/// is read.
pub async fn open(common: &Common, console: &Console, lock: Option<&str>) -> Result<Opened> {
    let config = Config::load(&common.config)?;
    let mut target = common.target.clone();
    if target.region.is_none() {
        target.region = config.stack.region.clone();
    }
    for warning in &config.warnings {
        console.warn(warning);
    }
    let clients = Clients::connect(&target).await?;
    check_secret_regions(&config, &clients.region)?;
    let store = connect_state(common, &config, &clients).await?;
    let lock = match lock {
        Some(operation) => Some(store.lock(operation, common.force_unlock).await?),
        None => None,
    };
    if let Some(notice) = lock.as_ref().and_then(|l| l.notice.as_ref()) {
        console.warn(notice);
    }
    let state = StateFile::load(store, &config.stack.name, &clients.region).await?;
    tracing::debug!(state = %state.location(), region = %clients.region, "opened");
    Ok(Opened { config, clients, state, lock })
}

/// Where this run's state is: `--state`, else the config's `[state] url`, else `.secep/<stack>.state.json`.
pub fn state_location(common: &Common, config: &Config) -> Location {
    common
        .state
        .clone()
        .or_else(|| config.state.url.clone())
        .unwrap_or_else(|| Location::Local(default_path(&config.stack.name)))
}

pub async fn connect_state(common: &Common, config: &Config, clients: &Clients) -> Result<Store> {
    let at = state_location(common, config);
    Ok(Store::connect(&at, clients, config.state.kms_key_id.as_deref()).await?)
}

/// Tasks read their secrets in their own region: with the region known only now (no `[stack] region`), an ARN of
/// another region or partition is refused before any change.
fn check_secret_regions(config: &Config, region: &str) -> Result<()> {
    use crate::config::secrets::{SecretArn, partition_of};
    let partition = partition_of(region);
    for service in config.services.values() {
        for (name, arn) in &service.secrets {
            let Ok(secret) = SecretArn::parse(arn) else { continue };
            if secret.region != region || secret.partition != partition {
                anyhow::bail!(
                    "services.{}.secrets.{name}: `{arn}` is in {}:{}, but the stack runs in {partition}:{region}\n  hint: the tasks read secrets from their own region; replicate the secret there, or deploy to {}",
                    service.name,
                    secret.partition,
                    secret.region,
                    secret.region
                );
            }
        }
    }
    Ok(())
}
