//! `lxc-docker`: not implemented yet (see the issues).

fn main() -> std::process::ExitCode {
    eprintln!("error: lxc-docker is not implemented yet");
    std::process::ExitCode::from(1)
}
