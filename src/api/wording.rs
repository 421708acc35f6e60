//! poem-openapi's parse and validation messages, said in the API's own words: no Rust type names
//! (`SubmitJob`, `integer_int32`), no validator syntax (`minimum(1, exclusive: false)`).

/// Rewrites a poem-openapi message for a client: `failed to parse "SubmitJob": field `queue`
/// verification failed. minLength(1)` becomes `` `queue` must be at least 1 character long ``.
pub fn plain(message: &str) -> String {
    let mut text = message.trim().to_owned();
    // `failed to parse "X": ...` prefixes, as often as they nest.
    while let Some(rest) = text.strip_prefix("failed to parse \"") {
        match rest.split_once("\": ") {
            Some((_, tail)) => text = tail.to_owned(),
            None => break,
        }
    }
    // ` (occurred while parsing "X")` suffixes.
    if let Some(at) = text.find(" (occurred while parsing") {
        text.truncate(at);
    }
    if let Some((field, rule)) = text
        .strip_prefix("field `")
        .and_then(|rest| rest.split_once("` verification failed. "))
    {
        return format!("`{field}` {}", rule_in_words(rule));
    }
    if let Some(rule) = text.strip_prefix("verification failed. ") {
        return rule_in_words(rule);
    }
    if let Some(rest) = text.strip_prefix("Expected input type \"") {
        if let Some((expected, found)) = rest.split_once("\", found ") {
            let found = found.trim_end_matches('.');
            return if found == "null" {
                format!(
                    "a required value is missing: expected {}",
                    type_in_words(expected)
                )
            } else {
                format!("expected {}, found {found}", type_in_words(expected))
            };
        }
    }
    match text.as_str() {
        "invalid integer" => "must be an integer".to_owned(),
        _ => text,
    }
}

/// `minimum(1, exclusive: false)` → `must be at least 1`.
fn rule_in_words(rule: &str) -> String {
    let Some((name, args)) = rule.trim().trim_end_matches(')').split_once('(') else {
        return format!("is invalid ({rule})");
    };
    let mut args = args.split(',').map(str::trim);
    let value = args.next().unwrap_or_default();
    let exclusive = args.any(|arg| arg == "exclusive: true");
    let plural = |noun: &str| {
        if value == "1" {
            noun.to_owned()
        } else {
            format!("{noun}s")
        }
    };
    match (name, exclusive) {
        ("minimum", false) => format!("must be at least {value}"),
        ("minimum", true) => format!("must be greater than {value}"),
        ("maximum", false) => format!("must be at most {value}"),
        ("maximum", true) => format!("must be less than {value}"),
        ("minLength", _) => format!("must be at least {value} {} long", plural("character")),
        ("maxLength", _) => format!("must be at most {value} {} long", plural("character")),
        ("minItems", _) => format!("must have at least {value} {}", plural("item")),
        ("maxItems", _) => format!("must have at most {value} {}", plural("item")),
        ("pattern", _) => "does not have the expected form".to_owned(),
        _ => format!("is invalid ({rule})"),
    }
}

/// `integer_int32` → `an integer`.
fn type_in_words(name: &str) -> &'static str {
    let name = name.trim_start_matches("optional_");
    if name.starts_with("integer") {
        "an integer"
    } else if name.starts_with("number") {
        "a number"
    } else if name.starts_with("list") || name.starts_with("array") {
        "a list"
    } else if name.starts_with("string") {
        "a string"
    } else if name.starts_with("bool") {
        "true or false"
    } else {
        "a JSON object"
    }
}

#[cfg(test)]
mod tests {
    use super::plain;

    #[test]
    fn framework_wording_becomes_the_apis_own() {
        assert_eq!(
            plain("failed to parse \"SubmitJob\": field `max_attempts` verification failed. minimum(1, exclusive: false)"),
            "`max_attempts` must be at least 1"
        );
        assert_eq!(
            plain("field `queue` verification failed. minLength(1)"),
            "`queue` must be at least 1 character long"
        );
        assert_eq!(
            plain("field `jobs` verification failed. maxItems(1000)"),
            "`jobs` must have at most 1000 items"
        );
        assert_eq!(
            plain("Expected input type \"integer_int32\", found \"x\"."),
            "expected an integer, found \"x\""
        );
        assert_eq!(
            plain("Expected input type \"integer(uint32)\", found \"x\". (occurred while parsing \"optional_integer(uint32)\") (occurred while parsing \"ClaimRequest\")"),
            "expected an integer, found \"x\""
        );
        assert_eq!(
            plain("Expected input type \"string\", found null. (occurred while parsing \"ClaimRequest\")"),
            "a required value is missing: expected a string"
        );
        assert_eq!(
            plain("failed to parse \"integer_int32\": invalid integer"),
            "must be an integer"
        );
        assert_eq!(
            plain("verification failed. maximum(500, exclusive: false)"),
            "must be at most 500"
        );
    }
}
