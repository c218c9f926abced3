//! `create-lxc`: not implemented yet (see the issues).

fn main() -> std::process::ExitCode {
    eprintln!("error: create-lxc is not implemented yet");
    std::process::ExitCode::from(1)
}
