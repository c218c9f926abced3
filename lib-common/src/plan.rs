//! What to do with each container, decided from the configuration alone: create it from its
//! ostemplate or clone it from a template snapshot, why, and the order (every CT after its clone
//! source; ties by ascending CTID). The orchestrator combines this with the host's state.
//!
//! Template choice for a standard container without `clone_from_template_ctid` (the design's
//! "best existing template", made deterministic): among the templates defined in the file that
//! have a `template_snapshot_name` and the same `unprivileged` as the container (Proxmox cannot
//! change it on a clone), take those whose capabilities (GPU = `gpu_assignment` not `none`,
//! Docker = `features` has `nesting=1`, vLLM = `vllm_model` set) are all capabilities the
//! container has too; pick the one with the most capabilities, ties to the lowest CTID. None
//! fits: create it from its ostemplate. Templates without a source are always created.
//!
//! The functions expect a validated configuration; on an invalid one (cycles, missing sources)
//! they still terminate and never panic.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::{ContainerSpec, Ctid, LxcConfigFile};

/// What a container needs, as far as template choice is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Capabilities {
    pub gpu: bool,
    pub docker: bool,
    pub vllm: bool,
}

impl Capabilities {
    pub fn of(ct: &ContainerSpec) -> Self {
        Capabilities {
            gpu: ct.has_gpus(),
            docker: ct.wants_docker(),
            vllm: ct.wants_vllm(),
        }
    }
    pub fn count(self) -> usize {
        usize::from(self.gpu) + usize::from(self.docker) + usize::from(self.vllm)
    }
    /// Every capability of `self` is one of `other`'s.
    pub fn is_subset_of(self, other: Capabilities) -> bool {
        (!self.gpu || other.gpu) && (!self.docker || other.docker) && (!self.vllm || other.vllm)
    }
}

impl fmt::Display for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = [
            (self.gpu, "GPU"),
            (self.docker, "Docker"),
            (self.vllm, "vLLM"),
        ]
        .into_iter()
        .filter_map(|(on, n)| on.then_some(n))
        .collect();
        if names.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&names.join(", "))
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `pct create CTID <ostemplate>`.
    Create { ostemplate: String },
    /// `pct clone SOURCE CTID --snapname SNAPSHOT`.
    Clone { source: Ctid, snapshot: String },
}

impl Action {
    pub fn source(&self) -> Option<Ctid> {
        match self {
            Action::Create { .. } => None,
            Action::Clone { source, .. } => Some(*source),
        }
    }
}

/// The decision for one container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub ctid: Ctid,
    pub action: Action,
    /// Why, for people (`--dry-run`, logs).
    pub reason: String,
}

/// The decision for every container, keyed by CTID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    pub entries: BTreeMap<Ctid, Planned>,
}

/// The best template for a standard container without an explicit source (module doc), or
/// `None` when none fits (also for templates and CTs with an explicit source).
pub fn choose_template(lxc: &LxcConfigFile, ctid: Ctid) -> Option<Ctid> {
    let ct = lxc.lxc_configs.get(&ctid)?;
    if ct.is_template() || ct.clone_from_template_ctid.is_some() {
        return None;
    }
    let want = Capabilities::of(ct);
    lxc.lxc_configs
        .iter()
        .filter(|(id, t)| {
            **id != ctid
                && t.is_template()
                && t.template_snapshot_name.is_some()
                && t.unprivileged == ct.unprivileged
                && Capabilities::of(t).is_subset_of(want)
        })
        // max by capability count; among equals the lowest CTID (iteration is ascending, and
        // `max_by_key` keeps the last maximum, so reverse).
        .rev()
        .max_by_key(|(_, t)| Capabilities::of(t).count())
        .map(|(id, _)| *id)
}

/// Decide create or clone for every container.
pub fn plan(lxc: &LxcConfigFile) -> Plan {
    let mut entries = BTreeMap::new();
    for (&id, ct) in &lxc.lxc_configs {
        let snapshot_of = |src: Ctid| {
            lxc.lxc_configs
                .get(&src)
                .and_then(|s| s.template_snapshot_name.clone())
                .unwrap_or_default()
        };
        let (action, reason) = if let Some(src) = ct.clone_source() {
            let snapshot = snapshot_of(src);
            let reason =
                format!("clone_from_template_ctid names {src}: clone its snapshot '{snapshot}'");
            (
                Action::Clone {
                    source: src,
                    snapshot,
                },
                reason,
            )
        } else if ct.is_template() {
            (
                Action::Create {
                    ostemplate: ct.template.clone(),
                },
                "template without clone_from_template_ctid: create from its ostemplate".into(),
            )
        } else if let Some(src) = choose_template(lxc, id) {
            let snapshot = snapshot_of(src);
            let caps = Capabilities::of(&lxc.lxc_configs[&src]);
            let reason = format!(
                "no clone_from_template_ctid: best template is {src} (capabilities: {caps}; needs: {}; same unprivileged), snapshot '{snapshot}'",
                Capabilities::of(ct)
            );
            (
                Action::Clone {
                    source: src,
                    snapshot,
                },
                reason,
            )
        } else {
            (
                Action::Create {
                    ostemplate: ct.template.clone(),
                },
                format!(
                    "no clone_from_template_ctid and no template fits (needs: {}; unprivileged {}): create from its ostemplate",
                    Capabilities::of(ct),
                    ct.unprivileged
                ),
            )
        };
        entries.insert(
            id,
            Planned {
                ctid: id,
                action,
                reason,
            },
        );
    }
    Plan { entries }
}

impl Plan {
    /// The clone source of `ctid` when it is a CT of this plan.
    fn parent(&self, ctid: Ctid) -> Option<Ctid> {
        self.entries
            .get(&ctid)
            .and_then(|p| p.action.source())
            .filter(|s| self.entries.contains_key(s))
    }

    /// Every CT after its clone source, ties by ascending CTID (Kahn's algorithm with the
    /// smallest ready CTID first). CTs caught in a cycle (only in an invalid config) come last,
    /// ascending.
    pub fn order(&self) -> Vec<Ctid> {
        let mut children: BTreeMap<Ctid, Vec<Ctid>> = BTreeMap::new();
        let mut ready: BTreeSet<Ctid> = BTreeSet::new();
        for &id in self.entries.keys() {
            match self.parent(id) {
                Some(p) => children.entry(p).or_default().push(id),
                None => {
                    ready.insert(id);
                }
            }
        }
        let mut out = Vec::with_capacity(self.entries.len());
        while let Some(id) = ready.pop_first() {
            out.push(id);
            if let Some(kids) = children.get(&id) {
                ready.extend(kids.iter().copied());
            }
        }
        if out.len() < self.entries.len() {
            let placed: BTreeSet<Ctid> = out.iter().copied().collect();
            out.extend(self.entries.keys().filter(|c| !placed.contains(c)));
        }
        out
    }

    /// `ctids` plus all their clone ancestors (what `--only` must consider).
    pub fn with_ancestors(&self, ctids: &BTreeSet<Ctid>) -> BTreeSet<Ctid> {
        let mut out = BTreeSet::new();
        for &c in ctids {
            let mut cur = Some(c);
            // `insert` returning false stops at a CT already seen (also ends a cycle).
            while let Some(id) = cur
                && out.insert(id)
            {
                cur = self.parent(id);
            }
        }
        out
    }
}

/// [`plan`] then [`Plan::order`].
pub fn dependency_order(lxc: &LxcConfigFile) -> Vec<Ctid> {
    plan(lxc).order()
}

/// [`plan`] then [`Plan::with_ancestors`].
pub fn with_ancestors(lxc: &LxcConfigFile, ctids: &BTreeSet<Ctid>) -> BTreeSet<Ctid> {
    plan(lxc).with_ancestors(ctids)
}
