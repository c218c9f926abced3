//! Step `create-lxc CTID`: create a base container from its OS template with `pct create`,
//! then start it and wait until it is ready. An existing CT is left as it is (started when
//! stopped): exit 0.

use crate::config::Ctid;
use crate::error::{Error, Result};
use crate::pct::{CreateSpec, CtStatus};
use crate::step::{StepContext, wait_ready};
use crate::steps::{Outcome, check_block};

/// Create (or find) CT `ctid`, started and ready.
pub fn run(ctx: &StepContext, ctid: Ctid) -> Result<Outcome> {
    let spec = ctx.container(ctid)?;
    check_block(ctid, spec)?;
    let pct = &ctx.pct;
    match pct.status(ctid)? {
        CtStatus::Missing => {}
        CtStatus::Running => {
            ctx.say(Some(ctid), "already exists and is running; nothing to do");
            return Ok(Outcome::Unchanged);
        }
        CtStatus::Stopped => {
            // A converted template can never start; leave it alone.
            if pct.config(ctid)?.get("template") == Some("1") {
                ctx.say(
                    Some(ctid),
                    "already exists (a Proxmox template); nothing to do",
                );
                return Ok(Outcome::Unchanged);
            }
            ctx.say(Some(ctid), "already exists; starting it");
            pct.start(ctid)?;
            wait_ready(pct, ctid, ctx.ready_timeout())?;
            return Ok(Outcome::Changed);
        }
    }
    if spec.template.starts_with('/') && !crate::host::exists(&spec.template) {
        return Err(Error::precondition(format!(
            "CT {ctid}: the OS template `{}` (lxc_configs.\"{ctid}\".template) does not exist on this host (looked at `{}`)\nhint: download it, e.g. `pveam download <storage> <template>`, or fix the path",
            spec.template,
            crate::paths::host_path(&spec.template).display()
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
    wait_ready(pct, ctid, ctx.ready_timeout())?;
    ctx.say(Some(ctid), "created, started and ready");
    Ok(Outcome::Changed)
}
