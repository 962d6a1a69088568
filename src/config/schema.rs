//! The JSON Schema of `notifications.yaml` (`herald schema`), generated from the config
//! types; `schema/notifications.schema.json` is this output and a test keeps them equal.

use super::model::RawConfig;

/// The schema as pretty-printed JSON with a trailing newline.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawConfig);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_else(|_| "{}".to_string());
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn committed_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/schema/notifications.schema.json"
        );
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == super::json_schema(),
            "schema/notifications.schema.json is stale: run `cargo run -- schema > schema/notifications.schema.json`"
        );
    }
}
