//! The OpenAPI document: what poem-openapi generates, shaped for the people and tools that read it (links
//! from a submission to the operations on its job, canonical header names, closed request schemas).

use serde_json::{json, Value};

use super::{service, ApiState, Service};
use crate::kinds::Registry;

/// The OpenAPI document, as served and as committed in `openapi.yaml`.
#[derive(Debug, Clone)]
pub struct Document {
    pub json: String,
    pub yaml: String,
}

impl Document {
    pub(crate) fn of(service: &Service) -> Document {
        let mut document: Value = serde_json::from_str(&service.spec()).unwrap_or_else(|err| {
            // poem-openapi generated this JSON itself; failing to parse it is a bug caught by the tests.
            panic!("poem-openapi produced an unparsable document: {err}")
        });
        add_links(&mut document);
        canonical_header_names(&mut document);
        close_request_schemas(&mut document);
        describe_security(&mut document);
        describe_events(&mut document);
        Document {
            json: serde_json::to_string_pretty(&document).unwrap_or_default(),
            yaml: serde_yaml::to_string(&document).unwrap_or_default(),
        }
    }
}

/// The document without a database: for `jobdock openapi` and the tests that compare it with
/// `openapi.yaml`. Must be called inside a tokio runtime.
pub fn document() -> Document {
    let pool = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy_with(sqlx::postgres::PgConnectOptions::new());
    Document::of(&service(ApiState::new(pool, Registry::empty())))
}

/// OpenAPI links from the 202 of `submit_job` to the operations that take the new job's id, so client
/// generators and API fuzzers can follow a job from submission to result.
fn add_links(document: &mut Value) {
    let Some(accepted) = document.pointer_mut("/paths/~1v1~1jobs/post/responses/202") else {
        return;
    };
    let link = |operation: &str, description: &str| {
        json!({
            "operationId": operation,
            "parameters": { "id": "$response.body#/id" },
            "description": description,
        })
    };
    accepted["links"] = json!({
        "get_job": link("get_job", "Poll the new job's status monitor."),
        "get_job_result": link("get_job_result", "Fetch the new job's result once it has succeeded."),
        "cancel_job": link("cancel_job", "Cancel the new job."),
        "delete_job": link("delete_job", "Delete the new job once it has finished."),
    });
}

/// API keys (DESIGN §11), which the authentication middleware checks before any operation runs: a bearer
/// scheme, optional on every `/v1` operation (a server without keys runs open), and the 401 and 403 it
/// may answer.
fn describe_security(document: &mut Value) {
    if let Some(components) = document
        .get_mut("components")
        .and_then(Value::as_object_mut)
    {
        components.insert(
            "securitySchemes".to_owned(),
            json!({"apiKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "An API key (`jdk_...`) made with `jobdock keys create`. Required once the \
                    server has keys; its scopes decide what it may do: `submit` (submit, batch, cancel, \
                    delete), `read` (monitor, result, list, kinds), `work` (the worker protocol), `admin` \
                    (everything, every tenant)."
            }}),
        );
    }
    let problem = |description: &str| {
        json!({
            "description": description,
            "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
        })
    };
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, item) in paths.iter_mut() {
        if !path.starts_with("/v1/") && path != "/metrics" {
            continue;
        }
        let operations = item
            .as_object_mut()
            .into_iter()
            .flat_map(|item| item.values_mut())
            .filter_map(Value::as_object_mut);
        for operation in operations {
            operation.insert("security".to_owned(), json!([{"apiKey": []}, {}]));
            if let Some(responses) = operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
            {
                responses.insert(
                    "401".to_owned(),
                    problem("No API key, or an unknown or revoked one (the server has keys). Answered with `WWW-Authenticate: Bearer`."),
                );
                responses.insert(
                    "403".to_owned(),
                    problem("The API key lacks the scope this operation needs."),
                );
            }
        }
    }
}

/// Says in the schema what the handlers enforce: `deny_unknown_fields` rejects unknown fields, and `kind`
/// and `queue` may not contain NUL, so clients and fuzzers know both are errors. (The NUL rule is checked
/// by hand in `submit::parse_submission`: poem-openapi's `pattern` validator compiles its regex on every
/// request, which cost a batch submission most of its CPU.)
fn close_request_schemas(document: &mut Value) {
    for name in ["SubmitJob", "SubmitBatch"] {
        if let Some(schema) = document
            .pointer_mut(&format!("/components/schemas/{name}"))
            .and_then(Value::as_object_mut)
        {
            schema.insert("additionalProperties".to_owned(), Value::Bool(false));
        }
    }
    for field in ["kind", "queue"] {
        if let Some(schema) = document
            .pointer_mut(&format!("/components/schemas/SubmitJob/properties/{field}"))
            .and_then(Value::as_object_mut)
        {
            schema.insert("pattern".to_owned(), Value::from("^[^\\x00]*$"));
        }
    }
    // Swagger UI builds its "Try it out" body from the schema, and a `pattern` makes it invent a random
    // kind that the server then refuses: give it real examples to start from.
    if let Some(schema) = document
        .pointer_mut("/components/schemas/SubmitJob")
        .and_then(Value::as_object_mut)
    {
        schema.insert(
            "example".to_owned(),
            json!({"kind": "echo", "payload": {"hello": "world"}}),
        );
    }
    if let Some(kind) = document
        .pointer_mut("/components/schemas/SubmitJob/properties/kind")
        .and_then(Value::as_object_mut)
    {
        kind.insert("example".to_owned(), Value::from("echo"));
    }
    if let Some(batch) = document
        .pointer_mut("/components/schemas/SubmitBatch")
        .and_then(Value::as_object_mut)
    {
        batch.insert(
            "example".to_owned(),
            json!({"jobs": [{"kind": "echo", "payload": {"n": 1}}, {"kind": "sleep", "payload": {"ms": 1000}}]}),
        );
    }
}

/// The event stream's schema describes one event, as tools that check streams read it: an `event` named
/// `status` whose `data` is a JSON status monitor (`contentMediaType` + `contentSchema`).
fn describe_events(document: &mut Value) {
    let Some(schema) = document.pointer_mut(
        "/paths/~1v1~1jobs~1{id}~1events/get/responses/200/content/text~1event-stream/schema",
    ) else {
        return;
    };
    *schema = json!({
        "type": "object",
        "description": "One Server-Sent Event: `event: status`, and the job's monitor as JSON in `data`.",
        "required": ["event", "data"],
        "properties": {
            "event": { "type": "string", "enum": ["status"] },
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": { "$ref": "#/components/schemas/JobMonitor" }
            }
        }
    });
}

/// poem-openapi writes response header names upper-cased (`LOCATION`); HTTP does not care, but people
/// reading the document and generated clients' docs do.
fn canonical_header_names(document: &mut Value) {
    let Some(paths) = document.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    let responses = paths
        .values_mut()
        .filter_map(Value::as_object_mut)
        .flat_map(|item| item.values_mut())
        .filter_map(|operation| {
            operation
                .get_mut("responses")
                .and_then(Value::as_object_mut)
        })
        .flat_map(|responses| responses.values_mut());
    for response in responses {
        if let Some(headers) = response.get_mut("headers").and_then(Value::as_object_mut) {
            let renamed: serde_json::Map<String, Value> = std::mem::take(headers)
                .into_iter()
                .map(|(name, header)| (canonical_header_name(&name), header))
                .collect();
            *headers = renamed;
        }
    }
}

/// `RETRY-AFTER` → `Retry-After`.
fn canonical_header_name(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let lower = word.to_ascii_lowercase();
            let mut chars = lower.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect::<Vec<_>>()
        .join("-")
}
