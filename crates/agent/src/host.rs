//! What the hello says about the host: its name and its network interfaces
//! with MAC and addresses (`10.0.0.3/24`), read fresh on each connection.
//!
//! Names and MACs come from sysfs (`/sys/class/net/{name}/address`, see
//! sysfs-class-net in the kernel's ABI docs), addresses from `getifaddrs(3)` via
//! `if-addrs`: no unsafe code here. Anything unreadable is left out, never fatal.

use std::collections::BTreeMap;
use std::path::Path;

use netwatch_api::agent::InterfaceInfo;

const SYS_CLASS_NET: &str = "/sys/class/net";
const HOSTNAME_FILE: &str = "/proc/sys/kernel/hostname";

/// The kernel's host name (uname's nodename); `None` when it cannot be read.
pub(crate) fn hostname() -> Option<String> {
    let name = std::fs::read_to_string(HOSTNAME_FILE).ok()?;
    let name = name.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// The interfaces of this network namespace, by name.
pub(crate) fn interfaces() -> Vec<InterfaceInfo> {
    let mut by_name: BTreeMap<String, InterfaceInfo> = BTreeMap::new();
    if let Ok(entries) = std::fs::read_dir(SYS_CLASS_NET) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let mac = read_mac(&entry.path());
            by_name.insert(
                name.clone(),
                InterfaceInfo {
                    name,
                    mac,
                    addresses: vec![],
                },
            );
        }
    }
    match if_addrs::get_if_addrs() {
        Ok(addrs) => {
            for addr in addrs {
                let text = match &addr.addr {
                    if_addrs::IfAddr::V4(v4) => format!("{}/{}", v4.ip, v4.prefixlen),
                    if_addrs::IfAddr::V6(v6) => format!("{}/{}", v6.ip, v6.prefixlen),
                };
                by_name
                    .entry(addr.name.clone())
                    .or_insert_with(|| InterfaceInfo {
                        name: addr.name.clone(),
                        mac: None,
                        addresses: vec![],
                    })
                    .addresses
                    .push(text);
            }
        }
        Err(error) => tracing::warn!(error = %error, "cannot list interface addresses"),
    }
    by_name.into_values().collect()
}

/// `aa:bb:cc:dd:ee:ff` from sysfs; none for an all-zero address (loopback,
/// tunnels) or a missing one.
fn read_mac(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("address")).ok()?;
    let mac = text.trim();
    let zero = mac.chars().all(|c| c == '0' || c == ':');
    (!mac.is_empty() && !zero).then(|| mac.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_listed_with_its_address() {
        let all = interfaces();
        let lo = all.iter().find(|i| i.name == "lo").expect("every namespace has lo");
        assert_eq!(lo.mac, None);
        assert!(lo.addresses.iter().any(|a| a == "127.0.0.1/8"), "{lo:?}");
        assert!(hostname().is_some());
    }
}
