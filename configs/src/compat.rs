//! Keys other systems define that Berth accepts without acting on them.
//!
//! A cloud-config written for Ubuntu's cloud-init or for RancherOS should still
//! boot Berth: keys we know but do not implement are warnings (so the user learns
//! they had no effect), never errors. Keys nobody defines stay errors — they are
//! typos. The same table feeds the JSON schema, so editors accept these keys too.

/// cloud-init modules Berth does not implement (top-level keys).
pub const CLOUD_INIT_UNSUPPORTED: &[&str] = &[
    "ansible",
    "apk_repos",
    "apt",
    "apt_pipelining",
    "autoinstall",
    "byobu_by_default",
    "ca-certs",
    "ca_certs",
    "chef",
    "chpasswd",
    "cloud_config_modules",
    "cloud_final_modules",
    "cloud_init_modules",
    "datasource",
    "datasource_list",
    "device_aliases",
    "disable_ec2_metadata",
    "disable_root",
    "disable_root_opts",
    "disk_setup",
    "drivers",
    "fan",
    "final_message",
    "fqdn",
    "fs_setup",
    "groups",
    "growpart",
    "keyboard",
    "landscape",
    "locale",
    "locale_configfile",
    "lxd",
    "manage_etc_hosts",
    "manage_resolv_conf",
    "mcollective",
    "merge_how",
    "merge_type",
    "mount_default_fields",
    "ntp",
    "output",
    "package_reboot_if_required",
    "package_update",
    "package_upgrade",
    "packages",
    "password",
    "phone_home",
    "power_state",
    "prefer_fqdn_over_hostname",
    "preserve_hostname",
    "puppet",
    "random_seed",
    "reporting",
    "resize_rootfs",
    "resolv_conf",
    "rh_subscription",
    "rsyslog",
    "salt_minion",
    "seed_random",
    "snap",
    "spacewalk",
    "ssh",
    "ssh_deletekeys",
    "ssh_fp_console_blacklist",
    "ssh_genkeytypes",
    "ssh_import_id",
    "ssh_key_console_blacklist",
    "ssh_keys",
    "ssh_publish_hostkeys",
    "ssh_pwauth",
    "ssh_quiet_keygen",
    "swap",
    "system_info",
    "timezone",
    "ubuntu_advantage",
    "ubuntu_pro",
    "updates",
    "user",
    "vendor_data",
    "wireguard",
    "write_metadata",
    "yum_repos",
    "zypper",
];

/// Per-user cloud-init keys Berth does not implement.
pub const USER_UNSUPPORTED: &[&str] = &[
    "create_groups",
    "doas",
    "expiredate",
    "inactive",
    "plain_text_passwd",
    "selinux_user",
    "snapuser",
    "ssh_import_id",
    "ssh_redirect_user",
];

/// Compose service keys that make no sense for (or are not yet done by) system services.
pub const SERVICE_UNSUPPORTED: &[&str] = &[
    "build",
    "cgroup_parent",
    "container_name",
    "dns",
    "dns_search",
    "domainname",
    "env_file",
    "expose",
    "external_links",
    "extra_hosts",
    "hostname",
    "links",
    "log_driver",
    "log_opt",
    "logging",
    "mac_address",
    "net",
    "ports",
    "security_opt",
    "shm_size",
    "stdin_open",
    "tty",
    "ulimits",
    "volumes_from",
];

/// RancherOS interface keys Berth's netconf does not implement.
pub const INTERFACE_UNSUPPORTED: &[&str] = &[
    "dhcp_args",
    "ipv4ll",
    "match",
    "post_up",
    "pre_up",
    "wifi_network",
];

/// The message for `key` in a struct serde calls `struct_name`, when it is a key
/// we know but do not implement.
pub fn unsupported(struct_name: &str, key: &str) -> Option<String> {
    let (table, what) = match struct_name {
        "CloudConfig" => (CLOUD_INIT_UNSUPPORTED, "cloud-init key"),
        "User" => (USER_UNSUPPORTED, "cloud-init user key"),
        "Service" => (SERVICE_UNSUPPORTED, "compose key"),
        "Interface" => (INTERFACE_UNSUPPORTED, "RancherOS network key"),
        _ => return None,
    };
    table
        .contains(&key)
        .then(|| format!("`{key}` is a {what} Berth does not support; it is ignored"))
}

/// Every (schema definition, keys) pair, for the JSON schema.
pub fn tables() -> [(&'static str, &'static [&'static str]); 4] {
    [
        ("CloudConfig", CLOUD_INIT_UNSUPPORTED),
        ("User", USER_UNSUPPORTED),
        ("Service", SERVICE_UNSUPPORTED),
        ("Interface", INTERFACE_UNSUPPORTED),
    ]
}
