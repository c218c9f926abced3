//! `phoenix_hypervisor_setup_910`: the Portainer server. The `portainer` container runs (started,
//! or created from the pinned `docker.portainer_server_image` when missing) and its UI answers
//! on `network.portainer_server_port` inside the container. One call when it does; otherwise
//! one more that runs the container and waits for the UI inside the guest.

use lib_common::error::{Error, Result};
use lib_common::sdk::{self, Changes, Ct, Facts, Probe};

/// Portainer's HTTPS UI port inside its container.
const UI_PORT_IN_CONTAINER: u16 = 9443;
/// Whether the `portainer` container runs (`No such object` when it does not exist).
const PORTAINER_STATE: &[&str] = &[
    "docker",
    "inspect",
    "--format",
    "{{.State.Running}}",
    "portainer",
];

fn main() -> std::process::ExitCode {
    sdk::run(
        910,
        "Portainer server: the `portainer` container runs and its UI answers",
        |ct| {
            let image = portainer_image(ct)?;
            let port = ct.configs().hypervisor.network.portainer_server_port;
            let url = format!("https://localhost:{port}");
            let ui = ["curl", "-fsSk", "--max-time", "10", url.as_str()];
            let ask = |p: Probe| p.cmd(PORTAINER_STATE).cmd(&ui);
            let mut facts = ct.probe(&ask(setup_plugins::ask_docker(Probe::new())))?;
            if setup_plugins::ensure_docker(ct, &facts)? {
                if ct.dry_run() {
                    ct.say("dry run: then the portainer container would be checked");
                    return Ok(());
                }
                // Docker was not running when the probe asked it: ask it again.
                facts = ct.probe(&ask(Probe::new()))?;
            }
            let mut changes = portainer_changes(ct, &facts, &image)?;
            if !changes.is_empty() || !facts.cmd(&ui).success() {
                changes = changes.wait_http(&url, ct.ready_timeout());
            }
            ct.apply(&changes)?;
            if !ct.dry_run() {
                ct.say(&format!("Portainer answers on {url}"));
            }
            Ok(())
        },
    )
}

/// `docker.portainer_server_image`: a pinned image reference, never something docker could
/// read as an option.
fn portainer_image(ct: &Ct) -> Result<String> {
    let image = ct.configs().hypervisor.portainer_server_image();
    let valid = image
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "._/:@-".contains(c))
        && image
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric());
    if !valid {
        return Err(Error::config(format!(
            "docker.portainer_server_image {image:?} is not a Docker image reference"
        ))
        .into());
    }
    Ok(image.to_string())
}

/// Start the `portainer` container when it exists and is stopped; create it when missing.
fn portainer_changes(ct: &Ct, facts: &Facts, image: &str) -> Result<Changes> {
    let out = facts.cmd(PORTAINER_STATE);
    match (out.success(), out.stdout.trim()) {
        (true, "true") => {
            ct.say("the portainer container is running");
            Ok(Changes::new())
        }
        (true, _) => {
            ct.say("starting the existing portainer container");
            Ok(Changes::new().cmd(&["docker", "start", "portainer"]))
        }
        (false, _) if out.stderr.contains("No such object") => {
            let port = ct.configs().hypervisor.network.portainer_server_port;
            ct.say(&format!(
                "creating the portainer container from {image} (UI on port {port})"
            ));
            let publish = format!("{port}:{UI_PORT_IN_CONTAINER}");
            Ok(Changes::new().cmd(&[
                "docker",
                "run",
                "-d",
                "--name",
                "portainer",
                "--restart=always",
                "-p",
                "8000:8000",
                "-p",
                &publish,
                "-v",
                "/var/run/docker.sock:/var/run/docker.sock",
                "-v",
                "portainer_data:/data",
                image,
            ]))
        }
        (false, _) => Err(Error::guest(format!(
            "CT {}: `docker inspect portainer` failed (exit {}): {}",
            ct.ctid(),
            out.code,
            out.stderr.trim()
        ))
        .into()),
    }
}
