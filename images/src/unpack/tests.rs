use super::entries::parse_name;
use super::*;

#[test]
fn names_are_split_and_checked() {
    let name = parse_name(b"./usr//bin/sh").expect("valid");
    assert_eq!(name.parent, vec![&b"usr"[..], &b"bin"[..]]);
    assert_eq!(name.file, Some(&b"sh"[..]));
    assert!(parse_name(b"./").expect("root").file.is_none());
    assert_eq!(parse_name(b"a/../../etc").err(), Some(Rejection::DotDot));
    assert_eq!(parse_name(b"/etc/passwd").err(), Some(Rejection::Absolute));
    assert_eq!(parse_name(b"..").err(), Some(Rejection::DotDot));
}
