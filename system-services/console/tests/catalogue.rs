//! The busybox console's catalogue entry (`configs/consoles/busybox.yml`) is a
//! valid service file declaring just `console`, the same service as the
//! default console's in `configs/default.yml` but for the image, and that
//! image is the one `images/recipes/console-busybox.yml` builds.

use std::path::Path;
use std::sync::Arc;

fn repo() -> &'static Path {
    // system-services/console → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
}

#[test]
fn the_busybox_console_is_the_default_console_on_another_image() {
    let path = repo().join("configs/consoles/busybox.yml");
    let text = std::fs::read_to_string(&path).expect("configs/consoles/busybox.yml");
    let source: Arc<str> = Arc::from(path.display().to_string());
    let doc = berth_configs::parse_compose(&source, &text);
    let problems: Vec<String> = doc.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(problems.is_empty(), "{problems:#?}");
    // Loaded on its own, beside only the `network` it depends on.
    let network = berth_configs::parse_compose(
        &Arc::from("network stand-in"),
        "services:\n  network:\n    image: berth/network:latest\n",
    );
    let loaded = berth_configs::load(vec![network, doc]);
    assert!(loaded.rejected.is_empty(), "{:#?}", loaded.diagnostics);
    let mut services = loaded.config.berth.services;
    services.remove("network");
    let names: Vec<&String> = services.keys().collect();
    assert_eq!(names, ["console"]);

    let defaults = berth_configs::load(vec![berth_configs::defaults()]);
    let mut expected = defaults.config.berth.services["console"].clone();
    expected.image = Some("berth/console-busybox:latest".into());
    assert_eq!(services["console"], expected);

    let recipe = std::fs::read_to_string(repo().join("images/recipes/console-busybox.yml"))
        .expect("the image recipe");
    assert!(recipe.lines().any(|l| l == "name: console-busybox"));
}
