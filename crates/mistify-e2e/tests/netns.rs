//! The network-namespace harness builds what it says and leaves nothing behind.

use mistify_e2e::netns::{ip, NetLab};

#[test]
fn a_lab_links_two_namespaces_and_removes_everything_on_drop() {
    if mistify_e2e::skipped("netns") {
        return;
    }
    let (a, b, pid);
    {
        let mut lab = NetLab::new("lab");
        a = lab.netns("a");
        b = lab.netns("b");
        let (va, vb) = (lab.name("va"), lab.name("vb"));
        lab.veth(&a, &va, &b, &vb);
        lab.addr(&a, &va, "10.250.0.1/24");
        lab.addr(&b, &vb, "10.250.0.2/24");
        // The address of the far end is reachable from the near end and only there.
        let route = lab.exec(&a, "ip", &["route", "get", "10.250.0.2"]).unwrap();
        assert!(route.contains(&format!("dev {va}")), "{route}");
        assert!(!ip(&["addr"]).unwrap().contains("10.250.0."));
        // A sysctl of one namespace changes there and nowhere else.
        lab.sysctl(&a, "net.ipv4.ip_forward", "1").unwrap();
        let read = |ns: &str| {
            lab.exec(ns, "cat", &["/proc/sys/net/ipv4/ip_forward"])
                .unwrap()
                .trim()
                .to_string()
        };
        assert_eq!((read(&a), read(&b)), ("1".to_string(), "0".to_string()));
        // A process left running inside a namespace does not keep it alive.
        pid = lab.spawn(lab.command(&b, "sleep").arg("600"));
        assert_eq!(lab.pids(&b), vec![pid]);
    }
    let left = ip(&["netns", "list"]).unwrap();
    assert!(!left.contains(&a) && !left.contains(&b), "{left}");
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
