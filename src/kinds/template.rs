//! `{name}` placeholders filled from a payload's top-level fields: the `http` kind's URL and the `exec`
//! kind's argv. A placeholder takes a string or a number; anything else, or a missing field, is a 400 at
//! submit, never a failing job.

use serde_json::Value;

/// The text of a payload field a placeholder names: a top-level string, or number.
pub fn field_text(payload: &Value, name: &str) -> Result<String, String> {
    match payload.get(name) {
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Number(number)) => Ok(number.to_string()),
        Some(_) => Err(format!(
            "`{name}` must be a string or a number: this kind puts it in its {{{name}}} placeholder"
        )),
        None => Err(format!(
            "the payload needs a top-level `{name}` (a string or a number) for this kind's {{{name}}} placeholder"
        )),
    }
}

/// A piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    Text(String),
    Field(String),
}

/// Splits `template` into text and `{name}` fields. `name` is letters, digits, `_` and `-`; other braces
/// are text.
pub fn pieces(template: &str) -> Vec<Piece> {
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let name_len = after.find('}').filter(|&end| {
            end > 0
                && after[..end]
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        });
        match name_len {
            Some(end) => {
                text.push_str(&rest[..open]);
                if !text.is_empty() {
                    pieces.push(Piece::Text(std::mem::take(&mut text)));
                }
                pieces.push(Piece::Field(after[..end].to_owned()));
                rest = &after[end + 1..];
            }
            None => {
                text.push_str(&rest[..=open]);
                rest = after;
            }
        }
    }
    text.push_str(rest);
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    pieces
}

/// The fields `pieces` name.
pub fn fields(pieces: &[Piece]) -> impl Iterator<Item = &str> {
    pieces.iter().filter_map(|piece| match piece {
        Piece::Field(name) => Some(name.as_str()),
        Piece::Text(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_are_found_and_other_braces_are_text() {
        assert_eq!(
            pieces("/v1/{customer}/x{}y{a b}/{id}"),
            vec![
                Piece::Text("/v1/".into()),
                Piece::Field("customer".into()),
                Piece::Text("/x{}y{a b}/".into()),
                Piece::Field("id".into()),
            ]
        );
    }

    #[test]
    fn fields_take_strings_and_numbers_only() {
        let payload = json!({"s": "a/b", "n": 7, "o": {}});
        assert_eq!(field_text(&payload, "s").unwrap(), "a/b");
        assert_eq!(field_text(&payload, "n").unwrap(), "7");
        assert!(field_text(&payload, "o").is_err());
        assert!(field_text(&payload, "missing").is_err());
    }
}
