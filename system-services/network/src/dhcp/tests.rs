#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn packet_round_trip() {
    let p = ip_udp_packet(Ipv4Addr::UNSPECIFIED, Ipv4Addr::BROADCAST, b"hello");
    assert_eq!(checksum(&[&p[..20]]), 0, "IP header checksum verifies");
    // Swap ports so it looks like an answer to the client port.
    let mut answer = p.clone();
    answer[20..22].copy_from_slice(&SERVER_PORT.to_be_bytes());
    answer[22..24].copy_from_slice(&CLIENT_PORT.to_be_bytes());
    assert_eq!(udp_payload(&answer, CLIENT_PORT), Some(&b"hello"[..]));
    assert_eq!(udp_payload(&p, CLIENT_PORT), None);
    assert_eq!(udp_payload(&p[..10], CLIENT_PORT), None);
}

/// Whether anything is queued on the packet socket within `wait`.
fn queued(socket: &PacketSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut pfd = libc::pollfd {
        fd: socket.fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    if unsafe { libc::poll(&mut pfd, 1, wait.as_millis() as i32) } <= 0 {
        return None;
    }
    let mut buf = vec![0u8; 65536];
    // SAFETY: the buffer is live and its length passed.
    let n = unsafe {
        libc::recv(
            socket.fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
        )
    };
    buf.truncate(n.max(0) as usize);
    Some(buf)
}

/// The kernel runs the client's filter: on loopback, a flood of UDP to
/// another port and a TCP stream never reach the packet socket; a UDP
/// datagram to port 68 does.
#[test]
fn the_packet_socket_gets_only_udp_to_the_client_port() {
    // SAFETY: geteuid has no arguments and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        berth_testkit::skip!("packet sockets need CAP_NET_RAW (run as root)");
        return;
    }
    let socket = PacketSocket::open(1).expect("packet socket on lo");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("udp");
    let sink = std::net::UdpSocket::bind("127.0.0.1:0").expect("sink");
    for _ in 0..200 {
        udp.send_to(&[0u8; 1200], sink.local_addr().expect("addr"))
            .expect("send");
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("tcp");
    let mut conn =
        std::net::TcpStream::connect(listener.local_addr().expect("addr")).expect("connect");
    std::io::Write::write_all(&mut conn, &[1u8; 100_000]).expect("tcp write");
    assert_eq!(
        queued(&socket, Duration::from_millis(300)),
        None,
        "the packet socket received traffic not for the DHCP client"
    );
    udp.send_to(b"dhcp-answer", ("127.0.0.1", CLIENT_PORT))
        .expect("send to 68");
    let got = queued(&socket, Duration::from_secs(5)).expect("the datagram to port 68");
    assert_eq!(udp_payload(&got, CLIENT_PORT), Some(&b"dhcp-answer"[..]));
}

/// The inputs `cargo xtask fuzz` found made dhcproto panic (debug
/// builds): a bulk-leasequery option 152 of length 0, an option 27 of
/// length 27 that it reads as one byte and so misreads the rest. Options
/// the client does not read never reach dhcproto; one it reads with an
/// impossible length drops the packet.
#[test]
fn only_checked_options_reach_the_decoder() {
    let mut header = vec![0u8; 236];
    header[0] = 2; // BOOTREPLY
    header.extend_from_slice(&[99, 130, 83, 99]);
    let mut confusing = vec![27u8, 27];
    confusing.extend_from_slice(&[153; 27]);
    for junk in [
        &[152u8, 0][..],
        &[80, 1, 0],
        &[94, 1, 0],
        &[81, 0],
        &confusing,
    ] {
        let payload = [&header[..], junk, &[53, 1, 5, 54, 4, 10, 0, 0, 1, 255]].concat();
        let msg = decode(&payload).unwrap_or_else(|| panic!("{junk:?}"));
        assert_eq!(msg.opts().msg_type(), Some(MessageType::Ack));
    }
    for bad in [
        &[53u8, 2, 5, 5, 255][..],
        &[1, 3, 255, 255, 0, 255],
        &[3, 5, 1, 2, 3, 4, 5, 255],
    ] {
        let payload = [&header[..], bad].concat();
        assert!(decode(&payload).is_none(), "{bad:?}");
    }
    // Cut short.
    assert!(decode(&[&header[..], &[54, 4, 10]].concat()).is_none());
}

fn ack(opts: Vec<DhcpOption>) -> Message {
    let mut m = Message::default();
    m.set_opcode(Opcode::BootReply)
        .set_yiaddr(Ipv4Addr::new(10, 0, 0, 9));
    for o in opts {
        m.opts_mut().insert(o);
    }
    m
}

#[test]
fn lease_from_ack() {
    let m = ack(vec![
        DhcpOption::MessageType(MessageType::Ack),
        DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)),
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
        DhcpOption::AddressLeaseTime(120),
        DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]),
        DhcpOption::DomainNameServer(vec![Ipv4Addr::new(10, 0, 0, 53)]),
        DhcpOption::DomainName("example.test".into()),
        DhcpOption::InterfaceMtu(1400),
        DhcpOption::Hostname("node1".into()),
    ]);
    let lease = Lease::from_ack(&m, None).expect("lease");
    assert_eq!(lease.address, "10.0.0.9/24".parse::<Ipv4Net>().unwrap());
    assert_eq!((lease.renew_secs, lease.rebind_secs), (60, 105));
    assert_eq!(lease.search, vec!["example.test".to_string()]);
    assert_eq!(lease.mtu, Some(1400));
    assert_eq!(lease.hostname.as_deref(), Some("node1"));
    assert_eq!(
        lease.routes(),
        vec![(
            "0.0.0.0/0".parse().unwrap(),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        )]
    );
}

#[test]
fn classless_routes_win_over_router() {
    let m = ack(vec![
        DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 0, 1)),
        DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 0, 1)]),
        DhcpOption::ClasslessStaticRoute(vec![
            (
                "10.99.0.0/16".parse().unwrap(),
                Ipv4Addr::new(10, 0, 0, 254),
            ),
            ("0.0.0.0/0".parse().unwrap(), Ipv4Addr::new(10, 0, 0, 2)),
        ]),
    ]);
    let lease = Lease::from_ack(&m, None).expect("lease");
    assert_eq!(
        lease.routes(),
        vec![
            (
                "10.99.0.0/16".parse().unwrap(),
                Some(Ipv4Addr::new(10, 0, 0, 254))
            ),
            (
                "0.0.0.0/0".parse().unwrap(),
                Some(Ipv4Addr::new(10, 0, 0, 2))
            ),
        ]
    );
    // No server id and no fallback: not a usable ACK.
    let m = ack(vec![DhcpOption::MessageType(MessageType::Ack)]);
    assert!(Lease::from_ack(&m, None).is_none());
}

#[test]
fn a_blank_message_is_dhcprotos_default_with_our_xid() {
    let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
    let mut ours = machine::blank_message(0xdead_beef);
    ours.set_chaddr(&mac);
    let mut theirs = Message::default();
    theirs.set_xid(0xdead_beef).set_chaddr(&mac);
    assert_eq!(ours, theirs);
    let encode = |m: &Message| {
        let mut buf = Vec::new();
        m.encode(&mut Encoder::new(&mut buf)).expect("encode");
        buf
    };
    assert_eq!(encode(&ours), encode(&theirs));
}
