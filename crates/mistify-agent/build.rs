//! Link options of the agent's binaries.
//!
//! On Linux with glibc, the relative relocations of the position-independent executable
//! are packed (`-z pack-relative-relocs`, the `DT_RELR` format of glibc 2.36 and
//! binutils 2.38, both in Debian 12): about 470 KB of relocation records become a few
//! KB, which the loader no longer reads page by page at every start. The executable
//! stays position independent (ASLR unchanged).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
