//! Waiting until the services really run. A `CreateService` or `UpdateService` that returned is minutes before
//! anything runs on AWS, and its tasks may never start (an image the subnets cannot reach, a role not usable yet).
//! Every service this run created or changed is watched at once, in batched describes, until its deployment has
//! completed, failed (the circuit breaker stops it), been rolled back, or the bound has passed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use aws_sdk_ecs::types::{Deployment, DesiredStatus, Service};
use serde::Serialize;
use tokio::time::Instant;

use crate::graph::StopFlag;
use crate::output::Console;
use crate::resource::{Ctx, api_error};

/// A deployment this run started (or, for a count change, the one the service runs), as ECS answered it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Started {
    pub service: String,
    pub cluster: String,
    pub arn: String,
    /// The deployment's id from the answer; `None` when the answer listed none (then the primary one is watched).
    pub deployment: Option<String>,
    pub task_definition: String,
    /// The revision the service ran before, to deregister once this rollout has completed.
    pub retire: Option<String>,
}

/// How a watched rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    Completed,
    Failed,
    RolledBack,
    TimedOut,
    Interrupted,
}

impl Ending {
    pub fn ok(self) -> bool {
        self == Ending::Completed
    }
}

/// One service's rollout as `up` reports it (and prints it in `--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Rollout {
    pub service: String,
    pub state: Ending,
    pub running: i32,
    pub desired: i32,
    /// ECS's `rolloutStateReason`, or what secep concluded.
    pub reason: Option<String>,
    pub latest_event: Option<String>,
    /// Why the latest stopped tasks stopped (newest first), when the rollout did not complete.
    pub stopped_tasks: Vec<String>,
    pub seconds: f64,
}

/// What one describe says about a watched deployment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    Running { state: String, running: i32, desired: i32 },
    Done(Ending, Option<String>),
}

/// Pure: where a watched deployment stands in a service as described.
pub fn progress(watched: &Started, service: &Service) -> Progress {
    let deployments = service.deployments();
    let primary = deployments.iter().find(|d| d.status() == Some("PRIMARY"));
    let ours: Option<&Deployment> = match &watched.deployment {
        Some(id) => deployments.iter().find(|d| d.id() == Some(id.as_str())),
        None => primary,
    };
    let state_of = |d: &Deployment| d.rollout_state().map(|s| s.as_str().to_string()).unwrap_or_default();
    let reason_of = |d: &Deployment| d.rollout_state_reason().map(str::to_string);
    if service.status() == Some("INACTIVE") {
        return Progress::Done(Ending::Failed, Some("the service was deleted while its rollout ran".into()));
    }
    match (ours, primary) {
        // With the circuit breaker's rollback, ECS starts a deployment of the last revision that worked.
        (Some(d), Some(p)) if state_of(d) == "FAILED" && d.id() != p.id() => {
            Progress::Done(Ending::RolledBack, reason_of(d))
        }
        (Some(d), _) if state_of(d) == "FAILED" => Progress::Done(Ending::Failed, reason_of(d)),
        (Some(d), Some(p)) if d.id() != p.id() => {
            // Another deployment took over: ECS rolling back to the last one that worked, or someone else's.
            let back = p.task_definition().is_some_and(|td| td != watched.task_definition);
            let ending = if back { Ending::RolledBack } else { Ending::Failed };
            let why = reason_of(d).unwrap_or_else(|| format!("replaced by deployment {}", p.id().unwrap_or("?")));
            Progress::Done(ending, Some(why))
        }
        (Some(d), _) if state_of(d) == "COMPLETED" && d.running_count() >= d.desired_count() => {
            Progress::Done(Ending::Completed, reason_of(d))
        }
        (Some(d), _) => {
            Progress::Running { state: state_of(d), running: d.running_count(), desired: d.desired_count() }
        }
        (None, Some(p)) => {
            let back = p.task_definition().is_some_and(|td| td != watched.task_definition);
            let ending = if back { Ending::RolledBack } else { Ending::Failed };
            Progress::Done(
                ending,
                Some(format!("its deployment is gone; ECS runs deployment {}", p.id().unwrap_or("?"))),
            )
        }
        (None, None) => Progress::Done(Ending::Failed, Some("ECS lists no deployment for the service".into())),
    }
}

/// Watches every started rollout until each has ended or `timeout` has passed. Lines go through the console; a
/// raised stop flag (Ctrl-C) ends the wait at once with what is known.
pub async fn wait(
    ctx: &Ctx,
    started: Vec<Started>,
    timeout: Duration,
    stop: &StopFlag,
    console: &Console,
) -> Vec<Rollout> {
    let begun = Instant::now();
    let mut pending: BTreeMap<String, Started> = started.into_iter().map(|s| (s.arn.clone(), s)).collect();
    let mut last: BTreeMap<String, (String, i32, i32, Option<String>)> = BTreeMap::new();
    let mut done = Vec::new();
    if pending.is_empty() {
        return done;
    }
    console.status(
        "Waiting",
        format!("for {} service rollout(s) (at most {}s; --no-wait skips this)", pending.len(), timeout.as_secs()),
    );
    let mut delay = Duration::from_millis(250);
    loop {
        let described = describe(ctx, pending.values()).await;
        let services = match described {
            Ok(s) => s,
            Err(e) => {
                // A failing describe ends nothing: the next round tries again, up to the bound.
                tracing::warn!(error = %format!("{e:#}"), "could not read the services' rollouts");
                BTreeMap::new()
            }
        };
        for (arn, service) in &services {
            let Some(watched) = pending.get(arn) else { continue };
            let event = service.events().first().and_then(|e| e.message()).map(str::to_string);
            match progress(watched, service) {
                Progress::Running { state, running, desired } => {
                    let now = (state.clone(), running, desired, event.clone());
                    if last.get(arn) != Some(&now) {
                        let latest = event.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
                        console.step(
                            "rolling out",
                            &format!("svc/{}", watched.service),
                            &format!("{running}/{desired} running, {state}{latest}"),
                            None,
                        );
                        last.insert(arn.clone(), now);
                    }
                }
                Progress::Done(Ending::Completed, _)
                    if !targets_healthy(ctx, service, &mut last, arn, watched, console).await => {}
                Progress::Done(ending, reason) => {
                    let watched = pending.remove(arn).expect("watched");
                    let stopped = if ending.ok() {
                        Vec::new()
                    } else {
                        stopped_reasons(&ctx.clients.ecs, &watched.cluster, &watched.service).await
                    };
                    let rollout = Rollout {
                        service: watched.service.clone(),
                        state: ending,
                        running: service.running_count(),
                        desired: service.desired_count(),
                        reason,
                        latest_event: event,
                        stopped_tasks: stopped,
                        seconds: crate::output::report::seconds(begun.elapsed()),
                    };
                    print_ending(console, &rollout);
                    done.push(rollout);
                }
            }
        }
        if pending.is_empty() {
            break;
        }
        let ending = if stop.is_stopped() {
            Some(Ending::Interrupted)
        } else if begun.elapsed() + delay > timeout {
            Some(Ending::TimedOut)
        } else {
            None
        };
        if let Some(ending) = ending {
            for (arn, watched) in std::mem::take(&mut pending) {
                let (state, running, desired, event) =
                    last.remove(&arn).unwrap_or_else(|| ("unknown".into(), 0, 0, None));
                let stopped = if ending == Ending::TimedOut {
                    stopped_reasons(&ctx.clients.ecs, &watched.cluster, &watched.service).await
                } else {
                    Vec::new()
                };
                let rollout = Rollout {
                    service: watched.service,
                    state: ending,
                    running,
                    desired,
                    reason: Some(match ending {
                        Ending::TimedOut => format!("still {state} after {}s (--wait-timeout)", timeout.as_secs()),
                        _ => format!("still {state} when interrupted"),
                    }),
                    latest_event: event,
                    stopped_tasks: stopped,
                    seconds: crate::output::report::seconds(begun.elapsed()),
                };
                print_ending(console, &rollout);
                done.push(rollout);
            }
            break;
        }
        stop.sleep(delay).await;
        delay = crate::aws::poll_delay(begun.elapsed());
    }
    done
}

/// Behind a load balancer, a service runs once the load balancer finds its tasks healthy: as many healthy targets in
/// its target groups as it wants tasks. Prints the count when it changes.
async fn targets_healthy(
    ctx: &Ctx,
    service: &Service,
    last: &mut BTreeMap<String, (String, i32, i32, Option<String>)>,
    arn: &str,
    watched: &Started,
    console: &Console,
) -> bool {
    let desired = service.desired_count();
    for lb in service.load_balancers() {
        let Some(tg) = lb.target_group_arn() else { continue };
        let health = match target_health(&ctx.clients.elb, tg).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "could not read the health of {tg}");
                return false;
            }
        };
        if (health.healthy as i32) < desired {
            let state = format!("waiting for healthy targets ({})", health.summary());
            let now = (state.clone(), health.healthy as i32, desired, health.reasons.first().cloned());
            if last.get(arn) != Some(&now) {
                console.step(
                    "rolling out",
                    &format!("svc/{}", watched.service),
                    &format!("{}/{desired} running, {state}", service.running_count()),
                    None,
                );
                last.insert(arn.to_string(), now);
            }
            return false;
        }
    }
    true
}

/// What the load balancer thinks of a target group's targets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TargetHealth {
    pub healthy: usize,
    pub unhealthy: usize,
    /// Registering (`initial`), draining, unused or unavailable.
    pub other: usize,
    /// Why the unhealthy ones are, as the load balancer says (`Target.ResponseCodeMismatch: ...`), once each.
    pub reasons: Vec<String>,
}

impl TargetHealth {
    pub fn summary(&self) -> String {
        let mut out = format!("{} healthy, {} unhealthy", self.healthy, self.unhealthy);
        if self.other > 0 {
            out.push_str(&format!(", {} registering or draining", self.other));
        }
        out
    }
}

/// One DescribeTargetHealth of a target group.
pub async fn target_health(elb: &aws_sdk_elasticloadbalancingv2::Client, tg: &str) -> Result<TargetHealth> {
    use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum as State;
    let out = elb.describe_target_health().target_group_arn(tg).send().await;
    let out = out.map_err(|e| api_error(format!("read the target health of {tg}"), e))?;
    let mut health = TargetHealth::default();
    for d in out.target_health_descriptions() {
        let th = d.target_health();
        match th.and_then(|t| t.state()) {
            Some(State::Healthy) => health.healthy += 1,
            Some(State::Unhealthy) => {
                health.unhealthy += 1;
                let reason = th.and_then(|t| t.reason()).map(|r| r.as_str().to_string()).unwrap_or_default();
                let text = match th.and_then(|t| t.description()) {
                    Some(d) => format!("{reason}: {d}"),
                    None => reason,
                };
                if !health.reasons.contains(&text) {
                    health.reasons.push(text);
                }
            }
            _ => health.other += 1,
        }
    }
    Ok(health)
}

fn print_ending(console: &Console, r: &Rollout) {
    let node = format!("svc/{}", r.service);
    let secs = Some(Duration::from_secs_f64(r.seconds));
    match r.state {
        Ending::Completed => console.step("rolled out", &node, &format!("{}/{} running", r.running, r.desired), secs),
        other => {
            let verb = match other {
                Ending::RolledBack => "rolled back",
                Ending::TimedOut => "timed out",
                Ending::Interrupted => "interrupted",
                _ => "failed",
            };
            let why = r.reason.as_deref().unwrap_or("no reason given");
            console.step(verb, &node, &format!("{}/{} running: {why}", r.running, r.desired), secs);
            for reason in &r.stopped_tasks {
                console.status("", format!("stopped task: {reason}"));
            }
        }
    }
}

/// The watched services as ECS describes them now, by ARN: one call per cluster and ten services.
async fn describe<'a>(ctx: &Ctx, watched: impl Iterator<Item = &'a Started>) -> Result<BTreeMap<String, Service>> {
    let mut by_cluster: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for w in watched {
        by_cluster.entry(w.cluster.as_str()).or_default().push(w.arn.as_str());
    }
    let mut out = BTreeMap::new();
    for (cluster, arns) in by_cluster {
        for chunk in arns.chunks(10) {
            let answer = ctx
                .clients
                .ecs
                .describe_services()
                .cluster(cluster)
                .set_services(Some(chunk.iter().map(|a| a.to_string()).collect()))
                // Always with tags: moto answers a describe without them by stripping the tags of concurrent ones.
                .include(aws_sdk_ecs::types::ServiceField::Tags)
                .send()
                .await
                .map_err(|e| api_error(format!("read the rollouts of the services in cluster {cluster}"), e))?;
            for s in answer.services() {
                if let Some(arn) = s.service_arn() {
                    out.insert(arn.to_string(), s.clone());
                }
            }
        }
    }
    Ok(out)
}

/// Why the service's latest stopped tasks stopped, newest first (at most three): what a user needs to fix it.
pub async fn stopped_reasons(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str) -> Vec<String> {
    let listed = ecs
        .list_tasks()
        .cluster(cluster)
        .service_name(service)
        .desired_status(DesiredStatus::Stopped)
        .max_results(10)
        .send()
        .await;
    let arns = match listed {
        Ok(out) => out.task_arns().to_vec(),
        Err(e) => {
            let e = api_error(format!("list the stopped tasks of {service}"), e);
            tracing::warn!(error = %format!("{e:#}"), "could not list stopped tasks");
            return Vec::new();
        }
    };
    if arns.is_empty() {
        return Vec::new();
    }
    let described = ecs.describe_tasks().cluster(cluster).set_tasks(Some(arns)).send().await;
    let Ok(out) = described else { return Vec::new() };
    let mut tasks: Vec<_> = out.tasks().iter().collect();
    tasks.sort_by_key(|t| std::cmp::Reverse(t.stopped_at().map(|d| d.secs())));
    tasks
        .iter()
        .take(3)
        .map(|t| {
            let id = t.task_arn().and_then(|a| a.rsplit('/').next()).unwrap_or("?");
            let reason = t
                .stopped_reason()
                .map(str::to_string)
                .or_else(|| t.containers().iter().find_map(|c| c.reason()).map(str::to_string))
                .unwrap_or_else(|| "no reason given".into());
            match t.stop_code() {
                Some(code) => format!("{id} ({}): {reason}", code.as_str()),
                None => format!("{id}: {reason}"),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use aws_sdk_ecs::types::DeploymentRolloutState;

    use super::*;

    const NEW: &str = "arn:aws:ecs:us-east-1:1:task-definition/demo-web:2";
    const OLD: &str = "arn:aws:ecs:us-east-1:1:task-definition/demo-web:1";

    fn deployment(id: &str, status: &str, state: DeploymentRolloutState, td: &str, running: i32) -> Deployment {
        Deployment::builder()
            .id(id)
            .status(status)
            .rollout_state(state)
            .rollout_state_reason(format!("reason of {id}"))
            .task_definition(td)
            .running_count(running)
            .desired_count(2)
            .build()
    }

    fn service(deployments: Vec<Deployment>) -> Service {
        Service::builder().status("ACTIVE").set_deployments(Some(deployments)).build()
    }

    fn watched(id: Option<&str>) -> Started {
        Started {
            service: "web".into(),
            cluster: "demo".into(),
            arn: "arn:aws:ecs:us-east-1:1:service/demo/web".into(),
            deployment: id.map(str::to_string),
            task_definition: NEW.into(),
            retire: None,
        }
    }

    #[test]
    fn a_rollout_runs_until_its_deployment_completed_with_every_task() {
        use DeploymentRolloutState::*;
        let w = watched(Some("d2"));
        let half = service(vec![deployment("d2", "PRIMARY", InProgress, NEW, 1)]);
        assert_eq!(progress(&w, &half), Progress::Running { state: "IN_PROGRESS".into(), running: 1, desired: 2 });
        let done = service(vec![deployment("d2", "PRIMARY", Completed, NEW, 2)]);
        assert!(matches!(progress(&w, &done), Progress::Done(Ending::Completed, _)));
    }

    #[test]
    fn a_failed_or_rolled_back_deployment_ends_the_wait_with_its_reason() {
        use DeploymentRolloutState::*;
        let w = watched(Some("d2"));
        let failed = service(vec![deployment("d2", "PRIMARY", Failed, NEW, 0)]);
        assert_eq!(progress(&w, &failed), Progress::Done(Ending::Failed, Some("reason of d2".into())));

        let rolling_back = service(vec![
            deployment("d3", "PRIMARY", InProgress, OLD, 0),
            deployment("d2", "ACTIVE", InProgress, NEW, 0),
        ]);
        assert!(matches!(progress(&w, &rolling_back), Progress::Done(Ending::RolledBack, _)));

        let failed_over =
            service(vec![deployment("d3", "PRIMARY", InProgress, OLD, 0), deployment("d2", "ACTIVE", Failed, NEW, 0)]);
        assert_eq!(progress(&w, &failed_over), Progress::Done(Ending::RolledBack, Some("reason of d2".into())));

        let rolled_back = service(vec![deployment("d3", "PRIMARY", Completed, OLD, 2)]);
        assert!(matches!(progress(&w, &rolled_back), Progress::Done(Ending::RolledBack, _)));
    }

    #[test]
    fn without_a_deployment_id_the_primary_one_is_watched() {
        use DeploymentRolloutState::*;
        let w = watched(None);
        let done = service(vec![deployment("d9", "PRIMARY", Completed, NEW, 2)]);
        assert!(matches!(progress(&w, &done), Progress::Done(Ending::Completed, _)));
        let deleted = Service::builder().status("INACTIVE").build();
        assert!(matches!(progress(&w, &deleted), Progress::Done(Ending::Failed, _)));
    }
}
