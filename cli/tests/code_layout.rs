//! The release binary is linked with `netbore.order` (cli/build.rs): the functions a
//! server and an agent run sit together, so an idle process keeps little of the code
//! resident. Checks the layout took effect, with `nm` from binutils.

use std::collections::HashSet;
use std::process::Command;

#[test]
fn the_functions_in_use_sit_together() {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64"))
        || std::env::var_os("NETBORE_NO_ORDER_FILE").is_some()
    {
        return;
    }
    let listed: HashSet<String> = include_str!("../netbore.order")
        .lines()
        .map(str::to_string)
        .collect();
    let nm = Command::new("nm")
        .args(["-S", "--defined-only", env!("CARGO_BIN_EXE_netbore")])
        .output()
        .expect("nm (binutils) runs");
    assert!(nm.status.success());
    let mut lowest = u64::MAX;
    let mut highest = 0;
    let mut size = 0;
    let mut found = 0;
    for line in String::from_utf8_lossy(&nm.stdout).lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [address, len, _, name] = parts[..] else {
            continue;
        };
        if !listed.contains(name) {
            continue;
        }
        let address = u64::from_str_radix(address, 16).unwrap();
        let len = u64::from_str_radix(len, 16).unwrap();
        lowest = lowest.min(address);
        highest = highest.max(address + len);
        size += len;
        found += 1;
    }
    // A stale list loses some names, never most of them.
    assert!(
        found * 2 > listed.len(),
        "only {found} of the {} functions in netbore.order exist; run scripts/order-file.sh",
        listed.len()
    );
    // Together: the span they cover is little more than their own size (in the
    // compiler's layout they are spread over the whole binary, twice that or more).
    let span = highest - lowest;
    assert!(
        span < size + size / 4,
        "the listed functions ({size} bytes) are spread over {span} bytes"
    );
}
