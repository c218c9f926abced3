//! Step `create-lxc CTID`: create a base container from its OS template with `pct create`,
//! then start it and wait until it is ready. An existing CT is converged with its block (only
//! what differs is `pct set`) and started when stopped: exit 0.

use crate::config::Ctid;
use crate::error::{Error, Result};
use crate::pct::CreateSpec;
use crate::step::{StepContext, wait_ready};
use crate::steps::{Outcome, check_block};

/// Create (or find) CT `ctid`, started and ready.
pub fn run(ctx: &StepContext, ctid: Ctid) -> Result<Outcome> {
    let spec = ctx.container(ctid)?;
    check_block(ctid, spec)?;
    let pct = &ctx.pct;
    // Whether it exists and is a template: the conf file says both (no `pct` call).
    let conf = crate::conffile::ConfFile::path_for(ctid)
        .exists()
        .then(|| crate::conffile::ConfFile::load(ctid))
        .transpose()?;
    match conf {
        None => {}
        // A converted template can never start or change; leave it alone.
        Some(c) if c.get("template").as_deref() == Some("1") => {
            ctx.say(
                Some(ctid),
                "already exists (a Proxmox template); nothing to do",
            );
            return Ok(Outcome::Unchanged);
        }
        Some(_) => {
            crate::ownership::require_ours(pct, ctid)?;
            ctx.say(
                Some(ctid),
                "already exists; converging its settings with the config",
            );
            return super::clone::converge(ctx, ctid, spec, false);
        }
    }
    if spec.template.starts_with('/') && !crate::host::exists(&spec.template) {
        return Err(Error::precondition(format!(
            "CT {ctid}: the OS template `{}` (lxc_configs.\"{ctid}\".template) does not exist on this host (looked at `{}`)\nhint: download it, e.g. `pveam download <storage> <template>`, or fix the path",
            spec.template,
            crate::paths::host_path(spec.template.as_str()).display()
        ))
        .into());
    }
    let create = CreateSpec::from_spec(ctid, spec);
    ctx.say(
        Some(ctid),
        &format!("creating `{}` from `{}`", spec.name, spec.template),
    );
    pct.create(&create)?;
    pct.start(ctid)?;
    if crate::env::flag(crate::env::SKIP_READY_WAIT) {
        ctx.say(Some(ctid), "created and started");
        return Ok(Outcome::Changed);
    }
    wait_ready(pct, ctid, ctx.ready_timeout())?;
    ctx.say(Some(ctid), "created, started and ready");
    Ok(Outcome::Changed)
}
