//! Packets: what the client decodes from the wire (only the options it
//! reads), and the IPv4/UDP framing of the raw socket.

use super::*;

/// The DHCP message in a UDP payload, or `None` when it is not one.
pub(super) fn decode(payload: &[u8]) -> Option<Message> {
    let kept = options_the_client_reads(payload)?;
    Message::decode(&mut Decoder::new(&kept)).ok()
}

/// The payload with only the options the client reads, each of a length its
/// definition allows; `None` when one of those has an impossible length or
/// the options are cut short. dhcproto 0.14 reads many options by their type
/// rather than their length byte: an option of the wrong length makes it
/// misread everything after it, and for some (rapid commit, client FQDN,
/// bulk leasequery) it asserts, a panic where debug assertions are on
/// (found by `cargo xtask fuzz` dhcp_packet). So it only ever sees options
/// already checked here.
pub(super) fn options_the_client_reads(payload: &[u8]) -> Option<Vec<u8>> {
    // The fixed BOOTP fields (236 bytes) and the magic cookie.
    let mut kept = payload.get(..240)?.to_vec();
    let mut i = 240;
    loop {
        let code = *payload.get(i)?;
        match code {
            0 => i += 1,
            255 => break,
            _ => {
                let len = usize::from(*payload.get(i + 1)?);
                let data = payload.get(i + 2..i + 2 + len)?;
                let allowed = match code {
                    // Subnet mask, server identifier, lease time, T1, T2.
                    1 | 54 | 51 | 58 | 59 => Some(len == 4),
                    // Router, DNS servers: addresses.
                    3 | 6 => Some(len >= 4 && len % 4 == 0),
                    // Host name, domain name, domain search, classless routes.
                    12 | 15 | 119 | 121 => Some(len >= 1),
                    26 => Some(len == 2),
                    53 => Some(len == 1),
                    _ => None,
                };
                match allowed {
                    Some(true) => {
                        kept.extend_from_slice(&payload[i..i + 2]);
                        kept.extend_from_slice(data);
                    }
                    Some(false) => return None,
                    None => {}
                }
                i += 2 + len;
            }
        }
    }
    kept.push(255);
    Some(kept)
}

/// For `cargo xtask fuzz`: what the client does with a packet off the wire
/// — the UDP payload to port 68, the DHCP message in it, and the lease an
/// ACK would give (its routes and lifetimes). None of it may panic.
#[cfg(fuzzing)]
pub fn fuzz_packet(packet: &[u8]) {
    let Some(payload) = udp_payload(packet, CLIENT_PORT) else {
        return;
    };
    let Some(msg) = decode(payload) else {
        return;
    };
    let _ = msg.opts().msg_type();
    if let Some(lease) = Lease::from_ack(&msg, Some(Ipv4Addr::new(10, 0, 0, 1))) {
        let _ = lease.routes();
    }
}

/// The UDP payload of an IPv4 packet if it is UDP to `port`.
pub(super) fn udp_payload(packet: &[u8], port: u16) -> Option<&[u8]> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < 20 || *packet.get(9)? != 17 {
        return None;
    }
    // Fragments are not reassembled; DHCP answers fit in one packet.
    let frag = u16::from_be_bytes([*packet.get(6)?, *packet.get(7)?]);
    if frag & 0x3fff != 0 {
        return None;
    }
    let total = usize::from(u16::from_be_bytes([packet[2], packet[3]])).min(packet.len());
    let udp = packet.get(ihl..total)?;
    let dport = u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]);
    if dport != port {
        return None;
    }
    let ulen = usize::from(u16::from_be_bytes([*udp.get(4)?, *udp.get(5)?]));
    udp.get(8..ulen.min(udp.len()))
}

pub(super) fn checksum(chunks: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for chunk in chunks {
        let mut it = chunk.chunks(2);
        for pair in &mut it {
            let word = if pair.len() == 2 {
                u16::from_be_bytes([pair[0], pair[1]])
            } else {
                u16::from_be_bytes([pair[0], 0])
            };
            sum += u32::from(word);
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub(super) fn ip_udp_packet(src: Ipv4Addr, dst: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
    let udp_len = 8 + payload.len();
    let total = 20 + udp_len;
    let mut p = Vec::with_capacity(total);
    p.extend_from_slice(&[0x45, 0x10]); // IPv4, 20-byte header; TOS low delay like other clients
    p.extend_from_slice(&(total as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, 0]); // id, flags, fragment offset
    p.extend_from_slice(&[64, 17, 0, 0]); // TTL, UDP, checksum (below)
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    let ip_sum = checksum(&[&p[..20]]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
    let mut udp = Vec::with_capacity(udp_len);
    udp.extend_from_slice(&CLIENT_PORT.to_be_bytes());
    udp.extend_from_slice(&SERVER_PORT.to_be_bytes());
    udp.extend_from_slice(&(udp_len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, 17]);
    pseudo.extend_from_slice(&(udp_len as u16).to_be_bytes());
    let mut udp_sum = checksum(&[&pseudo, &udp]);
    if udp_sum == 0 {
        udp_sum = 0xffff;
    }
    udp[6..8].copy_from_slice(&udp_sum.to_be_bytes());
    p.extend_from_slice(&udp);
    p
}
