//! `phoenix_hypervisor_setup_910`: the Portainer server. The `portainer` container runs (started,
//! or created from the pinned `docker.portainer_server_image` when missing) and its UI answers
//! on `network.portainer_server_port` inside the container.

use lib_common::error::{Error, Result};
use lib_common::sdk::{self, Ct};

/// Portainer's HTTPS UI port inside its container.
const UI_PORT_IN_CONTAINER: u16 = 9443;

fn main() -> std::process::ExitCode {
    sdk::run(
        910,
        "Portainer server: the `portainer` container runs and its UI answers",
        |ct| {
            setup_plugins::ensure_docker(ct)?;
            ensure_portainer(ct)?;
            let port = ct.configs().hypervisor.network.portainer_server_port;
            let url = format!("https://localhost:{port}");
            ct.wait_http(&url, ct.ready_timeout())?;
            ct.say(&format!("Portainer answers on {url}"));
            Ok(())
        },
    )
}

fn ensure_portainer(ct: &Ct) -> Result<()> {
    let ctid = ct.ctid();
    let hv = &ct.configs().hypervisor;
    let image = hv.portainer_server_image();
    // A pinned image reference; never something docker could read as an option.
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
    let out = ct.query(&[
        "docker",
        "inspect",
        "--format",
        "{{.State.Running}}",
        "portainer",
    ])?;
    match (out.success(), out.stdout.trim()) {
        (true, "true") => {
            ct.say("the portainer container is running");
            Ok(())
        }
        (true, _) => {
            ct.say("starting the existing portainer container");
            ct.run(&["docker", "start", "portainer"]).map(drop)
        }
        (false, _) if out.stderr.contains("No such object") => {
            let port = hv.network.portainer_server_port;
            ct.say(&format!(
                "creating the portainer container from {image} (UI on port {port})"
            ));
            let publish = format!("{port}:{UI_PORT_IN_CONTAINER}");
            ct.run(&[
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
            ])
            .map(drop)
        }
        (false, _) => Err(Error::guest(format!(
            "CT {ctid}: `docker inspect portainer` failed (exit {}): {}",
            out.code,
            out.tail(300)
        ))
        .into()),
    }
}
