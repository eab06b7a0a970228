//! Links the `netbore` binary so that an idle process keeps little of it resident
//! (docs/benchmarks.md, "Memory"):
//!
//! - its code is laid out by use: the functions an idle server and an idle agent run,
//!   then those only load runs (listed in `netbore.order`, made by
//!   `scripts/order-file.sh`). The kernel maps a binary's code into a process 64 KiB
//!   around every page it touches, so scattered start-up code made most of the 7 MB
//!   of code resident in an idle process; grouped, only the part in use is. Symbols
//!   the file names that no longer exist are skipped, so a stale file costs memory,
//!   never a build;
//! - its relocations are packed (`DT_RELR`, glibc 2.36 and later): the dynamic loader
//!   reads 10 KB of them at start instead of 570 KB.

fn main() {
    println!("cargo:rerun-if-changed=netbore.order");
    println!("cargo:rerun-if-env-changed=NETBORE_NO_ORDER_FILE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let gnu = std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    // rustc links x86_64 Linux with LLD, which understands both options.
    if !linux || !gnu || !x86_64 {
        return;
    }
    println!("cargo:rustc-link-arg-bin=netbore=-Wl,-z,pack-relative-relocs");
    if std::env::var_os("NETBORE_NO_ORDER_FILE").is_some() {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bin=netbore=-Wl,--symbol-ordering-file={dir}/netbore.order");
    println!("cargo:rustc-link-arg-bin=netbore=-Wl,--no-warn-symbol-ordering");
}
