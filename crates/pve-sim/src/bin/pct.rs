//! `pct` stand-in (see `pve_sim::pct`).
fn main() {
    std::process::exit(pve_sim::pct::main(std::env::args().collect()));
}
