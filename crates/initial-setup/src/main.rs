//! `initial-setup`: not implemented yet (see the issues).

fn main() -> std::process::ExitCode {
    eprintln!("error: initial-setup is not implemented yet");
    std::process::ExitCode::from(1)
}
