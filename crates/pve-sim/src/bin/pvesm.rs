//! `pvesm` stand-in (see `pve_sim::pvesm`).
fn main() {
    std::process::exit(pve_sim::pvesm::main(std::env::args().collect()));
}
