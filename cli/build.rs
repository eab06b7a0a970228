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
//!
//! Both are LLD options, so they are passed only where rustc links with LLD by
//! default: x86_64 Linux (GNU) from Rust 1.90 on, with no linker of the user's choice
//! configured. Everywhere else (Windows, macOS, older Rust, another linker) the binary
//! is linked in the compiler's own layout, which costs idle memory, never a build.
//! `NETBORE_NO_ORDER_FILE=1` leaves the layout out on purpose.

use std::process::Command;

/// The first Rust release that links x86_64-unknown-linux-gnu with its own LLD.
const LLD_DEFAULT_SINCE: (u32, u32) = (1, 90);

fn main() {
    println!("cargo:rerun-if-changed=netbore.order");
    println!("cargo:rerun-if-env-changed=NETBORE_NO_ORDER_FILE");
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER");
    if !links_with_default_lld() {
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

/// Whether the binary is linked by rustc's default LLD for x86_64 Linux (GNU).
fn links_with_default_lld() -> bool {
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    if var("CARGO_CFG_TARGET_OS") != "linux"
        || var("CARGO_CFG_TARGET_ENV") != "gnu"
        || var("CARGO_CFG_TARGET_ARCH") != "x86_64"
    {
        return false;
    }
    // A linker or linker flavour the user picked may not be LLD.
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    if flags.contains("linker") || !var("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_empty() {
        return false;
    }
    rustc_version().is_some_and(|v| v >= LLD_DEFAULT_SINCE)
}

/// The (major, minor) version of the rustc cargo builds with.
fn rustc_version() -> Option<(u32, u32)> {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let out = Command::new(rustc).arg("--version").output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    // "rustc 1.95.0 (59807616e 2026-04-14)"
    let mut parts = text.split_whitespace().nth(1)?.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}
