//! Every plugin's command-line contract (and, as an integration test, what makes
//! `cargo test --workspace` build the plugins for the end-to-end tests).

#[test]
fn every_plugin_keeps_the_step_command_line_contract() {
    for (bin, ctid) in [
        (env!("CARGO_BIN_EXE_setup-900"), 900),
        (env!("CARGO_BIN_EXE_setup-901"), 901),
        (env!("CARGO_BIN_EXE_setup-902"), 902),
        (env!("CARGO_BIN_EXE_setup-903"), 903),
        (env!("CARGO_BIN_EXE_setup-910"), 910),
        (env!("CARGO_BIN_EXE_setup-920"), 920),
        (env!("CARGO_BIN_EXE_setup-950"), 950),
    ] {
        phoenix_e2e::assert_step_cli(bin, &format!("phoenix_hypervisor_setup_{ctid}"), true);
    }
}
