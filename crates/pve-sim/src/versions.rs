//! Which pve-container a simulated PVE release ships, so options and messages are gated by the
//! package version that introduced them (pve-container's `debian/changelog`), not by the PVE
//! major number alone.
//!
//! The table holds, per PVE point release, the pve-container version current on the day the
//! release was announced (changelog dates against the release dates): a later patch level of
//! the same release (8.4.1) maps to the same version. Where a release's ISO and its repository
//! moved apart, the version at the announcement is the one taken (the older, so the stricter).

/// A package version (major, minor, patch).
pub type Version = (u32, u32, u32);

/// (PVE major.minor, pve-container version, announcement date).
pub const TABLE: &[((u32, u32), Version, &str)] = &[
    ((8, 0), (5, 0, 3), "2023-06-22"),
    ((8, 1), (5, 0, 8), "2023-11-23"),
    ((8, 2), (5, 0, 11), "2024-04-24"),
    ((8, 3), (5, 2, 2), "2024-11-21"),
    ((8, 4), (5, 2, 6), "2025-04-09"),
    ((9, 0), (6, 0, 9), "2025-08-05"),
    ((9, 1), (6, 0, 18), "2025-11-19"),
];

/// (major, minor) of a PVE version string (`8.4.1` → (8, 4)).
pub fn major_minor(pve_version: &str) -> (u32, u32) {
    let mut p = pve_version
        .split('.')
        .map(|x| x.parse::<u32>().unwrap_or(0));
    (p.next().unwrap_or(8), p.next().unwrap_or(0))
}

/// The pve-container version of a PVE release; a release newer than the table gets the
/// newest entry, an older one the oldest.
pub fn pve_container(pve_version: &str) -> (u32, u32, u32) {
    let mm = major_minor(pve_version);
    let mut best = TABLE[0].1;
    for (rel, pc, _) in TABLE {
        if *rel <= mm {
            best = *pc;
        }
    }
    best
}

pub fn fmt(v: (u32, u32, u32)) -> String {
    format!("{}.{}.{}", v.0, v.1, v.2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_map_to_their_package() {
        assert_eq!(pve_container("8.0.4"), (5, 0, 3));
        assert_eq!(pve_container("8.1.3"), (5, 0, 8));
        assert_eq!(pve_container("8.4.1"), (5, 2, 6));
        assert_eq!(pve_container("9.0.3"), (6, 0, 9));
        assert_eq!(pve_container("9.1.1"), (6, 0, 18));
        assert_eq!(pve_container("9.2.0"), (6, 0, 18));
    }
}
