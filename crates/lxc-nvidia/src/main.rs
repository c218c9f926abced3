//! `lxc-nvidia`: not implemented yet (see the issues).

fn main() -> std::process::ExitCode {
    eprintln!("error: lxc-nvidia is not implemented yet");
    std::process::ExitCode::from(1)
}
