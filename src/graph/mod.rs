//! The step DAG and its parallel walker. Knows nothing about AWS: nodes are ids with dependencies.

mod walk;

use std::collections::HashMap;

pub use walk::{Outcome, StopFlag, walk};

/// A validated directed acyclic graph over string ids; nodes are addressed by index in insertion order.
#[derive(Debug, Clone)]
pub struct Dag {
    ids: Vec<String>,
    deps: Vec<Vec<usize>>,
    dependants: Vec<Vec<usize>>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GraphError {
    #[error("node `{0}` is declared twice")]
    Duplicate(String),
    #[error("node `{node}` depends on unknown node `{dep}`")]
    UnknownDependency { node: String, dep: String },
    #[error("dependency cycle through `{0}`")]
    Cycle(String),
}

impl Dag {
    pub fn new<I, D>(nodes: I) -> Result<Dag, GraphError>
    where
        I: IntoIterator<Item = (String, D)>,
        D: IntoIterator<Item = String>,
    {
        let nodes: Vec<(String, Vec<String>)> =
            nodes.into_iter().map(|(id, d)| (id, d.into_iter().collect())).collect();
        let mut index = HashMap::new();
        for (i, (id, _)) in nodes.iter().enumerate() {
            if index.insert(id.clone(), i).is_some() {
                return Err(GraphError::Duplicate(id.clone()));
            }
        }
        let mut deps = vec![Vec::new(); nodes.len()];
        let mut dependants = vec![Vec::new(); nodes.len()];
        for (i, (id, node_deps)) in nodes.iter().enumerate() {
            for dep in node_deps {
                let &d = index
                    .get(dep)
                    .ok_or_else(|| GraphError::UnknownDependency { node: id.clone(), dep: dep.clone() })?;
                deps[i].push(d);
                dependants[d].push(i);
            }
        }
        let dag = Dag { ids: nodes.into_iter().map(|(id, _)| id).collect(), deps, dependants };
        dag.check_acyclic()?;
        Ok(dag)
    }

    fn check_acyclic(&self) -> Result<(), GraphError> {
        let mut remaining: Vec<usize> = self.deps.iter().map(Vec::len).collect();
        let mut ready: Vec<usize> = (0..self.len()).filter(|&i| remaining[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = ready.pop() {
            seen += 1;
            for &d in &self.dependants[i] {
                remaining[d] -= 1;
                if remaining[d] == 0 {
                    ready.push(d);
                }
            }
        }
        match (0..self.len()).find(|&i| remaining[i] > 0) {
            Some(i) if seen < self.len() => Err(GraphError::Cycle(self.ids[i].clone())),
            _ => Ok(()),
        }
    }

    /// The same nodes with every edge turned around: the order for tearing down.
    pub fn reversed(&self) -> Dag {
        Dag { ids: self.ids.clone(), deps: self.dependants.clone(), dependants: self.deps.clone() }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    pub fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }

    pub fn deps(&self, i: usize) -> &[usize] {
        &self.deps[i]
    }

    pub fn dependants(&self, i: usize) -> &[usize] {
        &self.dependants[i]
    }

    /// For each node, the number of nodes on the longest path from it to the end of the graph (itself included):
    /// how much dependent work still waits behind it.
    pub fn heights(&self) -> Vec<usize> {
        fn height(dag: &Dag, i: usize, memo: &mut [usize]) -> usize {
            if memo[i] == 0 {
                memo[i] = 1 + dag.dependants[i].iter().map(|&d| height(dag, d, memo)).max().unwrap_or(0);
            }
            memo[i]
        }
        let mut memo = vec![0; self.len()];
        (0..self.len()).map(|i| height(self, i, &mut memo)).collect()
    }
}
