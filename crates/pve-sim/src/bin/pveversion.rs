//! `pveversion` stand-in: `pve-manager/<version>/<hash> (running kernel: <kernel>)`.
fn main() {
    let host = match pve_sim::host::Host::from_env() {
        Ok(h) => h,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let verbose = std::env::args()
        .skip(1)
        .any(|a| a == "-v" || a == "--verbose");
    print!("{}", pve_sim::pveversion(&host, verbose));
}
