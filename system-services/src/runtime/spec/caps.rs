//! The capability set, by Docker's rules.

use std::collections::HashSet;
use std::str::FromStr;

use berth_configs::compose::CapName;
use berth_configs::model::Service;
use oci_spec::runtime::{Capabilities, Capability};

use super::{SpecError, ALL_CAPABILITIES, DEFAULT_CAPABILITIES};

fn parse_capability(service_name: &str, name: CapName) -> Result<Option<Capability>, SpecError> {
    match name {
        CapName::All => Ok(None),
        CapName::One(bare) => {
            Capability::from_str(bare)
                .map(Some)
                .map_err(|_| SpecError::Capability {
                    service: service_name.into(),
                    name: bare.into(),
                })
        }
    }
}

fn is_all(names: &[CapName]) -> bool {
    names.contains(&CapName::All)
}

/// The capability set, by Docker's rules: `privileged` or `cap_add: [ALL]` starts
/// from every capability, `cap_drop: [ALL]` from none, anything else from
/// [`DEFAULT_CAPABILITIES`]; then `cap_add` is added and `cap_drop` removed
/// (except that what `cap_add` names survives a `cap_drop: [ALL]`).
pub fn capabilities(service_name: &str, service: &Service) -> Result<Capabilities, SpecError> {
    let parse_all = |names: &[&str]| -> Capabilities {
        names
            .iter()
            .filter_map(|n| Capability::from_str(n).ok())
            .collect()
    };
    let all = || -> Capabilities {
        let bounding = bounding_set();
        parse_all(ALL_CAPABILITIES)
            .into_iter()
            .filter(|c| bounding.as_ref().is_none_or(|b| b.contains(c)))
            .collect()
    };
    if service.privileged {
        return Ok(all());
    }
    let mut adds = HashSet::new();
    for n in &service.cap_add {
        adds.extend(parse_capability(service_name, *n)?);
    }
    let mut drops = HashSet::new();
    for n in &service.cap_drop {
        drops.extend(parse_capability(service_name, *n)?);
    }
    let mut caps = if is_all(&service.cap_add) {
        all()
    } else if is_all(&service.cap_drop) {
        HashSet::new()
    } else {
        parse_all(DEFAULT_CAPABILITIES)
    };
    if is_all(&service.cap_drop) && !is_all(&service.cap_add) {
        caps.extend(adds);
        return Ok(caps);
    }
    caps.extend(adds);
    for d in drops {
        caps.remove(&d);
    }
    Ok(caps)
}

/// The capabilities this process may hand on (its bounding set), as Docker
/// limits "all" to: asking the kernel for more than that fails the container's
/// capset(2). `None` when it cannot be read (then nothing is filtered).
pub(super) fn bounding_set() -> Option<Capabilities> {
    let set = caps::read(None, caps::CapSet::Bounding).ok()?;
    Some(
        set.iter()
            .filter_map(|c| {
                let name = c.to_string();
                Capability::from_str(name.trim_start_matches("CAP_")).ok()
            })
            .collect(),
    )
}
