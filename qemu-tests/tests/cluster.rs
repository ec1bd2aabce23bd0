//! Two Berth VMs form a Docker Swarm from their cloud-config alone, on a
//! private Ethernet link between the two QEMU processes (`-netdev dgram` on
//! 127.0.0.1) with static addresses: node1 initialises the swarm, the test
//! reads the worker token over SSH and boots node2 with it in its user-data.
//! node2's first join finds no manager answering (node1 blackholes its
//! replies for a while) and is retried. Then: both nodes Ready; a
//! two-replica service on an overlay network runs one task per node; a
//! container on node1 reaches node2's task by the service's name; the routing mesh answers on both nodes' addresses; an
//! encrypted overlay carries traffic that is ESP on the wire while a plain
//! overlay's is readable (the link's frames are dumped by QEMU); the worker
//! reboots, rejoins by itself and gets its task back.

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use qemu_tests::ssh::Ssh;
use qemu_tests::steps::{boot_ready, busybox_archive, docker_load, eventually, ok, Archive, GIB};
use qemu_tests::{Artifacts, Boot, Config, Link, Vm};

/// Swarm convergence under TCG, two VMs sharing two cores with other work.
const CONVERGE: Duration = Duration::from_secs(240);
/// dockerd with swarm, overlay networks and a task or two: more than the
/// harness's default 1 GiB leaves little for the page cache under TCG.
const MEMORY_MIB: u32 = 1280;

const NODE1_ADDR: &str = "10.9.9.1";
const NODE2_ADDR: &str = "10.9.9.2";
/// Served by the task on the encrypted overlay: must never be seen on the wire.
const SECRET: &str = "berth-encrypted-overlay-payload-4f1c";

/// A node's user-data: SSH key, a static address on the private link
/// (eth1; eth0 keeps DHCP on the user network SSH comes through) and `swarm`.
fn user_data(hostname: &str, key: &str, addr: &str, swarm: &str) -> String {
    format!(
        r#"#cloud-config
hostname: {hostname}
ssh_authorized_keys:
  - {key}
berth:
  network:
    interfaces:
      eth1:
        address: {addr}/24
  engine:
    swarm:
{swarm}"#
    )
}

/// An HTTP GET of `/` on 127.0.0.1:`port`: the body, or `None`.
fn http_get(port: u16) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: berth\r\n\r\n")
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.trim().to_string())
}

/// The frames of a pcap file (QEMU's filter-dump: Ethernet, little-endian).
fn pcap_frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut frames = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let len = u32::from_le_bytes([bytes[at + 8], bytes[at + 9], bytes[at + 10], bytes[at + 11]])
            as usize;
        let start = at + 16;
        let end = (start + len).min(bytes.len());
        frames.push(bytes[start..end].to_vec());
        at = start + len;
    }
    frames
}

/// IPv4 frames whose protocol is `proto` (50: ESP).
fn count_ip_proto(frames: &[Vec<u8>], proto: u8) -> usize {
    frames
        .iter()
        .filter(|f| f.len() > 23 && f[12..14] == [0x08, 0x00] && f[23] == proto)
        .count()
}

fn contains(frames: &[Vec<u8>], needle: &[u8]) -> bool {
    frames
        .iter()
        .any(|f| f.windows(needle.len()).any(|w| w == needle))
}

/// The service's tasks that are running, as (node, task container ID prefix).
fn running_tasks(vm: &Vm, ssh: &Ssh, service: &str) -> Vec<String> {
    ok(
        vm,
        ssh,
        &format!(
            "docker service ps {service} --filter desired-state=running --format '{{{{.Node}}}} {{{{.CurrentState}}}}'"
        ),
    )
    .lines()
    .filter(|l| l.contains(" Running "))
    .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
    .collect()
}

/// Waits until `service` runs one task on each of `nodes`.
fn one_task_per_node(vm: &Vm, ssh: &Ssh, service: &str, nodes: &[&str]) {
    let start = Instant::now();
    loop {
        let mut on = running_tasks(vm, ssh, service);
        on.sort();
        if on == nodes {
            eprintln!(
                "{service}: one task on each of {nodes:?} after {:.1}s",
                start.elapsed().as_secs_f64()
            );
            return;
        }
        assert!(
            start.elapsed() < CONVERGE,
            "{service} runs on {on:?}, not one task on each of {nodes:?}:\n{}",
            ok(vm, ssh, &format!("docker service ps --no-trunc {service}"))
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

/// berthd's final words on the swarm in `berth logs docker` (what it did or
/// found, not its retries), oldest first; the log spans reboots.
fn swarm_outcomes(vm: &Vm, ssh: &Ssh) -> Vec<String> {
    ok(vm, ssh, "sudo berth logs docker")
        .lines()
        .filter(|l| l.contains("berth swarm: ") && !l.contains("trying again in"))
        .map(str::to_string)
        .collect()
}

/// Waits for berthd's outcome number `after + 1` and returns it.
fn next_swarm_outcome(vm: &Vm, ssh: &Ssh, after: usize) -> String {
    let deadline = Instant::now() + CONVERGE;
    loop {
        let outcomes = swarm_outcomes(vm, ssh);
        if let Some(line) = outcomes.get(after) {
            eprintln!("{}: {line}", vm.name());
            return line.clone();
        }
        assert!(
            Instant::now() < deadline,
            "{}: no new swarm outcome in berth logs docker:\n{}",
            vm.name(),
            ok(vm, ssh, "sudo berth logs docker")
        );
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// `docker info`'s warnings (stderr and stdout).
fn docker_info_warnings(vm: &Vm, ssh: &Ssh) -> Vec<String> {
    ok(vm, ssh, "docker info 2>&1")
        .lines()
        .filter(|l| l.contains("WARNING"))
        .map(str::to_string)
        .collect()
}

#[test]
fn two_vms_form_a_swarm_from_cloud_config_and_keep_it_across_a_reboot() {
    const TEST: &str = "two_vms_form_a_swarm_from_cloud_config_and_keep_it_across_a_reboot";
    let Some(qcow2) = Artifacts::get(Artifacts::QCOW2, TEST) else {
        return;
    };
    if std::env::var_os("BERTH_IMAGE_STORE").is_none() {
        berth_testkit::skip!(
            "BERTH_IMAGE_STORE is not set (`cargo xtask test` builds the images and sets it)"
        );
        return;
    }
    let started = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let archive = busybox_archive(
        dir.path(),
        Archive::Docker {
            tag: "busybox:latest",
        },
    );
    let link1 = Link::new("52:54:00:09:09:01")
        .expect("udp ports")
        .dump(&dir.path().join("link.pcap"));
    let link2 = link1.peer("52:54:00:09:09:02");

    let node = |name: &str, link: &Link, user_data: &str| {
        let ssh_port = qemu_tests::free_port().expect("port");
        let mesh_port = qemu_tests::free_port().expect("port");
        let sub = dir.path().join(name);
        std::fs::create_dir_all(&sub).expect("mkdir");
        let ssh = Ssh::new(&sub, ssh_port, "berth").expect("ssh key");
        let disk = sub.join("disk.qcow2");
        qemu_tests::overlay(&qcow2, &disk, 6 * GIB).expect("overlay");
        let seed = sub.join("seed.iso");
        qemu_tests::nocloud_seed(
            &seed,
            &user_data.replace("SSH_KEY", ssh.public_key()),
            &format!("instance-id: {name}\n"),
        )
        .expect("seed");
        let config = Config::new(name, Boot::Disk)
            .memory(MEMORY_MIB)
            .drive(&disk, false)
            .drive(&seed, true)
            .forward(ssh_port, 22)
            // The routing mesh's published port, reached from the host.
            .forward(mesh_port, 8080)
            .link(link.clone());
        (config, ssh, mesh_port)
    };

    // node1 initialises the swarm from its cloud-config.
    let (config1, ssh1, mesh1) = node(
        "node1",
        &link1,
        &user_data(
            "node1",
            "SSH_KEY",
            NODE1_ADDR,
            "      init: true\n      advertise_addr: eth1\n      labels: {zone: a}\n",
        ),
    );
    let vm1 = boot_ready(&config1, &ssh1);
    eventually(
        &vm1,
        &ssh1,
        "test \"$(docker info --format '{{.Swarm.LocalNodeState}}')\" = active",
        CONVERGE,
    );
    let done1 = next_swarm_outcome(&vm1, &ssh1, 0);
    assert!(
        done1.contains("berth swarm: initialised a new swarm; this node (")
            && done1.contains("node labels zone=a"),
        "{done1}"
    );
    assert_eq!(
        ok(
            &vm1,
            &ssh1,
            "docker node inspect self --format '{{.ManagerStatus.Addr}} {{.Spec.Labels.zone}}'"
        )
        .trim(),
        format!("{NODE1_ADDR}:2377 a")
    );
    let token = ok(&vm1, &ssh1, "docker swarm join-token -q worker")
        .trim()
        .to_string();
    assert!(token.starts_with("SWMTKN-1-"), "{token}");

    // node2 joins with the token in its user-data.
    let (config2, ssh2, mesh2) = node(
        "node2",
        &link2,
        &user_data(
            "node2",
            "SSH_KEY",
            NODE2_ADDR,
            &format!(
                "      join: [\"{NODE1_ADDR}:2377\"]\n      token: {token}\n      advertise_addr: {NODE2_ADDR}\n      labels: {{zone: b}}\n"
            ),
        ),
    );
    // At first no manager answers: node1 drops what it would send node2
    // (a blackhole route), so node2's join times out and is retried.
    ok(
        &vm1,
        &ssh1,
        &format!("sudo ip route add blackhole {NODE2_ADDR}/32"),
    );
    let vm2 = boot_ready(&config2, &ssh2);
    eventually(
        &vm2,
        &ssh2,
        &format!(
            "sudo berth logs docker | grep -q 'berth swarm: docker swarm join {NODE1_ADDR}:2377: .*trying again in'"
        ),
        CONVERGE,
    );
    ok(
        &vm1,
        &ssh1,
        &format!("sudo ip route del blackhole {NODE2_ADDR}/32"),
    );
    eventually(
        &vm1,
        &ssh1,
        "docker node ls --format '{{.Hostname}} {{.Status}}' | sort | tr '\\n' ' ' | grep -qx 'node1 Ready node2 Ready '",
        CONVERGE,
    );
    // Joined by a later attempt of berthd's, or by dockerd finishing the
    // timed-out one in the background (then berthd finds it a member).
    let done2 = next_swarm_outcome(&vm2, &ssh2, 0);
    assert!(
        done2.contains(&format!(
            "berth swarm: joined the swarm through {NODE1_ADDR}:2377: This node joined a swarm as a worker."
        )) || done2.contains("is a worker of a swarm already"),
        "{done2}"
    );
    let log2 = ok(&vm2, &ssh2, "sudo berth logs docker");
    assert!(!log2.contains(&token), "the token is in the log:\n{log2}");
    // A worker's labels are engine labels (daemon.json), seen by the manager.
    assert_eq!(
        ok(
            &vm1,
            &ssh1,
            "docker node inspect node2 --format '{{.Status.Addr}} {{index .Description.Engine.Labels \"zone\"}}'"
        )
        .trim(),
        format!("{NODE2_ADDR} b")
    );

    // The engine warns about nothing (a Debian 12 host with docker.io on its
    // 6.1 kernel and cgroup v2 shows no WARNING lines either).
    for (vm, ssh) in [(&vm1, &ssh1), (&vm2, &ssh2)] {
        let warnings = docker_info_warnings(vm, ssh);
        assert!(warnings.is_empty(), "{}: {warnings:#?}", vm.name());
    }

    // A two-replica HTTP service on an overlay network, published through
    // the routing mesh; at most one task per node, so a node that comes back
    // gets its task back.
    docker_load(&vm1, &ssh1, &archive);
    docker_load(&vm2, &ssh2, &archive);
    ok(
        &vm1,
        &ssh1,
        "docker network create -d overlay --attachable appnet >/dev/null",
    );
    ok(
        &vm1,
        &ssh1,
        "docker service create --detach --quiet --name web --network appnet --replicas 2 \
         --replicas-max-per-node 1 --publish 8080:80 busybox:latest \
         sh -c 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www'",
    );
    one_task_per_node(&vm1, &ssh1, "web", &["node1", "node2"]);
    // The task containers' hostnames are their short IDs: what they serve.
    let task_on = |vm: &Vm, ssh: &Ssh| {
        eventually(
            vm,
            ssh,
            "docker ps --filter label=com.docker.swarm.service.name=web --format '{{.ID}}' | grep .",
            CONVERGE,
        )
        .trim()
        .to_string()
    };
    let task1 = task_on(&vm1, &ssh1);
    let task2 = task_on(&vm2, &ssh2);

    // A container on node1 reaches node2's task by the service's name (its
    // virtual IP balances between the two tasks) and through `tasks.web`.
    // (No `wget -T`: busybox 1.35's static wget crashes with it.)
    let seen = ok(
        &vm1,
        &ssh1,
        "docker run --rm --network appnet busybox:latest sh -c \
         'for i in 1 2 3 4 5 6 7 8; do timeout 20 wget -qO- http://web/; done; \
          for ip in $(nslookup tasks.web | sed -n \"s/^Address: //p\" | grep -v :53); do \
            timeout 20 wget -qO- http://$ip/; done'",
    );
    assert!(
        seen.contains(&task1) && seen.contains(&task2),
        "node1's task {task1} and node2's {task2} both answer by name:\n{seen}"
    );

    // The routing mesh: port 8080 answers on both nodes' private addresses
    // (from node1's console) and on both nodes' other network (from the host).
    for addr in [NODE1_ADDR, NODE2_ADDR] {
        let body = ok(
            &vm1,
            &ssh1,
            &format!("curl -sS --max-time 20 http://{addr}:8080/"),
        );
        assert!(
            [&task1, &task2].iter().any(|t| body.trim() == t.as_str()),
            "{addr}:8080 answered {body:?}"
        );
    }
    for (name, port) in [("node1", mesh1), ("node2", mesh2)] {
        let deadline = Instant::now() + Duration::from_secs(60);
        let body = loop {
            match http_get(port) {
                Some(body) => break body,
                None if Instant::now() < deadline => std::thread::sleep(Duration::from_secs(2)),
                None => panic!("the routing mesh on {name} (host port {port}) does not answer"),
            }
        };
        assert!(
            body == task1 || body == task2,
            "{name}'s mesh answered {body:?}"
        );
    }

    // An encrypted overlay: a container on node2 serves SECRET, one on node1
    // fetches it. On the wire there is ESP and never SECRET — while the plain
    // overlay's HTTP bodies (node2's task ID) were readable there.
    ok(
        &vm1,
        &ssh1,
        "docker network create -d overlay --opt encrypted --attachable secnet >/dev/null",
    );
    ok(
        &vm2,
        &ssh2,
        &format!(
            "docker run -d --name peer --network secnet busybox:latest sh -c \
             'mkdir -p /www && echo {SECRET} > /www/index.html && exec httpd -f -p 80 -h /www'"
        ),
    );
    let fetched = eventually(
        &vm1,
        &ssh1,
        "docker run --rm --network secnet busybox:latest timeout 20 wget -qO- http://peer/",
        CONVERGE,
    );
    assert_eq!(fetched.trim(), SECRET);
    let states = ok(&vm1, &ssh1, "sudo ip xfrm state");
    assert!(
        states.contains("proto esp")
            && states.contains(&format!("src {NODE1_ADDR} dst {NODE2_ADDR}")),
        "IPsec SAs between the nodes:\n{states}"
    );
    let frames = pcap_frames(link1.dump.as_ref().expect("dumped"));
    let esp = count_ip_proto(&frames, 50);
    eprintln!("link: {} frames, {esp} ESP", frames.len());
    assert!(esp > 0, "no ESP frames on the link");
    assert!(
        !contains(&frames, SECRET.as_bytes()),
        "the encrypted overlay's payload is readable on the link"
    );
    assert!(
        contains(&frames, task2.as_bytes()),
        "the plain overlay's payload (node2's task ID) should be readable on the link"
    );

    // The worker reboots, and rejoins by itself: its engine's swarm state is
    // on the state partition, and berthd leaves a member alone.
    let outcomes_before_reboot = swarm_outcomes(&vm2, &ssh2).len();
    // The session may end before ssh hears the command's status.
    let _ = ssh2.run("sudo berth reboot");
    let mut vm2 = vm2;
    vm2.wait_exit(Duration::from_secs(180))
        .unwrap_or_else(|e| panic!("{e}"));
    drop(vm2);
    eventually(
        &vm1,
        &ssh1,
        "docker node ls --format '{{.Hostname}} {{.Status}}' | grep -qx 'node2 Down'",
        CONVERGE,
    );
    let vm2 = boot_ready(&config2, &ssh2);
    eventually(
        &vm1,
        &ssh1,
        "docker node ls --format '{{.Hostname}} {{.Status}}' | sort | tr '\\n' ' ' | grep -qx 'node1 Ready node2 Ready '",
        CONVERGE,
    );
    let done2 = next_swarm_outcome(&vm2, &ssh2, outcomes_before_reboot);
    assert!(
        done2.contains("berth swarm: this node (") && done2.contains("swarm already"),
        "after the reboot: {done2}"
    );
    one_task_per_node(&vm1, &ssh1, "web", &["node1", "node2"]);
    let task2_again = task_on(&vm2, &ssh2);
    assert_ne!(task2_again, task2, "a new task on node2");
    assert_eq!(
        ok(
            &vm1,
            &ssh1,
            &format!("curl -sS --max-time 20 http://{NODE2_ADDR}:8080/ >/dev/null && echo up")
        )
        .trim(),
        "up"
    );
    eprintln!("cluster test: {:.1}s", started.elapsed().as_secs_f64());
    drop(vm1);
}
