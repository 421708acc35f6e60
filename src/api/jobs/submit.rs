//! Turning a submitted body into a [`NewJob`]: the kind must exist and accept the payload, and nothing
//! PostgreSQL would reject (NUL characters) may get through to become a 500.

use crate::api::hex;
use poem_openapi::types::ParseFromJSON;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::types::SubmitJob;
use crate::api::problem::Problem;
use crate::job::NewJob;
use crate::kinds::schema::SchemaViolation;
use crate::kinds::{Lookup, Registry};

/// The fields of [`SubmitJob`], for naming unknown ones.
const FIELDS: [&str; 8] = [
    "kind",
    "payload",
    "queue",
    "priority",
    "run_at",
    "max_attempts",
    "timeout_secs",
    "callback_url",
];

/// Parses a submitted body into a [`SubmitJob`], with messages that name the offending field.
/// poem-openapi's own messages name only the type (`failed to parse "integer(int32)"`).
pub fn parse_submission(body: Value) -> Result<SubmitJob, String> {
    let Value::Object(fields) = body else {
        return Err(
            "the body must be a JSON object, e.g. {\"kind\": \"echo\", \"payload\": {}}".to_owned(),
        );
    };
    if let Some(unknown) = fields.keys().find(|key| !FIELDS.contains(&key.as_str())) {
        return Err(format!(
            "unknown field `{unknown}`; a job has {}",
            FIELDS.map(|f| format!("`{f}`")).join(", ")
        ));
    }
    if fields.get("kind").is_none_or(Value::is_null) {
        return Err("`kind` is required: the name of what the job does, e.g. \"echo\"".to_owned());
    }
    // Said here rather than by the schema's pattern, whose message would be an unreadable regex.
    for field in ["kind", "queue"] {
        if fields
            .get(field)
            .and_then(Value::as_str)
            .is_some_and(|text| text.contains('\0'))
        {
            return Err(format!("`{field}` must not contain NUL characters"));
        }
    }
    SubmitJob::parse_from_json(Some(Value::Object(fields.clone()))).map_err(|whole| {
        // Find the field at fault by parsing each one alone beside a valid kind.
        let parse_alone = |name: &String, value: &Value| {
            let mut alone = Map::new();
            alone.insert("kind".to_owned(), Value::from("echo"));
            alone.insert(name.clone(), value.clone());
            SubmitJob::parse_from_json(Some(Value::Object(alone))).err()
        };
        fields
            .iter()
            .find_map(|(name, value)| parse_alone(name, value).map(|err| (name, err)))
            .map(|(name, err)| {
                let message = without_type_context(&err.into_message());
                if message.starts_with(&format!("`{name}` ")) {
                    message
                } else {
                    format!("`{name}` is invalid: {message}")
                }
            })
            .unwrap_or_else(|| without_type_context(&whole.into_message()))
    })
}

/// poem-openapi's message in the API's words (no `SubmitJob`, no `minimum(1, exclusive: false)`).
fn without_type_context(message: &str) -> String {
    crate::api::wording::plain(message)
}

/// Why a submission was refused: a message for the 400, and, when a payload schema refused it, every
/// violation.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejection {
    pub detail: String,
    pub errors: Vec<SchemaViolation>,
}

impl From<String> for Rejection {
    fn from(detail: String) -> Self {
        Rejection {
            detail,
            errors: Vec::new(),
        }
    }
}

impl Rejection {
    /// The 400 problem, with `errors` when there are any.
    pub fn problem(self) -> Problem {
        let mut problem = Problem::bad_request(self.detail);
        if !self.errors.is_empty() {
            problem.errors = Some(self.errors.into_iter().map(Into::into).collect());
        }
        problem
    }
}

/// Validates a submission against the kinds this server knows and fills in what it left out (the kind's
/// defaults, then jobdock's).
pub fn validate_submission(registry: &Registry, submit: SubmitJob) -> Result<NewJob, Rejection> {
    let Some(kind) = registry.lookup(&submit.kind) else {
        return Err(format!(
            "unknown kind `{}`; this server accepts: {}",
            submit.kind,
            registry.accepted().join(", ")
        )
        .into());
    };
    let payload = match submit.payload {
        None | Some(Value::Null) => Value::Object(Default::default()),
        Some(payload) => payload,
    };
    if contains_nul(&payload) {
        return Err(
            "`payload` must not contain NUL characters (\\u0000): PostgreSQL cannot store them"
                .to_owned()
                .into(),
        );
    }
    if let Some(number) = unstorable_number(&payload) {
        return Err(format!(
            "`payload` holds the number {number:e}, which cannot be stored and read back exactly; keep numbers \
             between 1e-300 and 1e300 in magnitude (or send them as strings)"
        )
        .into());
    }
    let defaults = match kind {
        Lookup::InProcess(handler) => {
            handler.validate(&payload)?;
            None
        }
        Lookup::Configured(spec) => {
            let runner = spec.runner.as_ref();
            if let Some(schema) = &spec.payload_schema {
                let errors = schema.violations(&payload);
                if let Some(first) = errors.first() {
                    let more = match errors.len() {
                        1 => String::new(),
                        n => format!(" (and {} more; see `errors`)", n - 1),
                    };
                    let at = if first.pointer.is_empty() {
                        "the payload".to_owned()
                    } else {
                        format!("`{}`", first.pointer)
                    };
                    return Err(Rejection {
                        detail: format!(
                            "the payload does not match the schema of kind `{}`: at {at}: {}{more}",
                            spec.name, first.message
                        ),
                        errors,
                    });
                }
            }
            // What the schema cannot say: a field the URL template or argv needs.
            if let Some(runner) = runner {
                runner.0.validate(&payload)?;
            }
            Some(spec)
        }
    };
    Ok(NewJob {
        payload,
        queue: submit
            .queue
            .or_else(|| defaults.and_then(|spec| spec.queue.clone()))
            .unwrap_or_else(|| crate::job::DEFAULT_QUEUE.to_owned()),
        priority: submit.priority.unwrap_or(0),
        run_at: submit.run_at,
        max_attempts: submit
            .max_attempts
            .or_else(|| defaults.and_then(|spec| spec.max_attempts))
            .unwrap_or(crate::job::DEFAULT_MAX_ATTEMPTS),
        timeout_secs: submit
            .timeout_secs
            .or_else(|| defaults.and_then(|spec| spec.timeout_secs))
            .unwrap_or(crate::job::DEFAULT_TIMEOUT_SECS),
        // Checked against `[webhooks]` by the caller (it needs DNS).
        callback_url: submit.callback_url,
        ..NewJob::new(submit.kind, Value::Null)
    })
}

/// A float PostgreSQL would store but not give back: `jsonb` prints numbers without exponents, and a
/// 300-digit integer near f64's limits (or a subnormal's 300 zeros) does not parse back into an f64.
fn unstorable_number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(number) if number.is_f64() => number
            .as_f64()
            .filter(|x| *x != 0.0 && !(1e-300..=1e300).contains(&x.abs())),
        Value::Array(items) => items.iter().find_map(unstorable_number),
        Value::Object(map) => map.values().find_map(unstorable_number),
        _ => None,
    }
}

fn contains_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map
            .iter()
            .any(|(key, value)| key.contains('\0') || contains_nul(value)),
        _ => false,
    }
}

/// A digest of everything that defines the job, after defaults are filled in and with object keys
/// sorted, so the same request always gives the same fingerprint however its JSON was laid out.
pub fn fingerprint(job: &NewJob) -> String {
    let mut canonical = serde_json::json!({
        "kind": job.kind,
        "payload": canonical(&job.payload),
        "queue": job.queue,
        "priority": job.priority,
        "run_at": job.run_at.map(|at| at.to_rfc3339()),
        "max_attempts": job.max_attempts,
        "timeout_secs": job.timeout_secs,
    });
    // Only when present, so the fingerprints stored before callbacks existed still match.
    if let (Some(url), Some(fields)) = (&job.callback_url, canonical.as_object_mut()) {
        fields.insert("callback_url".to_owned(), Value::from(url.as_str()));
    }
    hex(&Sha256::digest(canonical.to_string().as_bytes()))
}

/// The idempotency keys and fingerprint of a batch submitted under one `Idempotency-Key`: each job is
/// stored under a key of its own, derived from the client's key and its position (a digest, so it fits
/// the column however long the client's key is), and every job carries the fingerprint of the whole batch.
pub fn batch_idempotency(key: &str, jobs: &[NewJob]) -> (Vec<String>, String) {
    let prefix = hex(&Sha256::digest(key.as_bytes()));
    let keys = (0..jobs.len())
        .map(|index| format!("batch:{prefix}:{index}"))
        .collect();
    let whole: String = jobs.iter().map(fingerprint).collect::<Vec<_>>().join(",");
    (keys, hex(&Sha256::digest(whole.as_bytes())))
}

/// Sorts object keys recursively (serde_json may be built to keep insertion order).
fn canonical(value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(canonical).collect()),
        other => other.clone(),
    }
}
