//! The NVIDIA driver `.run` installer double that the host-side `curl` serves for
//! `.../NVIDIA-Linux-x86_64-<version>.run`. Run inside a guest it installs only the user space
//! (state: `/var/lib/pve-sim/nvidia/driver_version`, read by the `nvidia-smi` double).

/// Whether `version` looks like an NVIDIA driver version (`570.148.08`, `550.54`).
pub fn valid_version(version: &str) -> bool {
    let parts: Vec<&str> = version.split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The driver version named by a download URL ending in `NVIDIA-Linux-x86_64-<version>.run`.
pub fn version_from_url(url: &str) -> Option<&str> {
    let file = url.split(['?', '#']).next()?.rsplit('/').next()?;
    let version = file
        .strip_prefix("NVIDIA-Linux-x86_64-")?
        .strip_suffix(".run")?;
    valid_version(version).then_some(version)
}

const TEMPLATE: &str = include_str!("../../guest-image/nvidia-installer.sh");

/// The installer double for `version` (a POSIX sh script; `version` must be valid).
pub fn script(version: &str) -> String {
    assert!(
        valid_version(version),
        "invalid NVIDIA driver version {version:?}"
    );
    TEMPLATE.replace("@VERSION@", version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_from_urls() {
        assert_eq!(
            version_from_url(
                "https://us.download.nvidia.com/XFree86/Linux-x86_64/570.148.08/NVIDIA-Linux-x86_64-570.148.08.run"
            ),
            Some("570.148.08")
        );
        assert_eq!(
            version_from_url("https://x/NVIDIA-Linux-x86_64-550.54.run"),
            Some("550.54")
        );
        assert_eq!(
            version_from_url("https://x/NVIDIA-Linux-x86_64-5a0.1.run"),
            None
        );
        assert_eq!(
            version_from_url("https://x/NVIDIA-Linux-x86_64-570.1;rm.run"),
            None
        );
        assert_eq!(version_from_url("https://x/driver.run"), None);
    }

    #[test]
    fn script_bakes_version() {
        let s = script("570.148.08");
        assert!(s.starts_with("#!/bin/sh"));
        assert!(s.contains("VERSION=570.148.08"));
        assert!(!s.contains("@VERSION@"));
    }
}
