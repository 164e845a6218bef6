//! Link options of the agent's binaries.
//!
//! On Linux with glibc:
//! - the relative relocations of the position-independent executable are packed
//!   (`-z pack-relative-relocs`, the `DT_RELR` format of glibc 2.36 and binutils 2.38,
//!   both in Debian 12): about 470 KB of relocation records become a few KB, which the
//!   loader no longer reads page by page at every start. The executable stays position
//!   independent (ASLR unchanged);
//! - the code is laid out by `link/order.ld` (written by `make startup-order`): the
//!   functions that run at start-up and while serving requests are placed side by
//!   side ahead of the rest, so the agent maps a few hundred contiguous pages of its
//!   code instead of pages spread over all of it (docs/agent.md, "Memory"). A pattern
//!   that names no function (after a dependency or the code changed) is ignored by the
//!   linker: the layout degrades, the build does not break. Debug builds are linked
//!   with it too, so every test run links the script.

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let order = std::path::Path::new(&dir).join("link").join("order.ld");
        // `-Xlinker` keeps a comma in the path whole (`-Wl,` would split it).
        println!("cargo:rustc-link-arg-bins=-Xlinker");
        println!("cargo:rustc-link-arg-bins=--script={}", order.display());
    }
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=link/order.ld");
}
