//! The commands. Each one loads the config, connects, opens the state, walks the graph and reports.

pub mod down;
pub mod inspect;
pub mod up;

use std::path::PathBuf;

use anyhow::Result;

use crate::aws::{Clients, Target};
use crate::config::Config;
use crate::output::Console;
use crate::state::{self, StateFile, StateLock};

/// The flags every command shares.
#[derive(Debug, Clone)]
pub struct Common {
    pub config: PathBuf,
    pub state: Option<PathBuf>,
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

/// `lock`: take the state's exclusive lock (commands that change the stack), before anything is read.
pub async fn open(common: &Common, console: &Console, lock: bool) -> Result<Opened> {
    let config = Config::load(&common.config)?;
    let mut target = common.target.clone();
    if target.region.is_none() {
        target.region = config.stack.region.clone();
    }
    let clients = Clients::connect(&target).await?;
    let path = common.state.clone().unwrap_or_else(|| state::default_path(&config.stack.name));
    let lock = if lock { Some(StateLock::acquire(&path, common.force_unlock)?) } else { None };
    if let Some((pid, age)) = lock.as_ref().and_then(|l| l.stale) {
        console.warn(format!(
            "the previous run on this stack (pid {pid}, started {age}s ago) ended without finishing; what it created is recorded, and this run continues from there"
        ));
    }
    let state = StateFile::open(&path, &config.stack.name, &clients.region)?;
    tracing::debug!(state = %path.display(), region = %clients.region, "opened");
    Ok(Opened { config, clients, state, lock })
}
