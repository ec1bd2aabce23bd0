use super::*;
use berth_network::dhcp::{Client, ClientConfig, Event};
use berth_network::netlink::{Netlink, NetlinkError};

/// Why the probe has no network of its own.
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    #[error("no Ethernet interface")]
    NoEthernet,
    #[error("{link}: cannot bring it up: {source}")]
    LinkUp {
        link: String,
        #[source]
        source: NetlinkError,
    },
    #[error("{link}: cannot start DHCP: {source}")]
    Dhcp {
        link: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{link}: no DHCP lease within {wait:?}")]
    NoLease { link: String, wait: Duration },
}

/// A lease held for the probe; released when dropped.
#[derive(Debug)]
pub struct Temporary {
    client: Option<Client>,
    link: String,
    already: bool,
}

impl Temporary {
    pub fn note(&self) -> Option<String> {
        if self.already {
            None
        } else {
            Some(format!(
                "a temporary DHCP lease on {} carried the probe",
                self.link
            ))
        }
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            client.stop();
        }
    }
}

/// Uses the network as it is when an interface has an IPv4 address;
/// otherwise brings up the first Ethernet interface and takes a lease on it.
pub fn temporary_lease(wait: &Duration) -> Result<Temporary, LeaseError> {
    let mut nl = Netlink::new()?;
    let links = nl.links()?;
    let addresses = nl.addresses()?;
    let has_v4 = |index: u32| {
        addresses
            .iter()
            .any(|a| a.index == index && matches!(a.net, ipnet::IpNet::V4(_)))
    };
    if let Some(l) = links
        .iter()
        .find(|l| !l.loopback && l.up && has_v4(l.index))
    {
        return Ok(Temporary {
            client: None,
            link: l.name.clone(),
            already: true,
        });
    }
    let link = links
        .iter()
        .find(|l| !l.loopback && l.mac.is_some() && l.kind.is_none())
        .ok_or(LeaseError::NoEthernet)?;
    nl.set_link(link.index, Some(true), None, None)
        .map_err(|source| LeaseError::LinkUp {
            link: link.name.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel();
    let client = Client::spawn(
        ClientConfig {
            link: link.name.clone(),
            index: link.index,
            mac: link.mac.unwrap_or_default(),
            hostname: None,
            apply_mtu: false,
            route_metric: 1024,
        },
        tx,
    )
    .map_err(|source| LeaseError::Dhcp {
        link: link.name.clone(),
        source,
    })?;
    let deadline = Instant::now() + *wait;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(Event::Lease { lease: Some(l), .. }) => {
                log::info!(
                    "datasource probe: temporary lease {} on {}",
                    l.address,
                    link.name
                );
                return Ok(Temporary {
                    client: Some(client),
                    link: link.name.clone(),
                    already: false,
                });
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    client.stop();
    Err(LeaseError::NoLease {
        link: link.name.clone(),
        wait: *wait,
    })
}
