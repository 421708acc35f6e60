//! The delivery loop: every process that has webhooks configured claims due deliveries (one replica per
//! delivery), POSTs them and records what happened. A delivery is retried after about 5 s, 30 s, 2 min,
//! 10 min, 30 min, then hourly, for 24 h, always with the same `webhook-id`; a 2xx ends it, a 410 stops it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;
use sqlx::PgPool;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{address, WebhookSettings};
use crate::store::deliveries::{self, Due, Outcome};

/// How often due deliveries are looked for.
const LOOK_EVERY: Duration = Duration::from_millis(500);
/// Deliveries claimed (and sent concurrently) per look.
const CLAIM: i64 = 32;
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a delivery is retried.
const RETRY_FOR: chrono::Duration = chrono::Duration::hours(24);
/// Waits after the 1st, 2nd, ... failed attempt; hourly after the last.
const BACKOFF_SECS: [i64; 5] = [5, 30, 120, 600, 1800];
const HOURLY: i64 = 3600;

/// The running delivery loop.
pub struct Deliverer {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Deliverer {
    /// Starts delivering, if webhooks are configured (`None` otherwise).
    pub fn start(pool: PgPool, settings: WebhookSettings) -> Option<Deliverer> {
        if !settings.enabled() {
            return None;
        }
        let stop = CancellationToken::new();
        let sender = Arc::new(Sender::new(settings)?);
        let task = tokio::spawn(run(pool, sender, stop.clone()));
        Some(Deliverer { stop, task })
    }

    /// Stops looking for deliveries; attempts in progress finish first.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn run(pool: PgPool, sender: Arc<Sender>, stop: CancellationToken) {
    loop {
        match deliveries::claim_due(&pool, CLAIM).await {
            Ok(due) if !due.is_empty() => {
                let full = due.len() as i64 == CLAIM;
                join_all(due.into_iter().map(|due| attempt(&pool, &sender, due))).await;
                if full {
                    continue;
                }
            }
            Ok(_) => {}
            Err(err) => tracing::debug!(error = %err, "cannot claim webhook deliveries; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(LOOK_EVERY) => {}
        }
    }
}

/// Sends one delivery and records the outcome.
async fn attempt(pool: &PgPool, sender: &Sender, due: Due) {
    let body = match &due.body {
        Some(body) => body.clone(),
        None => match final_monitor(pool, &due).await {
            Ok(Some(body)) => body,
            Ok(None) => {
                let outcome = Outcome::Failed {
                    status: None,
                    error: "the job was deleted before its callback was sent".to_owned(),
                };
                record(pool, &due, &[], &outcome).await;
                return;
            }
            // The database is failing: the claim's lease brings the delivery back later.
            Err(_) => return,
        },
    };
    let outcome = match sender.send(&due, &body).await {
        Ok(status) if (200..300).contains(&status) => Outcome::Delivered { status },
        Ok(410) => Outcome::Stopped { status: 410 },
        Ok(status) => retry_or_fail(
            &due,
            Some(status),
            format!("the receiver answered {status}"),
        ),
        Err(error) => retry_or_fail(&due, None, error),
    };
    record(pool, &due, &body, &outcome).await;
}

async fn record(pool: &PgPool, due: &Due, body: &[u8], outcome: &Outcome) {
    if let Err(err) = deliveries::record(pool, due.id, body, outcome).await {
        tracing::warn!(delivery = %due.id, job = %due.job_id, error = %err, "cannot record a webhook attempt; it will be retried");
    }
}

/// The job's final monitor as JSON; `None` when the job is gone.
async fn final_monitor(pool: &PgPool, due: &Due) -> crate::store::Result<Option<Vec<u8>>> {
    let job = crate::store::jobs::get(pool, due.job_id, None).await?;
    Ok(job.map(|job| {
        let monitor = crate::api::jobs::types::JobMonitor::from(job);
        poem_openapi::types::ToJSON::to_json_string(&monitor).into_bytes()
    }))
}

/// The next attempt after `due.attempts` failures, or the end of a day of retries.
fn retry_or_fail(due: &Due, status: Option<i32>, error: String) -> Outcome {
    let index = usize::try_from(due.attempts.max(1) - 1).unwrap_or(0);
    let wait = BACKOFF_SECS.get(index).copied().unwrap_or(HOURLY);
    let next_at = Utc::now() + chrono::Duration::seconds(wait);
    if next_at > due.created_at + RETRY_FOR {
        Outcome::Failed {
            status,
            error: format!("{error}; gave up after {} attempts over 24 h", due.attempts),
        }
    } else {
        Outcome::Retry {
            status,
            error,
            next_at,
        }
    }
}

/// Signs and POSTs deliveries. Two clients: one whose DNS refuses internal addresses (for hosts no
/// pattern names literally), and one that does not (for hosts a pattern names). Neither follows redirects
/// or uses proxies, so a receiver cannot send the request elsewhere.
struct Sender {
    settings: WebhookSettings,
    secret: super::Secret,
    guarded: reqwest::Client,
    open: reqwest::Client,
}

impl Sender {
    fn new(settings: WebhookSettings) -> Option<Sender> {
        let secret = settings.secret.clone()?;
        let build = |guarded: bool| {
            let builder = reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .timeout(ATTEMPT_TIMEOUT)
                .user_agent(concat!("jobdock-webhooks/", env!("CARGO_PKG_VERSION")));
            let builder = if guarded {
                builder.dns_resolver(Arc::new(PublicOnly))
            } else {
                builder
            };
            builder.build()
        };
        match (build(true), build(false)) {
            (Ok(guarded), Ok(open)) => Some(Sender {
                settings,
                secret,
                guarded,
                open,
            }),
            (Err(err), _) | (_, Err(err)) => {
                tracing::error!(error = %err, "cannot build the webhook client; webhooks are not delivered");
                None
            }
        }
    }

    /// POSTs `body`; the status, or why there was none.
    async fn send(&self, due: &Due, body: &[u8]) -> Result<i32, String> {
        // Checked again: the allow list may have changed since the job was submitted.
        let admitted = self.settings.admit(&due.url)?;
        let client = if admitted.internal_ok {
            &self.open
        } else {
            &self.guarded
        };
        let id = format!("msg_{}", due.id.simple());
        let timestamp = Utc::now().timestamp();
        let signature = self.secret.sign(&id, timestamp, body);
        let response = client
            .post(admitted.url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await
            .map_err(|err| describe(&err))?;
        Ok(i32::from(response.status().as_u16()))
    }
}

/// Why an attempt got no answer, without the URL (which may hold a token).
fn describe(err: &reqwest::Error) -> String {
    use std::error::Error;
    let mut text = if err.is_timeout() {
        "no answer within 10 s".to_owned()
    } else if err.is_connect() {
        "cannot connect".to_owned()
    } else {
        "the request failed".to_owned()
    };
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

/// A resolver that drops internal addresses (and fails when nothing else is left), so a public name that
/// resolves to an internal address cannot reach into the network, DNS rebinding included: the addresses
/// checked are the ones connected to.
struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> = all
                .into_iter()
                .filter(|addr| !address::is_internal(addr.ip()))
                .collect();
            if public.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, private or link-local addresses, which callbacks may not reach"
                )
                .into());
            }
            Ok(Box::new(public.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
