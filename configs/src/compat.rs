//! Keys other systems define that Berth accepts without acting on them.
//!
//! A cloud-config written for Ubuntu's cloud-init or for RancherOS should still
//! boot Berth: keys we know but do not implement are warnings (so the user learns
//! they had no effect), never errors. Keys nobody defines stay errors — they are
//! typos. The same table feeds the JSON schema, so editors accept these keys too.

/// cloud-init modules Berth does not implement (top-level keys).
pub const CLOUD_INIT_UNSUPPORTED: &[&str] = &[
    "allow_public_ssh_keys",
    "ansible",
    "apk_repos",
    "apt",
    "apt_pipelining",
    "apt_reboot_if_required",
    "apt_update",
    "apt_upgrade",
    "authkey_hash",
    "autoinstall",
    "byobu_by_default",
    "chef",
    "chpasswd",
    "cloud_config_modules",
    "cloud_final_modules",
    "cloud_init_modules",
    "create_hostname_file",
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
    "grub-dpkg",
    "grub_dpkg",
    "keyboard",
    "landscape",
    "launch-index",
    "locale",
    "locale_configfile",
    "lxd",
    "manage_etc_hosts",
    "manage_resolv_conf",
    "mcollective",
    "merge_how",
    "merge_type",
    "migrate",
    "mount_default_fields",
    "no_ssh_fingerprints",
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
    "rpi",
    "rsyslog",
    "salt_minion",
    "seed_random",
    "snap",
    "spacewalk",
    "ssh",
    "ssh_deletekeys",
    "ssh_fp_console_blacklist",
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
    "version",
    "wireguard",
    "write_metadata",
    "yum_repo_dir",
    "yum_repos",
    "zypper",
];

/// Per-user cloud-init keys Berth does not implement.
pub const USER_UNSUPPORTED: &[&str] = &[
    "create_groups",
    "doas",
    "expiredate",
    "inactive",
    "no_log_init",
    "no_user_group",
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

/// RancherOS network keys Berth's netconf does not implement.
pub const NETWORK_UNSUPPORTED: &[&str] = &[
    "dhcp_timeout",
    "modem_networks",
    "post_cmds",
    "pre_cmds",
    "wifi_networks",
];

/// cloud-init `write_files` keys Berth does not implement.
pub const WRITE_FILE_UNSUPPORTED: &[&str] = &["source"];

/// The message for `key` in a struct serde calls `struct_name`, when it is a key
/// we know but do not implement.
pub fn unsupported(struct_name: &str, key: &str) -> Option<String> {
    let (table, what) = match struct_name {
        "CloudConfig" => (CLOUD_INIT_UNSUPPORTED, "cloud-init key"),
        "User" => (USER_UNSUPPORTED, "cloud-init user key"),
        "Service" => (SERVICE_UNSUPPORTED, "compose key"),
        "Interface" => (INTERFACE_UNSUPPORTED, "RancherOS network key"),
        "Network" => (NETWORK_UNSUPPORTED, "RancherOS network key"),
        "WriteFile" => (WRITE_FILE_UNSUPPORTED, "cloud-init write_files key"),
        _ => return None,
    };
    table
        .contains(&key)
        .then(|| format!("`{key}` is a {what} Berth does not support; it is ignored"))
}

/// Every (schema definition, keys) pair, for the JSON schema.
pub fn tables() -> [(&'static str, &'static [&'static str]); 6] {
    [
        ("CloudConfig", CLOUD_INIT_UNSUPPORTED),
        ("User", USER_UNSUPPORTED),
        ("Service", SERVICE_UNSUPPORTED),
        ("Interface", INTERFACE_UNSUPPORTED),
        ("Network", NETWORK_UNSUPPORTED),
        ("WriteFile", WRITE_FILE_UNSUPPORTED),
    ]
}
