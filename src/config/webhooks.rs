//! `[webhooks]` in `jobdock.toml`: the signing secret and the allow list of callback URLs (DESIGN §12).

use serde::Deserialize;
use toml::Spanned;

use super::file::{At, ConfigError};
use crate::webhooks::{Secret, WebhookSettings};

/// The environment variable that supplies (or overrides) `[webhooks] secret`, to keep it out of the file.
pub const SECRET_ENV: &str = "JOBDOCK_WEBHOOK_SECRET";

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    secret: Option<Spanned<String>>,
    allow: Option<Spanned<Vec<Spanned<String>>>>,
}

/// Validates `[webhooks]`: a `whsec_` secret (from the file or [`SECRET_ENV`]) is required once `allow`
/// names any pattern, and each pattern is an http or https URL pattern.
pub(super) fn webhooks_section(
    raw: Option<Spanned<RawWebhooks>>,
    env_secret: Option<String>,
    at: &At<'_>,
) -> Result<WebhookSettings, ConfigError> {
    let span = raw.as_ref().map(Spanned::span).unwrap_or(0..0);
    let raw = raw.map(Spanned::into_inner).unwrap_or_default();
    let secret = match (env_secret, raw.secret) {
        (Some(text), _) => Some(Secret::parse(&text).map_err(|message| ConfigError {
            file: SECRET_ENV.into(),
            line: None,
            key: SECRET_ENV.to_owned(),
            message,
        })?),
        (None, Some(text)) => Some(
            Secret::parse(text.get_ref())
                .map_err(|message| at(text.span(), "webhooks.secret", message))?,
        ),
        (None, None) => None,
    };
    let mut allow = Vec::new();
    for pattern in raw.allow.map(Spanned::into_inner).unwrap_or_default() {
        let text = pattern.get_ref();
        if !(text.starts_with("https://") || text.starts_with("http://")) {
            return Err(at(
                pattern.span(),
                "webhooks.allow",
                format!("`{text}` must start with https:// or http://, e.g. \"https://hooks.example.com/*\""),
            ));
        }
        allow.push(text.clone());
    }
    if !allow.is_empty() && secret.is_none() {
        return Err(at(
            span,
            "webhooks.secret",
            format!(
                "callbacks are signed: set `secret = \"whsec_...\"` (base64 of 32 random bytes, e.g. \
                 `openssl rand -base64 32`) or the environment variable {SECRET_ENV}"
            ),
        ));
    }
    Ok(WebhookSettings { secret, allow })
}

#[cfg(test)]
mod tests {
    use crate::config::file::parse;
    use std::path::Path;

    fn parse_str(text: &str) -> Result<crate::config::file::ConfigFile, String> {
        parse(Path::new("jobdock.toml"), text).map_err(|err| err.to_string())
    }

    #[test]
    fn an_allow_list_with_a_secret_enables_webhooks() {
        let file = parse_str(
            "[webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nallow = [\"https://hooks.example.com/*\"]\n",
        )
        .unwrap();
        assert!(file.webhooks.enabled());
        assert_eq!(file.webhooks.allow, ["https://hooks.example.com/*"]);
    }

    #[test]
    fn an_allow_list_without_a_secret_is_refused_naming_the_key() {
        let err = parse_str("[webhooks]\nallow = [\"https://hooks.example.com/*\"]\n").unwrap_err();
        assert!(err.contains("webhooks.secret"), "{err}");
    }

    #[test]
    fn a_bad_secret_or_pattern_is_refused_with_its_line() {
        let err = parse_str("[webhooks]\nsecret = \"hunter2\"\n").unwrap_err();
        assert!(err.starts_with("jobdock.toml:2: webhooks.secret"), "{err}");
        assert!(
            !err.contains("hunter2"),
            "the secret is not repeated: {err}"
        );
        let err = parse_str(
            "[webhooks]\nsecret = \"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"\nallow = [\"hooks.example.com/*\"]\n",
        )
        .unwrap_err();
        assert!(err.contains("webhooks.allow"), "{err}");
    }
}
