//! `phoenix_hypervisor_setup_900`: the base template. Packages upgraded once, the base tools,
//! the en_US.UTF-8 locale, then its snapshot (`template_snapshot_name`). One call to look and,
//! on a new template, one to change.

use lib_common::sdk::{self, Want};

const BASE_TOOLS: &[&str] = &[
    "curl", "wget", "vim", "htop", "jq", "rsync", "git", "gnupg", "locales",
];

fn main() -> std::process::ExitCode {
    sdk::run(
        900,
        "Base template: upgrade, base tools, en_US.UTF-8 locale, template snapshot",
        |ct| {
            let want = Want::new()
                .upgraded()
                .packages(BASE_TOOLS)
                .locale("en_US.UTF-8");
            ct.ensure(&want)?;
            ct.finalize_template()?;
            Ok(())
        },
    )
}
