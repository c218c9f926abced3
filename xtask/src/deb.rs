//! `cargo xtask deb`: a Debian package (amd64) for Proxmox VE hosts, built with `dpkg-deb`.

use anyhow::Result;

pub fn build() -> Result<()> {
    anyhow::bail!("not implemented yet")
}
