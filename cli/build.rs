//! Links the `netbore` binary with its code laid out by use: the functions a server
//! and an agent run (listed in `netbore.order`, made by `scripts/order-file.sh`) are
//! placed together at the front of the code. The kernel maps a binary's code into a
//! process 64 KiB around every page it touches, so scattered start-up code made most
//! of the 7 MB of code resident in an idle process; grouped, only the part in use is
//! (docs/benchmarks.md, "Memory"). Symbols the file names that no longer exist are
//! skipped, so a stale file costs memory, never a build.

fn main() {
    println!("cargo:rerun-if-changed=netbore.order");
    println!("cargo:rerun-if-env-changed=NETBORE_NO_ORDER_FILE");
    let linux = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux");
    let x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64");
    // rustc links x86_64 Linux with LLD, which understands the ordering file.
    if !linux || !x86_64 || std::env::var_os("NETBORE_NO_ORDER_FILE").is_some() {
        return;
    }
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-arg-bin=netbore=-Wl,--symbol-ordering-file={dir}/netbore.order");
    println!("cargo:rustc-link-arg-bin=netbore=-Wl,--no-warn-symbol-ordering");
}
