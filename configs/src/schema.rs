//! The JSON Schema of a cloud-config, generated from the model and checked in as
//! `configs/schema.json` so editors can validate configs as they are written.

use serde_json::{json, Value};

use crate::compat;
use crate::model::CloudConfig;

/// The schema as pretty-printed JSON, with a trailing newline.
pub fn schema_json() -> String {
    let mut schema =
        serde_json::to_value(schemars::schema_for!(CloudConfig)).unwrap_or(Value::Null);
    // Keys Berth accepts but ignores (with a warning) must not be editor errors either.
    for (definition, keys) in compat::tables() {
        let properties = if definition == "CloudConfig" {
            schema.get_mut("properties")
        } else {
            schema
                .get_mut("$defs")
                .and_then(|d| d.get_mut(definition))
                .and_then(|d| d.get_mut("properties"))
        };
        if let Some(Value::Object(props)) = properties {
            for key in keys {
                props.entry(key.to_string()).or_insert_with(|| {
                    json!({"description": "Accepted for compatibility but not supported by Berth; ignored with a warning."})
                });
            }
        }
    }
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
