use super::*;

#[test]
fn queries_are_decoded() {
    let q = parse_query("tail=10&since=2026-11-23%2008%3A40&follow");
    assert_eq!(q.get("tail").map(String::as_str), Some("10"));
    assert_eq!(q.get("since").map(String::as_str), Some("2026-11-23 08:40"));
    assert_eq!(q.get("follow").map(String::as_str), Some(""));
    assert_eq!(percent_decode("a%2"), "a%2");
    assert_eq!(percent_decode("%zz+x"), "%zz x");
}
