//! The process-wide hypervisor id helpers. Alone in this binary because it changes the
//! process environment.

#[test]
fn hypervisor_id_helpers() {
    // One test touches the process-wide id and the environment.
    let id = lochness::codec::new_id();
    assert_eq!(lochness::set_hypervisor_id(&id.to_uppercase()).unwrap(), id);
    assert_eq!(lochness::hypervisor_id(), id);
    assert!(lochness::set_hypervisor_id("not-a-uuid").is_err());
    assert_eq!(
        lochness::hypervisor_id(),
        id,
        "a failure keeps the previous id"
    );
    let env_id = lochness::codec::new_id();
    std::env::set_var("HYPERVISOR_ID", &env_id);
    assert_eq!(lochness::set_hypervisor_id("").unwrap(), env_id);
    std::env::remove_var("HYPERVISOR_ID");
    // The hostname of a test box is not a UUID.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    if lochness::canonicalize(host.trim()).is_err() {
        assert!(lochness::set_hypervisor_id("").is_err());
        assert_eq!(lochness::hypervisor_id(), env_id);
    }
}
