//! Completion webhooks (DESIGN §12): a job may name a `callback_url`; when it ends, jobdock POSTs its final
//! monitor there, signed per Standard Webhooks, retrying for a day.
//!
//! - [`address`]: the allow-list patterns and the guard against internal addresses.
//! - [`signature`]: the `webhook-signature` header.
//! - [`deliver`]: the delivery loop: claims due deliveries, sends them, records the outcome.
//!
//! The delivery itself is queued by the database in the transaction that ends the job (see the migration
//! `webhooks`), so no path that ends a job can forget it and a crash cannot lose it.

pub mod address;
pub mod deliver;
pub mod signature;

use std::net::IpAddr;
use std::time::Duration;

pub use signature::Secret;

/// The longest callback URL accepted.
pub const MAX_URL_LEN: usize = 2048;
/// How long the check at submit waits for DNS.
const SUBMIT_DNS_TIMEOUT: Duration = Duration::from_secs(2);

/// `[webhooks]`: the signing secret and the URL patterns callbacks may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WebhookSettings {
    pub secret: Option<Secret>,
    pub allow: Vec<String>,
}

/// A callback URL an allow pattern admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    pub url: reqwest::Url,
    /// A matching pattern names this host literally, so it may be an internal address.
    pub internal_ok: bool,
}

impl WebhookSettings {
    /// Callbacks are accepted (and delivered by this process) only with a secret and an allow list.
    pub fn enabled(&self) -> bool {
        self.secret.is_some() && !self.allow.is_empty()
    }

    /// What can be said of `url` without the network: its form, the allow list, a literal address.
    pub fn admit(&self, url: &str) -> Result<Admitted, String> {
        if !self.enabled() {
            return Err(
                "`callback_url` is not accepted by this server: its operator has not configured \
                        webhooks ([webhooks] secret and allow in jobdock.toml)"
                    .to_owned(),
            );
        }
        if url.len() > MAX_URL_LEN {
            return Err(format!(
                "`callback_url` is longer than {MAX_URL_LEN} characters"
            ));
        }
        let parsed = reqwest::Url::parse(url)
            .map_err(|err| format!("`callback_url` is not a valid URL ({err})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("`callback_url` must be an http or https URL".to_owned());
        }
        let Some(host) = parsed.host_str().map(|host| {
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_ascii_lowercase()
        }) else {
            return Err("`callback_url` has no host".to_owned());
        };
        let matching: Vec<&String> = self
            .allow
            .iter()
            .filter(|pattern| address::matches(pattern, parsed.as_str()))
            .collect();
        if matching.is_empty() {
            return Err(format!(
                "`callback_url` {} is not allowed: it matches no pattern of this server's [webhooks] allow list",
                parsed.as_str()
            ));
        }
        let internal_ok = matching
            .iter()
            .any(|pattern| address::literal_host(pattern).as_deref() == Some(host.as_str()));
        if let Ok(ip) = host.parse::<IpAddr>() {
            if address::is_internal(ip) && !internal_ok {
                return Err(internal(&host));
            }
        }
        Ok(Admitted {
            url: parsed,
            internal_ok,
        })
    }

    /// [`admit`](Self::admit), then, for a host name, where DNS says it is (refused when any address is
    /// internal; a name that does not resolve now is accepted: delivery checks again, after DNS). Returns
    /// the URL as it will be stored.
    pub async fn check(&self, url: &str) -> Result<String, String> {
        let admitted = self.admit(url)?;
        if let (false, Some(url::Host::Domain(name))) = (admitted.internal_ok, admitted.url.host())
        {
            let port = admitted.url.port_or_known_default().unwrap_or(443);
            let lookup = tokio::net::lookup_host((name, port));
            if let Ok(Ok(addresses)) = tokio::time::timeout(SUBMIT_DNS_TIMEOUT, lookup).await {
                if addresses
                    .into_iter()
                    .any(|addr| address::is_internal(addr.ip()))
                {
                    return Err(internal(name));
                }
            }
        }
        Ok(admitted.url.into())
    }
}

fn internal(host: &str) -> String {
    format!(
        "`callback_url` points at {host}, a loopback, private or link-local address; callbacks go only to \
         public addresses unless a [webhooks] allow pattern names that host itself"
    )
}
