//! `phoenix_hypervisor_setup_900`: the base template. Packages upgraded once, the base tools,
//! the en_US.UTF-8 locale, then its snapshot (`template_snapshot_name`).

use lib_common::sdk;

const BASE_TOOLS: &[&str] = &[
    "curl", "wget", "vim", "htop", "jq", "rsync", "git", "gnupg", "locales",
];

fn main() -> std::process::ExitCode {
    sdk::run(
        900,
        "Base template: upgrade, base tools, en_US.UTF-8 locale, template snapshot",
        |ct| {
            ct.ensure_upgraded()?;
            ct.ensure_packages(BASE_TOOLS)?;
            ct.ensure_locale("en_US.UTF-8")?;
            ct.finalize_template()?;
            Ok(())
        },
    )
}
