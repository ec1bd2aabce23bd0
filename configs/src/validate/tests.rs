use super::*;

#[test]
fn hostnames() {
    assert!(check_hostname("node-1.example.com").is_ok());
    assert!(check_hostname("-bad").is_err());
    assert!(check_hostname("under_score").is_err());
    assert!(check_hostname(&"a".repeat(64)).is_err());
}

#[test]
fn byte_sizes() {
    assert_eq!(parse_bytes("512m"), Some(512 << 20));
    assert_eq!(parse_bytes("1g"), Some(1 << 30));
    assert_eq!(parse_bytes("100"), Some(100));
    assert_eq!(parse_bytes("lots"), None);
}

#[test]
fn volumes() {
    assert!(crate::compose::Volume::parse("/var/lib/docker:/var/lib/docker").is_ok());
    assert!(crate::compose::Volume::parse("data:/data:ro").is_ok());
    assert!(crate::compose::Volume::parse("/tmp").is_ok());
    assert!(crate::compose::Volume::parse("relative:dir").is_err());
    assert!(crate::compose::Volume::parse("/a:/b:bogus").is_err());
}

#[test]
fn ssh_keys() {
    assert!(check_ssh_key("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGq7 me@host").is_ok());
    assert!(check_ssh_key("no-pty ssh-rsa AAAAB3NzaC1yc2EAAAADAQAB x").is_ok());
    assert!(check_ssh_key("hello world").is_err());
}
