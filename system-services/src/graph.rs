//! The service dependency graph: `depends_on` with its conditions and the
//! `io.berth.after` / `io.berth.before` ordering labels.
//!
//! The graph is built once per config and is pure: the supervisor asks it, for
//! the current [`State`] of every service, which pending services may start now
//! and which never can ([`Graph::evaluate`]), what must stop before a service
//! stops ([`Graph::dependents_closure`]), and what must be recreated when services change
//! ([`Graph::affected`]).
//!
//! Semantics, in short:
//! - `depends_on` is a requirement: the dependency must reach its condition, and
//!   if it never can, the dependent never starts either (it is *blocked*).
//!   `required: false` turns a dependency into ordering only, and one naming an
//!   undefined service is dropped.
//! - the ordering labels are ordering only (systemd's `After=`): wait while the
//!   other service is on its way up, but start anyway if it never comes.
//! - a `oneshot` service satisfies any condition only once it has exited 0: it
//!   runs to completion before its dependents.
//! - a service without a healthcheck is ready when started, so
//!   `service_healthy` on it means `service_started` (ARCHITECTURE.md §5).
//! - `network_mode: service:X` (or `container:X`) joins X's network namespace,
//!   so it is an implicit dependency on X, recreated with X.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use berth_configs::model::{Condition, RestartPolicy, Service};
use berth_configs::validate::{ordering_label, AFTER_LABEL, BEFORE_LABEL};

/// Where a service is in its life, as the supervisor last saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// Not started yet (waiting for its dependencies, or never tried).
    Pending,
    /// Being created or started; not running yet.
    Starting,
    /// Its main process runs.
    Started,
    /// Its healthcheck passed.
    Healthy,
    /// Its main process exited with this code (128 + signal when killed). The
    /// supervisor may still restart it, as its restart policy says.
    Exited(i32),
    /// Finished for good without success: it could not be created, or the
    /// supervisor gave up restarting it (e.g. `on-failure:N` used up).
    Failed,
}

/// Where an edge of the graph comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeKind {
    /// `depends_on` of the dependent.
    DependsOn,
    /// `io.berth.after` on the dependent.
    After,
    /// `io.berth.before` on the dependency.
    Before,
    /// `network_mode: service:X` of the dependent.
    Network,
}

/// "The service owning this edge waits for `dependency`."
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edge {
    pub dependency: String,
    pub condition: Condition,
    /// When false the edge only orders: a dependency that can never reach the
    /// condition no longer holds the dependent back.
    pub required: bool,
    /// Recreate the dependent when the dependency is recreated.
    pub restart: bool,
    pub kind: EdgeKind,
}

/// Why a pending service can never start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The required dependency is not defined (validation rejects this; the
    /// graph copes so that one bad service does not stop the others).
    Missing,
    /// The dependency is [`State::Failed`].
    Failed,
    /// The dependency exited with this code, short of the condition, and its
    /// restart policy will not run it again.
    Exited(i32),
    /// The dependency is pending and can never start itself.
    Blocked,
}

/// A pending service that can never start, and the dependency that stops it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    pub service: String,
    pub dependency: String,
    pub reason: Reason,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (s, d) = (&self.service, &self.dependency);
        write!(f, "`{s}` can never start: ")?;
        match self.reason {
            Reason::Missing => write!(f, "it depends on `{d}`, which is not defined"),
            Reason::Failed => write!(f, "its dependency `{d}` failed"),
            Reason::Exited(code) => write!(
                f,
                "its dependency `{d}` exited with code {code} and will not be restarted"
            ),
            Reason::Blocked => write!(f, "its dependency `{d}` can never start"),
        }
    }
}

/// What the supervisor may do now, from [`Graph::evaluate`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Pending services whose dependencies are all satisfied, dependencies
    /// first; they may all start in parallel.
    pub ready: Vec<String>,
    /// Pending services that can never start with the states given.
    pub blocked: Vec<Blocked>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphError {
    /// Names the cycle as `a -> b -> a`, where `a -> b` means a waits for b.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

#[derive(Debug, Clone)]
struct Node {
    oneshot: bool,
    /// A healthcheck that will run, i.e. `Healthy` will be reported.
    healthcheck: bool,
    restart: RestartPolicy,
    deps: Vec<Edge>,
    /// Required dependencies on undefined services.
    missing: Vec<String>,
    dependents: BTreeSet<String>,
    /// Longest chain of dependencies below this node.
    start_level: usize,
}

impl Node {
    fn restarts_after(&self, code: i32) -> bool {
        match self.restart {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure(_) => code != 0,
        }
    }
}

/// The dependency graph of one config's services.
#[derive(Debug, Clone)]
pub struct Graph {
    nodes: BTreeMap<String, Node>,
    /// Every service, each after all of its dependencies.
    order: Vec<String>,
}

enum Check {
    Satisfied,
    Wait,
    Never(Reason),
}

impl Graph {
    /// Builds the graph of `services` (the merged config's `berth.services`).
    /// Fails only on a dependency cycle, which validation should have rejected.
    pub fn new(services: &BTreeMap<String, Service>) -> Result<Graph, GraphError> {
        let mut nodes: BTreeMap<String, Node> = services
            .iter()
            .map(|(name, s)| {
                let healthcheck = s
                    .healthcheck
                    .as_ref()
                    .is_some_and(|h| !h.disable && h.test.is_some());
                let node = Node {
                    oneshot: s.oneshot,
                    healthcheck,
                    restart: s.restart.unwrap_or(RestartPolicy::No),
                    deps: Vec::new(),
                    missing: Vec::new(),
                    dependents: BTreeSet::new(),
                    start_level: 0,
                };
                (name.clone(), node)
            })
            .collect();

        let mut edges: Vec<(String, Edge)> = Vec::new();
        for (name, s) in services {
            for (dep, d) in &s.depends_on {
                let required = d.required != Some(false);
                if !services.contains_key(dep) {
                    if required {
                        if let Some(node) = nodes.get_mut(name) {
                            node.missing.push(dep.clone());
                        }
                    }
                    continue;
                }
                edges.push((
                    name.clone(),
                    Edge {
                        dependency: dep.clone(),
                        condition: d.condition,
                        required,
                        restart: d.restart == Some(true),
                        kind: EdgeKind::DependsOn,
                    },
                ));
            }
            let ordering = |dependency: &str, kind| Edge {
                dependency: dependency.to_string(),
                condition: Condition::ServiceStarted,
                required: false,
                restart: false,
                kind,
            };
            for other in ordering_label(s, AFTER_LABEL).filter(|o| services.contains_key(*o)) {
                edges.push((name.clone(), ordering(other, EdgeKind::After)));
            }
            for other in ordering_label(s, BEFORE_LABEL).filter(|o| services.contains_key(*o)) {
                edges.push((other.to_string(), ordering(name, EdgeKind::Before)));
            }
            if let Some(target) = s.network_mode.as_deref().and_then(|m| {
                m.strip_prefix("service:")
                    .or_else(|| m.strip_prefix("container:"))
            }) {
                if services.contains_key(target) {
                    edges.push((
                        name.clone(),
                        Edge {
                            dependency: target.to_string(),
                            condition: Condition::ServiceStarted,
                            required: true,
                            restart: true,
                            kind: EdgeKind::Network,
                        },
                    ));
                } else if let Some(node) = nodes.get_mut(name) {
                    node.missing.push(target.to_string());
                }
            }
        }
        for (dependent, edge) in edges {
            if let Some(node) = nodes.get_mut(&edge.dependency) {
                node.dependents.insert(dependent.clone());
            }
            if let Some(node) = nodes.get_mut(&dependent) {
                node.deps.push(edge);
            }
        }

        let order = topological(&nodes)?;
        for name in &order {
            let level = nodes[name]
                .deps
                .iter()
                .map(|e| nodes[&e.dependency].start_level + 1)
                .max()
                .unwrap_or(0);
            if let Some(node) = nodes.get_mut(name) {
                node.start_level = level;
            }
        }
        Ok(Graph { nodes, order })
    }

    /// Every service, each after all of its dependencies.
    pub fn order(&self) -> &[String] {
        &self.order
    }

    pub fn contains(&self, service: &str) -> bool {
        self.nodes.contains_key(service)
    }

    /// What `service` waits for (empty for an unknown service).
    pub fn dependencies(&self, service: &str) -> &[Edge] {
        self.nodes.get(service).map_or(&[], |n| &n.deps)
    }

    /// The services that wait for `service`.
    pub fn dependents(&self, service: &str) -> impl Iterator<Item = &str> {
        self.nodes
            .get(service)
            .into_iter()
            .flat_map(|n| n.dependents.iter().map(String::as_str))
    }

    /// Which pending services may start now and which never can. A service
    /// missing from `states` counts as [`State::Pending`]; only pending services
    /// appear in the plan.
    pub fn evaluate(&self, states: &BTreeMap<String, State>) -> Plan {
        let state = |name: &str| states.get(name).copied().unwrap_or(State::Pending);
        let mut plan = Plan::default();
        let mut blocked: BTreeSet<&str> = BTreeSet::new();
        // Dependencies come first in `order`, so whether they are blocked is
        // known by the time their dependents are looked at.
        for name in &self.order {
            if state(name) != State::Pending {
                continue;
            }
            let node = &self.nodes[name];
            if let Some(missing) = node.missing.first() {
                blocked.insert(name);
                plan.blocked.push(Blocked {
                    service: name.clone(),
                    dependency: missing.clone(),
                    reason: Reason::Missing,
                });
                continue;
            }
            let mut all_satisfied = true;
            let mut never = None;
            for edge in &node.deps {
                let dep = &self.nodes[&edge.dependency];
                let dep_blocked = blocked.contains(edge.dependency.as_str());
                match check(edge, dep, state(&edge.dependency), dep_blocked) {
                    Check::Satisfied => {}
                    Check::Wait => all_satisfied = false,
                    Check::Never(_) if !edge.required => {}
                    Check::Never(reason) => {
                        never = Some((edge.dependency.clone(), reason));
                        break;
                    }
                }
            }
            if let Some((dependency, reason)) = never {
                blocked.insert(name);
                plan.blocked.push(Blocked {
                    service: name.clone(),
                    dependency,
                    reason,
                });
            } else if all_satisfied {
                plan.ready.push(name.clone());
            }
        }
        plan
    }

    /// Every service in start waves: each wave only waits for earlier ones.
    pub fn start_waves(&self) -> Vec<Vec<String>> {
        self.waves(self.order.iter().map(String::as_str), |n| n.start_level)
    }

    fn waves<'a>(
        &self,
        services: impl IntoIterator<Item = &'a str>,
        level: impl Fn(&Node) -> usize,
    ) -> Vec<Vec<String>> {
        let mut by_level: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for name in services {
            if let Some((key, node)) = self.nodes.get_key_value(name) {
                by_level.entry(level(node)).or_default().insert(key.clone());
            }
        }
        by_level
            .into_values()
            .map(|set| set.into_iter().collect())
            .collect()
    }

    /// Every service that depends on `name`, directly or through others
    /// (ordering labels included): those to stop before it. Through the
    /// whole graph, so with `a -> b -> c` a stops before c even when b is not
    /// being stopped. The supervisor stops a service as soon as these have
    /// stopped: services with no dependency between them stop in parallel.
    pub fn dependents_closure(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&str> = vec![name];
        while let Some(n) = todo.pop() {
            let Some(node) = self.nodes.get(n) else {
                continue;
            };
            for d in &node.dependents {
                if out.insert(d.clone()) {
                    todo.push(d);
                }
            }
        }
        out
    }

    /// The services to recreate when `changed` changed: those of them in the
    /// graph, and, transitively, their dependents with `restart: true`.
    pub fn affected<'a>(&self, changed: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut todo: Vec<&str> = changed
            .into_iter()
            .filter(|c| self.nodes.contains_key(*c))
            .collect();
        while let Some(name) = todo.pop() {
            if !out.insert(name.to_string()) {
                continue;
            }
            for dependent in &self.nodes[name].dependents {
                let restarts = self.nodes[dependent]
                    .deps
                    .iter()
                    .any(|e| e.dependency == name && e.restart);
                if restarts && !out.contains(dependent) {
                    todo.push(dependent);
                }
            }
        }
        out
    }
}

fn check(edge: &Edge, dep: &Node, state: State, dep_blocked: bool) -> Check {
    let condition = match edge.condition {
        Condition::ServiceHealthy if !dep.healthcheck => Condition::ServiceStarted,
        c => c,
    };
    match state {
        State::Failed => Check::Never(Reason::Failed),
        State::Pending if dep_blocked => Check::Never(Reason::Blocked),
        State::Pending | State::Starting => Check::Wait,
        // A oneshot is up only once it has run to completion.
        State::Started | State::Healthy if dep.oneshot => Check::Wait,
        State::Started => match condition {
            Condition::ServiceStarted => Check::Satisfied,
            Condition::ServiceHealthy | Condition::ServiceCompletedSuccessfully => Check::Wait,
        },
        State::Healthy => match condition {
            Condition::ServiceStarted | Condition::ServiceHealthy => Check::Satisfied,
            Condition::ServiceCompletedSuccessfully => Check::Wait,
        },
        State::Exited(code) => {
            let met = match condition {
                _ if dep.oneshot => code == 0,
                // It did start; a clean exit is not a crash to wait out.
                Condition::ServiceStarted => code == 0,
                Condition::ServiceHealthy => false,
                Condition::ServiceCompletedSuccessfully => code == 0,
            };
            if met {
                Check::Satisfied
            } else if dep.restarts_after(code) {
                Check::Wait
            } else {
                Check::Never(Reason::Exited(code))
            }
        }
    }
}

/// Kahn's algorithm, smallest name first among the free ones so that the
/// order is stable; whatever is left over lies on or behind a cycle.
fn topological(nodes: &BTreeMap<String, Node>) -> Result<Vec<String>, GraphError> {
    let mut waiting: BTreeMap<&str, usize> = nodes
        .iter()
        .map(|(name, n)| (name.as_str(), n.deps.len()))
        .collect();
    let mut free: BTreeSet<&str> = waiting
        .iter()
        .filter(|(_, &count)| count == 0)
        .map(|(&name, _)| name)
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(name) = free.pop_first() {
        order.push(name.to_string());
        waiting.remove(name);
        for dependent in &nodes[name].dependents {
            // One count per edge: a pair may be joined by several edges.
            let edges = nodes[dependent]
                .deps
                .iter()
                .filter(|e| e.dependency == name)
                .count();
            if let Some(count) = waiting.get_mut(dependent.as_str()) {
                *count = count.saturating_sub(edges);
                if *count == 0 {
                    free.insert(dependent);
                }
            }
        }
    }
    let Some(&start) = waiting.keys().next() else {
        return Ok(order);
    };
    // Every leftover node waits for some leftover node, so walking those
    // edges must come back to a node already seen: that loop is a cycle.
    let mut path: Vec<&str> = vec![start];
    loop {
        let last = path[path.len() - 1];
        let Some(next) = nodes[last]
            .deps
            .iter()
            .map(|e| e.dependency.as_str())
            .find(|d| waiting.contains_key(d))
        else {
            // Unreachable by the argument above; name what is known.
            return Err(GraphError::Cycle(
                path.iter().map(|s| s.to_string()).collect(),
            ));
        };
        if let Some(pos) = path.iter().position(|p| *p == next) {
            let mut cycle: Vec<String> = path[pos..].iter().map(|s| s.to_string()).collect();
            cycle.push(next.to_string());
            return Err(GraphError::Cycle(cycle));
        }
        path.push(next);
    }
}

#[cfg(test)]
mod tests;
