//! The sockets: UDP bound to the link once it has an address, and a raw
//! packet socket (with its BPF filter) before it has one.

use super::*;

pub(super) fn udp_socket(link: &str, src: Ipv4Addr) -> io::Result<UdpSocket> {
    // SAFETY: plain socket(2); the result is checked before use.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value points at a live c_int of the given size.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // Bound to the device, so the unicast leaves through the leased interface
    // even when another one has a route to the server.
    // SAFETY: the option value points at the name's bytes, of the given length.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            link.as_ptr().cast(),
            link.len() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: sockaddr_in is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    addr.sin_family = libc::AF_INET as libc::sa_family_t;
    addr.sin_port = CLIENT_PORT.to_be();
    addr.sin_addr = libc::in_addr {
        s_addr: u32::from(src).to_be(),
    };
    // SAFETY: `addr` is a valid sockaddr_in of the size passed.
    let rc = unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(UdpSocket::from(owned))
}

/// An `AF_PACKET`/`SOCK_DGRAM` socket bound to one interface: IPv4 packets in
/// and out, link-layer headers done by the kernel.
pub(super) struct PacketSocket {
    pub(super) fd: OwnedFd,
    index: u32,
}

pub(super) const ETH_P_IP: u16 = 0x0800;

impl PacketSocket {
    pub(super) fn open(index: u32) -> io::Result<PacketSocket> {
        // Protocol 0: the socket receives nothing until it is bound, so no
        // packet reaches it before the filter is attached.
        // SAFETY: plain socket(2); the result is checked before use.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // Only `cargo xtask bench network` turns the filter off, to measure
        // what it saves.
        if std::env::var_os(NO_FILTER_ENV).is_none() {
            attach_client_filter(&fd)?;
        }
        let addr = Self::address(index, [0; 8]);
        // SAFETY: `addr` is a valid sockaddr_ll of the size passed.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket { fd, index })
    }

    pub(super) fn address(index: u32, hw: [u8; 8]) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_IP.to_be();
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr = hw;
        addr
    }

    pub(super) fn send_broadcast(&self, src: Ipv4Addr, payload: &[u8]) -> io::Result<()> {
        let packet = ip_udp_packet(src, Ipv4Addr::BROADCAST, payload);
        let addr = Self::address(self.index, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0]);
        // SAFETY: the buffer and address are live for the call and their sizes are passed.
        let rc = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                packet.as_ptr().cast(),
                packet.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// One DHCP payload addressed to the client port, or `None` after `wait`.
    pub(super) fn recv(&self, wait: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = wait.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
        if rc <= 0 {
            return None;
        }
        let mut buf = vec![0u8; 4096];
        // SAFETY: the buffer is live and its length passed.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n <= 0 {
            return None;
        }
        buf.truncate(n as usize);
        udp_payload(&buf, CLIENT_PORT).map(<[u8]>::to_vec)
    }
}

/// Set (to anything), the DHCP client's packet socket gets no filter: for the
/// network benchmark's comparison only.
pub const NO_FILTER_ENV: &str = "BERTH_NETCONF_BENCH_NO_DHCP_FILTER";

/// The classic BPF program the kernel runs on every IPv4 packet of the
/// interface before it is queued on the DHCP client's packet socket: only
/// unfragmented UDP to [`CLIENT_PORT`] passes. Without it every packet the
/// NIC carries (container traffic included) would be copied into netconf for
/// the life of the lease. The socket is `SOCK_DGRAM`, so offset 0 is the IP
/// header. [`udp_payload`] still checks what passes.
pub(super) fn client_filter() -> [libc::sock_filter; 9] {
    const fn op(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    const IPPROTO_UDP: u32 = 17;
    [
        // A = the IP protocol; not UDP: drop.
        op(libc::BPF_LD | libc::BPF_B | libc::BPF_ABS, 0, 0, 9),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            6,
            IPPROTO_UDP,
        ),
        // A = flags and fragment offset; a fragment after the first: drop.
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_ABS, 0, 0, 6),
        op(libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K, 4, 0, 0x1fff),
        // X = the IP header's length; A = the UDP destination port.
        op(libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH, 0, 0, 0),
        op(libc::BPF_LD | libc::BPF_H | libc::BPF_IND, 0, 0, 2),
        op(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            0,
            1,
            CLIENT_PORT as u32,
        ),
        // Accept the whole packet.
        op(libc::BPF_RET | libc::BPF_K, 0, 0, u32::MAX),
        // Drop: every jump above that fails lands here.
        op(libc::BPF_RET | libc::BPF_K, 0, 0, 0),
    ]
}

pub(super) fn attach_client_filter(fd: &OwnedFd) -> io::Result<()> {
    let mut program = client_filter();
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_mut_ptr(),
    };
    // SAFETY: `fprog` points into `program`, which outlives the call; the
    // kernel copies the program.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const libc::sock_fprog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
