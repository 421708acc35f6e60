//! A configured kind's payload schema: JSON Schema (draft 2020-12), compiled once when the configuration
//! is read, checked against every submitted payload before the job is accepted.

use std::sync::Arc;

use jsonschema::{Draft, Validator};
use serde::Serialize;
use serde_json::Value;

/// One way a payload breaks its kind's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaViolation {
    /// Where in the payload, as a JSON Pointer (`""` is the payload itself; a missing required property
    /// is reported at its parent, and named in `message`).
    pub pointer: String,
    pub message: String,
}

/// A compiled payload schema, with the JSON it came from (shown by `GET /v1/kinds`).
#[derive(Clone)]
pub struct PayloadSchema {
    json: Value,
    validator: Arc<Validator>,
}

impl std::fmt::Debug for PayloadSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PayloadSchema").field(&self.json).finish()
    }
}

impl PayloadSchema {
    /// Compiles `json` as a draft 2020-12 schema (unless it names another draft in `$schema`), with
    /// `format` asserted: a kind that says `format = "uri"` means it. References are resolved within the
    /// schema only; nothing is fetched.
    ///
    /// # Errors
    /// A message saying why `json` is not a valid schema.
    pub fn compile(json: Value) -> Result<PayloadSchema, String> {
        let validator = jsonschema::options()
            .with_draft(Draft::Draft202012)
            .should_validate_formats(true)
            .build(&json)
            .map_err(|err| format!("not a valid JSON Schema: {err}"))?;
        Ok(PayloadSchema {
            json,
            validator: Arc::new(validator),
        })
    }

    pub fn json(&self) -> &Value {
        &self.json
    }

    /// Every way `payload` breaks the schema; empty when it conforms.
    pub fn violations(&self, payload: &Value) -> Vec<SchemaViolation> {
        self.validator
            .iter_errors(payload)
            .map(|err| SchemaViolation {
                pointer: err.instance_path().to_string(),
                message: err.to_string(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn thumbnail() -> PayloadSchema {
        PayloadSchema::compile(json!({
            "type": "object",
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "format": "uri"},
                "width": {"type": "integer", "minimum": 1}
            }
        }))
        .expect("valid schema")
    }

    #[test]
    fn a_conforming_payload_has_no_violations() {
        assert!(thumbnail()
            .violations(&json!({"url": "https://example.com/a.png", "width": 10}))
            .is_empty());
    }

    #[test]
    fn every_violation_is_reported_with_its_pointer() {
        let violations = thumbnail().violations(&json!({"url": "not a uri", "width": 0}));
        let pointers: Vec<&str> = violations.iter().map(|v| v.pointer.as_str()).collect();
        assert!(pointers.contains(&"/url"), "{violations:?}");
        assert!(pointers.contains(&"/width"), "{violations:?}");
    }

    #[test]
    fn a_missing_required_property_is_reported_at_its_parent_and_named() {
        let violations = thumbnail().violations(&json!({}));
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].pointer, "");
        assert!(violations[0].message.contains("url"), "{violations:?}");
    }

    #[test]
    fn a_schema_that_is_not_json_schema_is_refused() {
        let err = PayloadSchema::compile(json!({"type": "banana"})).unwrap_err();
        assert!(err.contains("not a valid JSON Schema"), "{err}");
    }
}
