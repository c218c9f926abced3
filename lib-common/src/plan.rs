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
    /// Has GPUs.
    pub gpu: bool,
    /// Runs Docker.
    pub docker: bool,
    /// Serves a vLLM model.
    pub vllm: bool,
}

impl Capabilities {
    /// What `ct` needs.
    pub fn of(ct: &ContainerSpec) -> Self {
        Capabilities {
            gpu: ct.has_gpus(),
            docker: ct.wants_docker(),
            vllm: ct.wants_vllm(),
        }
    }
    /// How many capabilities.
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

/// How a container comes to exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `pct create CTID <ostemplate>`.
    Create {
        /// The block's `template`.
        ostemplate: String,
    },
    /// `pct clone SOURCE CTID --snapname SNAPSHOT`.
    Clone {
        /// The template cloned from.
        source: Ctid,
        /// Its `template_snapshot_name`.
        snapshot: String,
    },
}

impl Action {
    /// The clone source, if cloned.
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
    /// The container.
    pub ctid: Ctid,
    /// Create or clone.
    pub action: Action,
    /// Why, for people (`--dry-run`, logs).
    pub reason: String,
}

/// The decision for every container, keyed by CTID.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Plan {
    /// Each container's plan, by CTID.
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
                .and_then(|s| s.template_snapshot_name.as_ref())
                .map(ToString::to_string)
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
                    ostemplate: ct.template.to_string(),
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
                    ostemplate: ct.template.to_string(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_value, parse_json, read_file};
    use std::path::Path;

    fn reference() -> LxcConfigFile {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/upstream-214aa23/phoenix_lxc_configs.json");
        from_value(&p, parse_json(&p, &read_file(&p).unwrap()).unwrap()).unwrap()
    }

    /// A standard CT without a source, with the given capabilities.
    fn standard(
        lxc: &mut LxcConfigFile,
        id: u32,
        gpu: bool,
        docker: bool,
        vllm: bool,
        unpriv: bool,
    ) {
        let mut ct = lxc.lxc_configs[&Ctid(910)].clone();
        ct.clone_from_template_ctid = None;
        ct.gpu_assignment = Some(if gpu { "0" } else { "none" }.parse().unwrap());
        ct.features = Some(if docker { "nesting=1" } else { "" }.parse().unwrap());
        ct.vllm_model = vllm.then(|| "m".parse().unwrap());
        ct.unprivileged = unpriv;
        lxc.lxc_configs.insert(Ctid(id), ct);
    }

    fn ids(v: &[u32]) -> Vec<Ctid> {
        v.iter().map(|&c| Ctid(c)).collect()
    }

    #[test]
    fn reference_plan_and_order() {
        let lxc = reference();
        let plan = plan(&lxc);
        assert_eq!(
            plan.entries[&Ctid(900)].action,
            Action::Create {
                ostemplate: lxc.lxc_configs[&Ctid(900)].template.to_string()
            }
        );
        assert_eq!(
            plan.entries[&Ctid(950)].action,
            Action::Clone {
                source: Ctid(920),
                snapshot: "vllm-base-snapshot".into()
            }
        );
        assert!(plan.entries[&Ctid(950)].reason.contains("names 920"));
        assert_eq!(plan.order(), ids(&[900, 901, 902, 903, 910, 920, 950]));
    }

    #[test]
    fn order_puts_sources_first_then_ascending_ctid() {
        let mut lxc = reference();
        // 100 clones 920; 905 is a template cloned from 950's sibling chain end.
        let mut c100 = lxc.lxc_configs[&Ctid(950)].clone();
        c100.name = "early".parse().unwrap();
        lxc.lxc_configs.insert(Ctid(100), c100);
        let mut t = lxc.lxc_configs[&Ctid(902)].clone();
        t.clone_from_template_ctid = Some("920".parse().unwrap());
        lxc.lxc_configs.insert(Ctid(905), t);
        assert_eq!(
            dependency_order(&lxc),
            ids(&[900, 901, 902, 903, 910, 920, 100, 905, 950])
        );
    }

    #[test]
    fn template_choice_takes_most_capabilities_the_ct_has() {
        let mut lxc = reference();
        standard(&mut lxc, 200, true, true, false, false); // GPU+Docker, privileged
        standard(&mut lxc, 201, false, true, false, true); // Docker, unprivileged
        standard(&mut lxc, 202, false, false, false, true); // nothing, unprivileged
        standard(&mut lxc, 203, false, false, false, false); // nothing, privileged
        standard(&mut lxc, 204, true, true, true, false); // everything, privileged
        assert_eq!(choose_template(&lxc, Ctid(200)), Some(Ctid(903)));
        assert_eq!(choose_template(&lxc, Ctid(201)), Some(Ctid(902)));
        assert_eq!(choose_template(&lxc, Ctid(202)), Some(Ctid(900)));
        // The only capability-free template (900) is unprivileged: none fits.
        assert_eq!(choose_template(&lxc, Ctid(203)), None);
        assert_eq!(choose_template(&lxc, Ctid(204)), Some(Ctid(920)));
        // Explicit sources and templates are never "chosen".
        assert_eq!(choose_template(&lxc, Ctid(950)), None);
        assert_eq!(choose_template(&lxc, Ctid(901)), None);
        let plan = plan(&lxc);
        let p = &plan.entries[&Ctid(203)];
        assert!(matches!(p.action, Action::Create { .. }));
        assert!(p.reason.contains("no template fits"), "{}", p.reason);
        let p = &plan.entries[&Ctid(200)];
        assert_eq!(
            p.action,
            Action::Clone {
                source: Ctid(903),
                snapshot: "docker-gpu-snapshot".into()
            }
        );
        assert!(p.reason.contains("best template is 903"), "{}", p.reason);
        // Chosen sources order like explicit ones.
        let order = plan.order();
        let pos = |c: u32| order.iter().position(|&x| x == Ctid(c)).unwrap();
        assert!(pos(903) < pos(200) && pos(902) < pos(201));
    }

    #[test]
    fn template_choice_ties_go_to_the_lowest_ctid() {
        let mut lxc = reference();
        let mut t = lxc.lxc_configs[&Ctid(902)].clone();
        t.template_snapshot_name = Some("other".parse().unwrap());
        lxc.lxc_configs.insert(Ctid(899), t.clone());
        lxc.lxc_configs.insert(Ctid(904), t);
        standard(&mut lxc, 201, false, true, false, true);
        assert_eq!(choose_template(&lxc, Ctid(201)), Some(Ctid(899)));
        lxc.lxc_configs.remove(&Ctid(899));
        assert_eq!(choose_template(&lxc, Ctid(201)), Some(Ctid(902)));
    }

    #[test]
    fn ancestors_for_only() {
        let plan = plan(&reference());
        let set = |v: &[u32]| v.iter().map(|&c| Ctid(c)).collect::<BTreeSet<_>>();
        assert_eq!(
            plan.with_ancestors(&set(&[950])),
            set(&[900, 902, 903, 920, 950])
        );
        assert_eq!(
            plan.with_ancestors(&set(&[910, 901])),
            set(&[900, 901, 902, 910])
        );
        assert_eq!(plan.with_ancestors(&set(&[900])), set(&[900]));
    }

    #[test]
    fn cycles_terminate() {
        let mut lxc = reference();
        lxc.lxc_configs
            .get_mut(&Ctid(900))
            .unwrap()
            .clone_from_template_ctid = Some("950".parse().unwrap());
        let plan = plan(&lxc);
        let order = plan.order();
        assert_eq!(order.len(), 7);
        // Everything hangs off the cycle here; it comes last, ascending.
        assert_eq!(order, ids(&[900, 901, 902, 903, 910, 920, 950]));
        let all = plan.with_ancestors(&[Ctid(950)].into_iter().collect());
        assert!(all.contains(&Ctid(900)) && all.contains(&Ctid(950)));
    }
}
