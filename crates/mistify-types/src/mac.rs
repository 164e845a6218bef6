//! The MAC address a guest NIC gets when it has none: `02:` (a locally administered,
//! unicast address) and the first five bytes of the MD5 of the guest id for the first
//! NIC (lochness's rule, so a guest placed by a controller and one created on the agent
//! agree), or of `<id>-<index>` for further NICs.

/// The derived MAC of NIC `index` of guest `guest_id`, as six bytes.
pub fn derived_mac_bytes(guest_id: &str, index: usize) -> [u8; 6] {
    let digest = if index == 0 {
        md5::compute(guest_id.as_bytes())
    } else {
        md5::compute(format!("{guest_id}-{index}").as_bytes())
    };
    let mut mac = [0x02, 0, 0, 0, 0, 0];
    mac[1..].copy_from_slice(&digest.0[..5]);
    mac
}

/// The derived MAC of NIC `index` of guest `guest_id`, as `02:xx:xx:xx:xx:xx`.
pub fn derived_mac(guest_id: &str, index: usize) -> String {
    let bytes = derived_mac_bytes(guest_id, index);
    let parts: Vec<String> = bytes.iter().map(|b| format!("{b:02x}")).collect();
    parts.join(":")
}

#[cfg(test)]
mod tests {
    use super::derived_mac;

    #[test]
    fn derived_macs_are_local_and_stable() {
        let a = derived_mac("5a0c7d7e-0000-4000-8000-000000000001", 0);
        assert!(a.starts_with("02:") && a.len() == 17, "{a}");
        assert_eq!(a, derived_mac("5a0c7d7e-0000-4000-8000-000000000001", 0));
        assert_ne!(a, derived_mac("5a0c7d7e-0000-4000-8000-000000000001", 1));
        // md5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(derived_mac("", 0), "02:d4:1d:8c:d9:8f");
    }
}
