//! Tidy checks of the workspace itself.

use std::path::Path;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap()
}

#[test]
fn workspace_has_the_architecture_layout() {
    for dir in ["lib-common", "crates", "etc", "xtask", "tests"] {
        assert!(root().join(dir).is_dir(), "missing top-level `{dir}/`");
    }
    for krate in [
        "establish",
        "initial-setup",
        "create-lxc",
        "clone-lxc",
        "lxc-nvidia",
        "lxc-docker",
        "setup-plugins",
        "pve-sim",
    ] {
        assert!(
            root()
                .join("crates")
                .join(krate)
                .join("Cargo.toml")
                .is_file(),
            "missing crates/{krate}"
        );
    }
}

#[test]
fn ci_runs_the_readme_test_command() {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let ci = std::fs::read_to_string(root().join(".ci/run")).unwrap();
    assert!(
        readme.contains("cargo test --workspace"),
        "README names the test command"
    );
    assert!(
        ci.contains("cargo test --workspace"),
        ".ci/run runs the README's test command"
    );
}
