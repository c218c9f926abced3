//! The step's command-line contract (and, as an integration test, what makes
//! `cargo test --workspace` build this binary for the end-to-end tests).

#[test]
fn keeps_the_step_command_line_contract() {
    phoenix_e2e::assert_step_cli(
        env!("CARGO_BIN_EXE_initial-setup"),
        "phoenix_hypervisor_initial_setup",
        false,
    );
}
