//! One pass of the loop: links made, addresses, routes and DHCP clients
//! changed as a difference from what netconf applied before; resolv.conf,
//! the hostname, readiness and the status file written.

use super::*;

impl Netconf<'_> {
    /// Logs a failure unless it is the same as the last one for `link`.
    pub(super) fn warn_once(&mut self, link: &str, message: String) {
        if self.failures.get(link) != Some(&message) {
            log::warn!("{link}: {message}");
            self.failures.insert(link.to_string(), message);
        }
    }

    /// Waits up to `timeout` for news: a lease, a stop or reload, or, when
    /// `changes_end_wait`, a change around netconf ([`Event::Changed`]).
    /// Changes do not end the wait while netconf is still working towards
    /// its plan: it looks again at its own pace then (every `tick`), and a
    /// change that could answer its own work cannot make it spin.
    pub(super) fn wait_events(
        &mut self,
        rx: &Receiver<Event>,
        timeout: Duration,
        changes_end_wait: bool,
    ) {
        let deadline = std::time::Instant::now() + timeout;
        let mut news = false;
        loop {
            let event = if news {
                match rx.try_recv() {
                    Ok(e) => e,
                    Err(_) => return,
                }
            } else {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                match rx.recv_timeout(left) {
                    Ok(e) => e,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
                }
            };
            match event {
                Event::Lease { link, lease } => {
                    match lease {
                        Some(l) => self.leases.insert(link, l),
                        None => self.leases.remove(&link),
                    };
                    news = true;
                }
                Event::Wake => news = true,
                Event::Changed => news |= changes_end_wait,
            }
        }
    }

    pub(super) fn tick(&mut self) -> Result<(), Error> {
        let links = self.nl.links()?;
        let plan = plan(&self.config.berth.network, &current_links(&links));
        if plan.waiting != self.last_plan.waiting && !plan.waiting.is_empty() {
            log::info!("waiting for {}", plan.waiting.join(", "));
        }
        self.virtuals(&plan, &links);
        let links = self.nl.links()?;
        self.layer2(&plan, &links);
        let links = self.nl.links()?;
        self.layer3(&plan, &links);
        self.forget(&plan, &links);
        self.last_plan = plan;
        self.dns_and_hostname();
        self.readiness()?;
        self.write_state();
        Ok(())
    }

    /// Creates, recreates and deletes bonds, bridges and VLANs.
    pub(super) fn virtuals(&mut self, plan: &Plan, links: &[Link]) {
        // Links netconf made that the config no longer wants, VLANs first (they sit on the others).
        let stale: Vec<(String, VirtualKind)> = self
            .managed
            .iter()
            .filter(|(name, kind)| plan.virtuals.get(*name) != Some(*kind))
            .map(|(n, k)| (n.clone(), k.clone()))
            .collect();
        let mut stale_sorted = stale.clone();
        stale_sorted.sort_by_key(|(_, k)| !matches!(k, VirtualKind::Vlan { .. }));
        for (name, _) in stale_sorted {
            if let Some(link) = links.iter().find(|l| l.name == name) {
                log::info!("{name}: deleting (no longer configured as it was)");
                if let Err(e) = self.nl.del_link(link.index) {
                    log::warn!("{name}: {e}");
                    continue;
                }
            }
            self.managed.remove(&name);
            self.applied.remove(&name);
            self.stop_client(&name);
        }
        let mut links = links.to_vec();
        let mut order: Vec<(&String, &VirtualKind)> = plan.virtuals.iter().collect();
        order.sort_by_key(|(_, k)| matches!(k, VirtualKind::Vlan { .. }));
        for (name, kind) in order {
            if let Some(link) = links.iter().find(|l| &l.name == name) {
                if matches_kind(link, kind, &links) {
                    self.managed
                        .entry(name.clone())
                        .or_insert_with(|| kind.clone());
                    continue;
                }
                log::warn!(
                    "{name}: exists but is not the {kind:?} the config asks for; leaving it alone"
                );
                continue;
            }
            let created = match kind {
                VirtualKind::Bond { opts } => self.nl.add_bond(name, opts).map(|()| {
                    bond_sysfs_opts(name, opts);
                }),
                VirtualKind::Bridge => self.nl.add_bridge(name),
                VirtualKind::Vlan { parent, id } => {
                    let Some(p) = links.iter().find(|l| &l.name == parent) else {
                        // The parent is not there yet (hotplug); try again next tick.
                        continue;
                    };
                    let index = p.index;
                    self.nl.add_vlan(name, index, *id)
                }
            };
            match created {
                Ok(()) => {
                    log::info!("{name}: created");
                    self.managed.insert(name.clone(), kind.clone());
                    if let Ok(Some(l)) = self.nl.link_by_name(name) {
                        links.push(l);
                    }
                }
                Err(e) => self.warn_once(name, e.to_string()),
            }
        }
    }

    /// Enslavement, MTU and up, for links whose plan changed.
    pub(super) fn layer2(&mut self, plan: &Plan, links: &[Link]) {
        for (name, lp) in &plan.links {
            let Some(link) = links.iter().find(|l| &l.name == name) else {
                continue;
            };
            if self.unchanged(name, link.index, lp) {
                continue;
            }
            let want_master = match &lp.master {
                Some(m) => match links.iter().find(|l| &l.name == m) {
                    Some(ml) => Some(ml.index),
                    // The master is not there yet; enslave next tick.
                    None => continue,
                },
                None => None,
            };
            let result = (|| {
                if link.master != want_master
                    && (want_master.is_some()
                        || self
                            .applied
                            .get(name)
                            .is_some_and(|a| a.plan.master.is_some()))
                {
                    // A bond takes only links that are down.
                    self.nl.set_link(link.index, Some(false), None, None)?;
                    self.nl
                        .set_link(link.index, None, None, Some(want_master))?;
                }
                if let Some(mtu) = lp.mtu {
                    if mtu != link.mtu {
                        self.nl.set_link(link.index, None, Some(mtu), None)?;
                    }
                }
                self.nl.set_link(link.index, Some(true), None, None)
            })();
            if let Err(e) = result {
                log::warn!("{name}: {e}");
            }
            if !link.loopback && !lp.key.is_empty() {
                let path = format!("/proc/sys/net/ipv6/conf/{name}/accept_ra");
                // Best effort: IPv6 may be disabled.
                let _ = std::fs::write(path, if lp.accept_ra { "1" } else { "0" });
            }
        }
    }

    pub(super) fn unchanged(&self, name: &str, index: u32, lp: &LinkPlan) -> bool {
        self.applied
            .get(name)
            .is_some_and(|a| a.index == index && &a.plan == lp)
    }

    /// Addresses, routes and DHCP, for links whose plan changed.
    pub(super) fn layer3(&mut self, plan: &Plan, links: &[Link]) {
        for (name, lp) in &plan.links {
            let Some(link) = links.iter().find(|l| &l.name == name) else {
                continue;
            };
            if self.unchanged(name, link.index, lp) {
                continue;
            }
            if lp.master.is_some() && link.master.is_none() {
                // Not enslaved yet: leave it for the next tick.
                continue;
            }
            let previous = self
                .applied
                .get(name)
                .filter(|a| a.index == link.index)
                .cloned();
            // A link that no longer uses DHCP gives its lease back first:
            // removing the leased (primary) address takes the kernel's
            // secondary addresses of the same subnet with it, so a static
            // address added before would vanish.
            let running = self.clients.get(name).map(|(i, _)| *i);
            if !lp.dhcp && running.is_some() {
                self.stop_client(name);
            }
            let old_addrs = previous
                .as_ref()
                .map(|a| a.plan.addresses.clone())
                .unwrap_or_default();
            for gone in old_addrs.iter().filter(|a| !lp.addresses.contains(a)) {
                if let Err(e) = self.nl.del_address(link.index, *gone) {
                    log::warn!("{name}: {e}");
                }
            }
            let mut ok = true;
            for addr in &lp.addresses {
                if let Err(e) = self.nl.replace_address(link.index, *addr, None) {
                    log::warn!("{name}: {e}");
                    ok = false;
                }
            }
            let routes = static_routes(lp, link.index);
            let old_routes = previous
                .as_ref()
                .map(|a| a.routes.clone())
                .unwrap_or_default();
            for gone in old_routes.iter().filter(|r| !routes.contains(r)) {
                if let Err(e) = self.nl.del_route(gone) {
                    log::warn!("{name}: {e}");
                }
            }
            for route in &routes {
                if let Err(e) = self.nl.replace_route(route) {
                    log::warn!("{name}: {e}");
                    ok = false;
                }
            }
            // DHCP: (re)start when wanted and not running on this link (stopped
            // above when not wanted).
            let dhcp_changed = previous.as_ref().is_some_and(|a| a.plan.mtu != lp.mtu);
            if lp.dhcp && (running != Some(link.index) || dhcp_changed) {
                self.stop_client(name);
                match link.mac {
                    Some(mac) => {
                        let client = ClientConfig {
                            link: name.clone(),
                            index: link.index,
                            mac,
                            hostname: self.config.hostname.clone().or_else(dns::kernel_hostname),
                            apply_mtu: lp.mtu.is_none(),
                            // One default route per interface: distinct metrics
                            // keep two DHCP interfaces from replacing each other's.
                            route_metric: 1024 + link.index,
                        };
                        match Client::spawn(client, self.events.clone()) {
                            Ok(c) => {
                                log::info!("{name}: DHCP started");
                                self.clients.insert(name.clone(), (link.index, c));
                            }
                            Err(e) => {
                                log::warn!("{name}: cannot start DHCP: {e}");
                                ok = false;
                            }
                        }
                    }
                    None => {
                        log::warn!("{name}: no MAC address; DHCP needs one");
                    }
                }
            }
            if ok {
                self.applied.insert(
                    name.clone(),
                    Applied {
                        index: link.index,
                        plan: lp.clone(),
                        routes,
                    },
                );
            }
        }
    }

    /// Undoes what netconf did to links the config no longer covers, and
    /// forgets links that went away.
    pub(super) fn forget(&mut self, plan: &Plan, links: &[Link]) {
        let names: Vec<String> = self.applied.keys().cloned().collect();
        for name in names {
            let link = links.iter().find(|l| l.name == name);
            let Some(a) = self.applied.get(&name).cloned() else {
                continue;
            };
            match link {
                Some(link) if link.index == a.index => {
                    if plan.links.contains_key(&name) {
                        continue;
                    }
                    log::info!("{name}: no longer configured; removing what netconf set");
                    for r in &a.routes {
                        let _ = self.nl.del_route(r);
                    }
                    for addr in &a.plan.addresses {
                        let _ = self.nl.del_address(link.index, *addr);
                    }
                    if a.plan.master.is_some() {
                        let _ = self.nl.set_link(link.index, None, None, Some(None));
                    }
                    self.stop_client(&name);
                    self.applied.remove(&name);
                }
                _ => {
                    // Gone or replaced (hotplug): its client and state go with it.
                    self.stop_client(&name);
                    self.leases.remove(&name);
                    self.applied.remove(&name);
                }
            }
        }
        let stale: Vec<String> = self
            .clients
            .keys()
            .filter(|n| !plan.links.get(*n).is_some_and(|p| p.dhcp))
            .cloned()
            .collect();
        for name in stale {
            self.stop_client(&name);
        }
    }

    pub(super) fn stop_client(&mut self, name: &str) {
        if let Some((_, client)) = self.clients.remove(name) {
            log::info!("{name}: stopping DHCP");
            client.stop();
            self.leases.remove(name);
        }
    }

    pub(super) fn dns_and_hostname(&mut self) {
        let net = &self.config.berth.network;
        let (servers, search) = dns::resolvers(&net.dns, &self.leases);
        let text = dns::render_resolv_conf(&servers, &search);
        match dns::write_if_changed(&self.options.resolv_conf, &text) {
            Ok(true) => log::info!("{}: updated", self.options.resolv_conf.display()),
            Ok(false) => {}
            Err(e) => log::warn!("{e}"),
        }
        let hostname = self
            .config
            .hostname
            .clone()
            .or_else(|| self.leases.values().find_map(|l| l.hostname.clone()));
        if let Some(name) = hostname {
            if self.options.set_kernel_hostname && dns::kernel_hostname().as_deref() != Some(&name)
            {
                match dns::set_kernel_hostname(&name) {
                    Ok(()) => log::info!("hostname set to {name}"),
                    Err(e) => log::warn!("cannot set the hostname to {name}: {e}"),
                }
            }
            if let Err(e) = dns::write_if_changed(&self.options.hostname_file, &format!("{name}\n"))
            {
                log::warn!("{e}");
            }
            let existing = std::fs::read_to_string(&self.options.hosts_file).unwrap_or_default();
            if let Err(e) = dns::write_if_changed(
                &self.options.hosts_file,
                &dns::render_hosts(&existing, &name),
            ) {
                log::warn!("{e}");
            }
        }
    }

    pub(super) fn readiness(&mut self) -> Result<(), Error> {
        let plan = &self.last_plan;
        let mut gaps: Vec<String> = plan
            .required_unmatched
            .iter()
            .map(|key| format!("{key}: no interface matches it yet"))
            .collect();
        if !plan.required.is_empty() {
            let links = self.nl.links()?;
            let addrs = self.nl.addresses()?;
            let routes = self.nl.routes()?;
            for name in &plan.required {
                let Some(lp) = plan.links.get(name) else {
                    continue;
                };
                let link = links.iter().find(|l| &l.name == name);
                gaps.extend(readiness_gaps(
                    name,
                    lp,
                    link,
                    self.leases.get(name),
                    &addrs,
                    &routes,
                ));
            }
        }
        let ready = gaps.is_empty();
        let file = self.options.ready_file();
        // Why it is not ready, for the healthcheck's message (`berth ps`);
        // never there together with `ready`: removed before `ready` is
        // written, written after `ready` is removed.
        let why = self.options.waiting_file();
        if ready {
            let _ = std::fs::remove_file(&why);
        }
        if ready && !self.ready {
            log::info!("network ready");
            berth_sys::alloc::trim();
            dns::write_if_changed(&file, "ready\n")?;
        } else if !ready && self.ready {
            log::warn!("network no longer ready");
            let _ = std::fs::remove_file(&file);
        }
        if !ready {
            if gaps != self.gaps {
                log::info!("not ready: waiting for {}", gaps.join("; "));
            }
            if let Err(e) = dns::write_if_changed(&why, &format!("{}\n", gaps.join("; "))) {
                log::warn!("{e}");
            }
        }
        self.gaps = gaps;
        self.ready = ready;
        Ok(())
    }

    pub(super) fn write_state(&mut self) {
        let state = State {
            pid: std::process::id(),
            ready: self.ready,
            leases: self.leases.clone(),
            nameservers: dns::resolvers(&self.config.berth.network.dns, &self.leases).0,
            search: dns::resolvers(&self.config.berth.network.dns, &self.leases).1,
            managed: self.managed.clone(),
            configured: self
                .last_plan
                .links
                .iter()
                .map(|(n, p)| (n.clone(), p.key.clone()))
                .collect(),
            waiting: self.last_plan.waiting.clone(),
            required: self
                .last_plan
                .required
                .iter()
                .cloned()
                .collect::<BTreeSet<_>>(),
            not_ready: self.gaps.clone(),
        };
        let path = self.options.run_dir.join(STATE_FILE);
        match serde_json::to_string_pretty(&state) {
            Ok(text) => {
                if let Err(e) = dns::write_if_changed(&path, &text) {
                    log::warn!("{e}");
                }
            }
            Err(e) => log::warn!("cannot render the state: {e}"),
        }
    }

    pub(super) fn shutdown(&mut self) {
        let _ = std::fs::remove_file(self.options.ready_file());
        let _ = std::fs::remove_file(self.options.waiting_file());
        let names: Vec<String> = self.clients.keys().cloned().collect();
        for name in names {
            self.stop_client(&name);
        }
        self.ready = false;
        self.write_state();
    }
}
