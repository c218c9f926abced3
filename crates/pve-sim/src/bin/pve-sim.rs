//! `pve-sim init ...`: lay out a simulated Proxmox VE host (see `pve_sim::init`).
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("init") => {
            match pve_sim::init::parse_args(&args[1..]).and_then(|o| pve_sim::init::run(&o)) {
                Ok(()) => {}
                Err(e) => {
                    eprintln!("pve-sim init: {e:#}");
                    std::process::exit(2);
                }
            }
        }
        _ => {
            eprintln!("{}", pve_sim::init::USAGE);
            std::process::exit(2);
        }
    }
}
