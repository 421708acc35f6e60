//! JSON responses written straight from the value with serde, under the schema poem-openapi derives for it.
//!
//! poem-openapi's `Json<T>` first builds a `serde_json::Value` tree of the response (an ordered map per
//! object, a string per date) and then serializes that tree: for a batch of 1,000 status monitors that was
//! about a third of the server's CPU. [`JsonBody`] serializes the value itself. Its type must serialize
//! exactly as its `ToJSON` does; each type used here has a test that compares the two.

use poem::{IntoResponse, Response};
use poem_openapi::payload::Payload;
use poem_openapi::registry::{MetaSchemaRef, Registry};
use poem_openapi::types::Type;
use serde::Serialize;

/// A JSON response body; see the module docs.
#[derive(Debug, Clone)]
pub struct JsonBody<T>(pub T);

/// As poem-openapi's `Json`, so the document and the headers are unchanged.
const CONTENT_TYPE: &str = "application/json; charset=utf-8";

impl<T: Type> Payload for JsonBody<T> {
    const CONTENT_TYPE: &'static str = CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Serialize + Send> IntoResponse for JsonBody<T> {
    fn into_response(self) -> Response {
        match serde_json::to_vec(&self.0) {
            Ok(body) => Response::builder().content_type(CONTENT_TYPE).body(body),
            // Only a map with non-string keys fails, and the types used here have none.
            Err(err) => {
                tracing::error!(error = %err, "a response could not be serialized");
                Response::builder()
                    .status(poem::http::StatusCode::INTERNAL_SERVER_ERROR)
                    .finish()
            }
        }
    }
}

/// Dates as poem-openapi writes them (`to_rfc3339`: `2026-12-04T18:02:46.123456+00:00`).
pub fn rfc3339<S: serde::Serializer>(
    at: &chrono::DateTime<chrono::Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339())
}

/// [`rfc3339`] for an optional date (`null` when absent).
pub fn rfc3339_or_null<S: serde::Serializer>(
    at: &Option<chrono::DateTime<chrono::Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match at {
        Some(at) => rfc3339(at, serializer),
        None => serializer.serialize_none(),
    }
}
