//! Fuzzes what netconf's DHCP client does with a packet off the wire: the
//! IPv4/UDP framing, the DHCP message and the lease an ACK gives.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    berth_network::dhcp::fuzz_packet(data);
});
