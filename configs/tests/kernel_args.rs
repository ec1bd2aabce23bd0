//! `berth.kernel_args`: what validates, and how a refusal names the entry.

use berth_configs::{defaults, load, parse_document};

fn findings(user_data: &str) -> Vec<String> {
    load(vec![
        defaults(),
        parse_document(&"user-data".into(), user_data),
    ])
    .error_messages()
}

#[test]
fn arguments_validate_one_per_entry() {
    let good = "#cloud-config\nberth:\n  kernel_args: [cryptomgr.notests=0, quiet]\n";
    assert_eq!(findings(good), Vec::<String>::new());
    let loaded = load(vec![defaults(), parse_document(&"u".into(), good)]);
    assert_eq!(
        loaded.config.berth.kernel_args,
        ["cryptomgr.notests=0", "quiet"]
    );
}

#[test]
fn bad_arguments_name_the_line_and_the_entry() {
    let cases: &[(&str, &str)] = &[
        (
            "[\"a=1 b=2\"]",
            "berth.kernel_args[0]: `a=1 b=2` contains ' '",
        ),
        (
            "[ok, berth.slot=B]",
            "berth.kernel_args[1]: `berth.slot` is Berth's own",
        ),
        ("[\"x=$y\"]", "berth.kernel_args[0]: `x=$y` contains '$'"),
    ];
    for (value, want) in cases {
        let doc = format!("#cloud-config\nberth:\n  kernel_args: {value}\n");
        let found = findings(&doc);
        assert!(
            found
                .iter()
                .any(|f| f.contains(want) && f.contains("user-data:3")),
            "{value}: {found:?}"
        );
    }
    let long: Vec<String> = (0..30).map(|i| format!("\"arg{i}=abcdef\"")).collect();
    let doc = format!(
        "#cloud-config\nberth:\n  kernel_args: [{}]\n",
        long.join(", ")
    );
    let found = findings(&doc);
    assert!(
        found
            .iter()
            .any(|f| f.contains("berth.kernel_args:") && f.contains("at most 200")),
        "{found:?}"
    );
}
