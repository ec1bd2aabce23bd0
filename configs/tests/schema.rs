//! `configs/schema.json` is what editors validate configs against; it must match the model.

#[test]
fn checked_in_schema_is_fresh() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schema.json");
    let fresh = berth_configs::schema::schema_json();
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "{} is stale; regenerate it with `cargo xtask schema`",
        path.display()
    );
}

#[test]
fn schema_describes_the_sections_and_accepts_compat_keys() {
    let schema: serde_json::Value =
        serde_json::from_str(&berth_configs::schema::schema_json()).expect("schema is JSON");
    let props = &schema["properties"];
    for key in [
        "hostname",
        "users",
        "write_files",
        "runcmd",
        "bootcmd",
        "mounts",
        "berth",
        "rancher",
    ] {
        assert!(props.get(key).is_some(), "schema lacks `{key}`");
    }
    // Unsupported cloud-init keys are warnings in Berth, so editors must not flag them.
    assert!(props.get("packages").is_some());
    assert_eq!(schema["additionalProperties"], serde_json::json!(false));
    let service = &schema["$defs"]["Service"]["properties"];
    for key in [
        "image",
        "depends_on",
        "healthcheck",
        "oneshot",
        "restart",
        "ports",
    ] {
        assert!(service.get(key).is_some(), "Service schema lacks `{key}`");
    }
}
