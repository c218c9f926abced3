//! Project automation: `cargo xtask <command>`.

fn main() -> std::process::ExitCode {
    eprintln!("usage: cargo xtask <install|uninstall|demo|bench|deb>  (not implemented yet)");
    std::process::ExitCode::from(2)
}
