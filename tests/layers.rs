//! The module graph of src/ points one way: `scripts/layers` finds no cycle, no import from a
//! lower layer to a higher one, and no module without a layer (docs/layers.txt).

use std::process::Command;

#[test]
fn modules_import_only_their_own_layer_and_the_layers_below() {
    let out = Command::new("python3")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/layers"))
        .output()
        .expect("python3 runs scripts/layers");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "scripts/layers found problems:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("no cycle, nothing upward"), "{text}");
}
