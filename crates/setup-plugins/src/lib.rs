//! Setup plugins (`setup-<ctid>`) for the reference configuration. Each plugin is a binary in
//! `src/bin/` over the plugin SDK of `lib-common`.
