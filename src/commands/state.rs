//! `secep state show` (where the state is, its lineage, serial, history and lock holder) and `secep state migrate`
//! (move it between a local file and S3, under both locks, the source removed only once the copy reads back the same).

use anyhow::{Result, bail};

use super::{Common, connect_state, exit, state_location};
use crate::aws::Clients;
use crate::config::Config;
use crate::output::Console;
use crate::output::report::{MigrateReport, StateReport};
use crate::state::{Location, StateDoc, StateFile, Store};

async fn connect(common: &Common) -> Result<(Config, Clients)> {
    let config = Config::load(&common.config)?;
    let mut target = common.target.clone();
    if target.region.is_none() {
        target.region = config.stack.region.clone();
    }
    let clients = Clients::connect(&target).await?;
    Ok((config, clients))
}

pub async fn show(common: &Common, console: &Console) -> Result<u8> {
    let (config, clients) = connect(common).await?;
    let store = connect_state(common, &config, &clients).await?;
    let state = StateFile::load(store.clone(), &config.stack.name, &clients.region).await?;
    let mut details: Vec<(String, String)> = Vec::new();
    let holder = match &store {
        Store::Local(path) => {
            details.push(("history".into(), crate::state::backup_path(path).display().to_string()));
            crate::state::StateLock::local_holder(path)
        }
        Store::S3(s3) => {
            details.extend(s3.describe().await?);
            s3.lock_holder().await?
        }
    };
    let doc = state.doc();
    console.status("State", state.location());
    if !state.exists_on_disk() {
        console.status("", format!("no state there yet: stack {} has no recorded resources", config.stack.name));
    } else {
        console.status("", format!("stack {} in {}", doc.stack, doc.region));
        console.status("", format!("lineage {} (the secep:lineage tag of what it made)", doc.nonce));
        console.status("", format!("serial {}, {} resources recorded", doc.serial, doc.nodes.len()));
    }
    for (label, value) in &details {
        console.status("", format!("{label}: {value}"));
    }
    console.status("", format!("lock: {}", holder.as_deref().unwrap_or("not held")));
    console.report(&StateReport {
        command: "state show",
        location: state.location().to_string(),
        exists: state.exists_on_disk(),
        stack: doc.stack.clone(),
        region: doc.region.clone(),
        lineage: doc.nonce.clone(),
        serial: doc.serial,
        resources: doc.nodes.len(),
        details: details.into_iter().collect(),
        lock_holder: holder,
    });
    Ok(exit::OK)
}

pub async fn migrate(common: &Common, to: &Location, console: &Console) -> Result<u8> {
    let (config, clients) = connect(common).await?;
    let from = state_location(common, &config);
    if &from == to {
        bail!("the state is already at {to}: nothing to migrate\n  hint: --to names where it should go");
    }
    let source_store = connect_state(common, &config, &clients).await?;
    let target_store = Store::connect(to, &clients, config.state.kms_key_id.as_deref()).await?;
    // Both locks, source first: no run changes either side while the state moves.
    let source_lock = source_store.lock("state migrate", common.force_unlock).await?;
    let target_lock = target_store.lock("state migrate", common.force_unlock).await?;
    for notice in [&source_lock.notice, &target_lock.notice].into_iter().flatten() {
        console.warn(notice);
    }
    let (stack, region) = (config.stack.name.as_str(), clients.region.as_str());
    let mut source = StateFile::load(source_store, stack, region).await?;
    if !source.exists_on_disk() {
        bail!(
            "there is no state at {from}: nothing to migrate\n  hint: pass the state to move with --state (or the config's [state] url)"
        );
    }
    let existing = StateFile::load(target_store.clone(), stack, region).await?;
    if existing.exists_on_disk() {
        bail!(
            "{to} already holds a state of stack {stack} (lineage {}, {} resources): nothing was changed\n  hint: move or delete it first if it is stale; migrating never overwrites a state",
            existing.nonce(),
            existing.nodes().len()
        );
    }
    let mut copy = source.moved_to(target_store.clone());
    copy.save().await?;
    let read_back = StateFile::load(target_store, stack, region).await?;
    if !same_state(read_back.doc(), source.doc()) {
        bail!(
            "the copy at {to} does not read back as the state at {from}: {from} was kept and is still the state\n  hint: remove {to} and try again"
        );
    }
    source.remove().await?;
    source_lock.release(true).await;
    target_lock.release(false).await;
    let resources = source.nodes().len();
    console.status(
        "Migrated",
        format!(
            "state of stack {stack} ({resources} resources, lineage {}) from {from} to {to}; {from} removed",
            source.nonce()
        ),
    );
    let hint = match &config.state.url {
        Some(url) if url == to => String::new(),
        _ => format!(
            "from now on every run must use it: set `url = \"{to}\"` under [state] in {}, or pass --state {to}",
            config.path.display()
        ),
    };
    if !hint.is_empty() {
        console.warn(&hint);
    }
    console.report(&MigrateReport {
        command: "state migrate",
        stack: stack.to_string(),
        from: from.to_string(),
        to: to.to_string(),
        resources,
        lineage: source.nonce().to_string(),
    });
    Ok(exit::OK)
}

/// The same state, whatever its serial (each write counts one).
fn same_state(a: &StateDoc, b: &StateDoc) -> bool {
    a.stack == b.stack
        && a.region == b.region
        && a.nonce == b.nonce
        && a.nodes == b.nodes
        && a.generations == b.generations
}
