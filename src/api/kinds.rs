//! The kinds this deployment accepts: `GET /v1/kinds` and `GET /v1/kinds/{kind}`, so clients and forms can
//! be built from them (the payload schema, the defaults a submission gets).

use chrono::{DateTime, Utc};
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi};
use serde_json::Value;

use super::problem::{api_response, Problem};
use super::{ApiState, ApiTags};
use crate::kinds::{HandlerType, KindSpec};

pub struct KindsApi {
    pub state: ApiState,
}

/// How a kind's jobs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename = "KindHandler", rename_all = "lowercase")]
pub enum KindHandler {
    /// In jobdock itself (`echo`, `sleep`, `fail`, and kinds embedded in Rust).
    Builtin,
    /// By external workers over HTTP (`POST /v1/worker/claim`).
    External,
    /// By jobdock calling an upstream HTTP service.
    Http,
    /// By jobdock running a command.
    Exec,
}

impl From<HandlerType> for KindHandler {
    fn from(handler: HandlerType) -> Self {
        match handler {
            HandlerType::Builtin => KindHandler::Builtin,
            HandlerType::External => KindHandler::External,
            HandlerType::Http => KindHandler::Http,
            HandlerType::Exec => KindHandler::Exec,
        }
    }
}

/// A kind of job this deployment accepts, with the defaults a submission of it gets.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Kind")]
pub struct KindInfo {
    /// The name to put in a submission's `kind`.
    pub name: String,
    pub handler: KindHandler,
    /// The queue a job of this kind goes to when the submission names none.
    pub queue: String,
    /// Attempts a job of this kind gets when the submission does not say.
    pub max_attempts: i32,
    /// Seconds an attempt may run when the submission does not say.
    pub timeout_secs: i32,
    /// The JSON Schema (draft 2020-12) a payload must meet; null when the kind checks payloads itself.
    #[oai(nullable)]
    pub payload_schema: Option<Value>,
    /// Until when no job of this kind starts, because its upstream asked for air (a 429 or 503 with
    /// `Retry-After`); null when not paused.
    #[oai(nullable)]
    pub paused_until: Option<DateTime<Utc>>,
}

impl From<KindSpec> for KindInfo {
    fn from(spec: KindSpec) -> Self {
        KindInfo {
            handler: spec.handler.into(),
            queue: spec
                .queue
                .unwrap_or_else(|| crate::job::DEFAULT_QUEUE.to_owned()),
            max_attempts: spec
                .max_attempts
                .unwrap_or(crate::job::DEFAULT_MAX_ATTEMPTS),
            timeout_secs: spec
                .timeout_secs
                .unwrap_or(crate::job::DEFAULT_TIMEOUT_SECS),
            payload_schema: spec.payload_schema.map(|schema| schema.json().clone()),
            paused_until: None,
            name: spec.name,
        }
    }
}

/// Every kind this deployment accepts.
#[derive(Debug, Clone, Object)]
#[oai(rename = "KindList")]
pub struct KindList {
    pub kinds: Vec<KindInfo>,
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "ListKindsResponse::bad_request_handler")]
    pub enum ListKindsResponse {
        /// Every kind, sorted by name.
        #[oai(status = 200)]
        Ok(Json<KindList>),
    }
    id_is_path = false;
    problems {}
}

api_response! {
    #[derive(ApiResponse)]
    #[oai(bad_request_handler = "GetKindResponse::bad_request_handler")]
    pub enum GetKindResponse {
        /// The kind.
        #[oai(status = 200)]
        Ok(Json<KindInfo>),
        /// This deployment does not accept a kind of this name.
        #[oai(status = 404, content_type = "application/problem+json")]
        NotFound(Json<Problem>),
    }
    id_is_path = false;
    problems { 404 => NotFound }
}

#[OpenApi(tag = "ApiTags::Kinds")]
impl KindsApi {
    /// List the kinds
    ///
    /// The kinds of job this deployment accepts: built in, and declared in its configuration file, each
    /// with how it runs, its defaults and its payload schema.
    #[oai(path = "/v1/kinds", method = "get", operation_id = "list_kinds")]
    async fn list_kinds(&self) -> ListKindsResponse {
        let paused = match crate::store::kind_pauses::paused(&self.state.pool).await {
            Ok(paused) => paused,
            Err(err) => return Problem::from_db(&err).into(),
        };
        let kinds = self
            .state
            .registry
            .specs()
            .into_iter()
            .map(|spec| with_pause(spec.into(), &paused))
            .collect();
        ListKindsResponse::Ok(Json(KindList { kinds }))
    }

    /// Get a kind
    ///
    /// One kind: how it runs, its defaults and its payload schema. **404** when this deployment does not
    /// accept it.
    #[oai(path = "/v1/kinds/:kind", method = "get", operation_id = "get_kind")]
    async fn get_kind(
        &self,
        /// The kind's name.
        kind: Path<String>,
    ) -> GetKindResponse {
        match self.state.registry.spec(&kind.0) {
            Some(spec) => match crate::store::kind_pauses::paused(&self.state.pool).await {
                Ok(paused) => GetKindResponse::Ok(Json(with_pause(spec.into(), &paused))),
                Err(err) => Problem::from_db(&err).into(),
            },
            None => Problem::not_found(format!(
                "this deployment accepts no kind `{}`; GET /v1/kinds lists those it does",
                kind.0.replace('\0', "\u{FFFD}")
            ))
            .into(),
        }
    }
}

fn with_pause(mut kind: KindInfo, paused: &[(String, DateTime<Utc>)]) -> KindInfo {
    kind.paused_until = paused
        .iter()
        .find(|(name, _)| *name == kind.name)
        .map(|(_, until)| *until);
    kind
}
