//! Runs every node whose dependencies are done, at most `parallelism` at a time, those with the longest chain of
//! dependants behind them first: on AWS each step is a round trip, so the longest chain sets the wall time, and its
//! calls should not queue behind work that nothing waits for.
//!
//! A failed node stops its dependants (transitively) but never the rest: independent work already in flight
//! finishes and is reported, so its result can be recorded. A raised [`StopFlag`] (Ctrl-C) stops new starts only.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::task::JoinSet;

use super::Dag;

/// What happened to one node.
#[derive(Debug)]
pub enum Outcome<T> {
    Done(T),
    Failed(anyhow::Error),
    /// Not run because a dependency failed or was skipped; names the failed node at the root of it.
    Skipped {
        blocked_by: String,
    },
    /// Not run because the walk was stopped.
    NotStarted,
}

impl<T> Outcome<T> {
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done(_))
    }
}

/// Shared flag that asks a walk to start nothing new.
#[derive(Debug, Clone, Default)]
pub struct StopFlag(Arc<AtomicBool>);

impl StopFlag {
    pub fn stop(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, or less when the flag is raised meanwhile: a bounded wait stops promptly on Ctrl-C.
    pub async fn sleep(&self, d: std::time::Duration) {
        let end = tokio::time::Instant::now() + d;
        while !self.is_stopped() {
            let left = end.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            tokio::time::sleep(left.min(std::time::Duration::from_millis(100))).await;
        }
    }
}

/// Walks `dag` in dependency order. `run(i)` is called once per node whose dependencies all succeeded.
/// Returns one outcome per node, indexed like the DAG.
pub async fn walk<T, F, Fut>(dag: &Dag, parallelism: usize, stop: &StopFlag, mut run: F) -> Vec<Outcome<T>>
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let parallelism = parallelism.max(1);
    let mut outcomes: Vec<Option<Outcome<T>>> = (0..dag.len()).map(|_| None).collect();
    let mut waiting_on: Vec<usize> = (0..dag.len()).map(|i| dag.deps(i).len()).collect();
    // Ready nodes run highest first, ties in insertion order, so a walk with parallelism 1 is deterministic.
    let heights = dag.heights();
    let priority = |i: usize| (heights[i], Reverse(i));
    let mut ready: BinaryHeap<_> = (0..dag.len()).filter(|&i| waiting_on[i] == 0).map(priority).collect();
    let mut in_flight: JoinSet<(usize, anyhow::Result<T>)> = JoinSet::new();
    let mut task_node = std::collections::HashMap::new();

    loop {
        while in_flight.len() < parallelism && !stop.is_stopped() {
            let Some((_, Reverse(i))) = ready.pop() else { break };
            let fut = run(i);
            let handle = in_flight.spawn(async move { (i, fut.await) });
            task_node.insert(handle.id(), i);
        }
        let Some(joined) = in_flight.join_next_with_id().await else { break };
        let (i, result) = match joined {
            Ok((_, (i, result))) => (i, result),
            Err(e) => {
                let i = task_node[&e.id()];
                (i, Err(anyhow::anyhow!("internal error: the step for `{}` panicked: {e}", dag.id(i))))
            }
        };
        match result {
            Ok(value) => {
                outcomes[i] = Some(Outcome::Done(value));
                for &d in dag.dependants(i) {
                    waiting_on[d] -= 1;
                    if waiting_on[d] == 0 && outcomes[d].is_none() {
                        ready.push(priority(d));
                    }
                }
            }
            Err(e) => {
                outcomes[i] = Some(Outcome::Failed(e));
                skip_dependants(dag, i, dag.id(i), &mut outcomes);
            }
        }
    }
    outcomes.into_iter().map(|o| o.unwrap_or(Outcome::NotStarted)).collect()
}

fn skip_dependants<T>(dag: &Dag, failed: usize, root: &str, outcomes: &mut [Option<Outcome<T>>]) {
    for &d in dag.dependants(failed) {
        if outcomes[d].is_none() {
            outcomes[d] = Some(Outcome::Skipped { blocked_by: root.to_string() });
            skip_dependants(dag, d, root, outcomes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn dag(edges: &[(&str, &[&str])]) -> Dag {
        Dag::new(
            edges.iter().map(|(id, deps)| (id.to_string(), deps.iter().map(|d| d.to_string()).collect::<Vec<_>>())),
        )
        .unwrap()
    }

    /// The order a walk with room for one step at a time runs the nodes in.
    async fn serial_order(g: &Dag) -> Vec<String> {
        let order = Arc::new(Mutex::new(Vec::new()));
        walk(g, 1, &StopFlag::default(), |i| {
            let (order, id) = (order.clone(), g.id(i).to_string());
            async move {
                order.lock().unwrap().push(id);
                Ok(())
            }
        })
        .await;
        Arc::try_unwrap(order).unwrap().into_inner().unwrap()
    }

    #[tokio::test]
    async fn runs_every_node_after_its_dependencies() {
        let g =
            dag(&[("vpc", &[]), ("subnet", &["vpc"]), ("sg", &["vpc"]), ("svc", &["subnet", "sg", "td"]), ("td", &[])]);
        let order = Arc::new(Mutex::new(Vec::new()));
        let outcomes = walk(&g, 4, &StopFlag::default(), |i| {
            let order = order.clone();
            let id = g.id(i).to_string();
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                order.lock().unwrap().push(id);
                Ok(())
            }
        })
        .await;
        assert!(outcomes.iter().all(Outcome::is_done));
        let order = order.lock().unwrap().clone();
        let pos = |id: &str| order.iter().position(|x| x == id).unwrap();
        assert!(pos("vpc") < pos("subnet") && pos("vpc") < pos("sg"));
        assert!(pos("subnet") < pos("svc") && pos("sg") < pos("svc") && pos("td") < pos("svc"));
    }

    #[tokio::test]
    async fn never_runs_more_than_the_parallelism_bound() {
        let nodes: Vec<(String, Vec<String>)> = (0..20).map(|i| (format!("n{i}"), vec![])).collect();
        let g = Dag::new(nodes).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        walk(&g, 3, &StopFlag::default(), |_| {
            let (running, peak) = (running.clone(), peak.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .await;
        assert_eq!(peak.load(Ordering::SeqCst), 3, "independent nodes should fill the bound exactly");
    }

    #[tokio::test]
    async fn failure_skips_dependants_but_lets_independent_work_finish() {
        // `slow` is independent and already in flight when `bad` fails: it must finish and be reported.
        let g = dag(&[
            ("bad", &[]),
            ("slow", &[]),
            ("child", &["bad"]),
            ("grandchild", &["child"]),
            ("after-slow", &["slow"]),
        ]);
        let outcomes = walk(&g, 4, &StopFlag::default(), |i| {
            let id = g.id(i).to_string();
            async move {
                match id.as_str() {
                    "bad" => anyhow::bail!("boom"),
                    "slow" => tokio::time::sleep(Duration::from_millis(50)).await,
                    _ => {}
                }
                Ok(id)
            }
        })
        .await;
        assert!(matches!(&outcomes[0], Outcome::Failed(e) if e.to_string() == "boom"));
        assert!(matches!(&outcomes[1], Outcome::Done(id) if id == "slow"));
        assert!(matches!(&outcomes[2], Outcome::Skipped { blocked_by } if blocked_by == "bad"));
        assert!(matches!(&outcomes[3], Outcome::Skipped { blocked_by } if blocked_by == "bad"));
        assert!(matches!(&outcomes[4], Outcome::Done(_)));
    }

    #[tokio::test]
    async fn stop_flag_finishes_in_flight_work_and_starts_nothing_new() {
        let g = dag(&[("a", &[]), ("b", &["a"])]);
        let stop = StopFlag::default();
        let outcomes = walk(&g, 2, &stop.clone(), |i| {
            let stop = stop.clone();
            async move {
                stop.stop();
                Ok(i)
            }
        })
        .await;
        assert!(outcomes[0].is_done());
        assert!(matches!(outcomes[1], Outcome::NotStarted));
    }

    #[tokio::test]
    async fn reversed_walk_tears_down_dependants_first() {
        let g = dag(&[("vpc", &[]), ("subnet", &["vpc"]), ("svc", &["subnet"])]).reversed();
        assert_eq!(serial_order(&g).await, ["svc", "subnet", "vpc"]);
    }

    #[tokio::test]
    async fn starts_the_node_with_the_longest_chain_behind_it_first() {
        // After `vpc`, `namespace` has two steps waiting behind it (`sd`, `svc`); the groups have none. With room for
        // one step at a time the namespace must not queue behind them, although it was declared last.
        let g = dag(&[
            ("vpc", &[]),
            ("sg-a", &["vpc"]),
            ("sg-b", &["vpc"]),
            ("namespace", &["vpc"]),
            ("sd", &["namespace"]),
            ("svc", &["sd", "sg-a"]),
        ]);
        assert_eq!(g.heights(), [4, 2, 1, 3, 2, 1]);
        assert_eq!(serial_order(&g).await, ["vpc", "namespace", "sg-a", "sd", "sg-b", "svc"]);
    }

    #[test]
    fn rejects_cycles_unknown_dependencies_and_duplicates() {
        let cyc = Dag::new(vec![("a".to_string(), vec!["b".to_string()]), ("b".to_string(), vec!["a".to_string()])]);
        assert!(matches!(cyc, Err(GraphError::Cycle(_))));
        let unknown = Dag::new(vec![("a".to_string(), vec!["zz".to_string()])]);
        assert_eq!(unknown.unwrap_err(), GraphError::UnknownDependency { node: "a".into(), dep: "zz".into() });
        let dup = Dag::new(vec![("a".to_string(), vec![]), ("a".to_string(), vec![])]);
        assert_eq!(dup.unwrap_err(), GraphError::Duplicate("a".into()));
    }

    use super::super::GraphError;
}
