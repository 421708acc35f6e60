//! Liveness and readiness, for load balancers and orchestrators.

use poem_openapi::payload::{Json, PlainText};
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::problem::Problem;
use super::{ApiState, ApiTags};
use crate::store;

/// Liveness and readiness.
#[derive(Debug, Clone, Object)]
#[oai(rename = "Health")]
pub struct Health {
    /// `ok` (process alive) or `ready` (database reachable and migrated).
    pub status: String,
}

pub struct HealthApi {
    pub state: ApiState,
}

#[derive(ApiResponse)]
pub enum HealthzResponse {
    /// The process is running.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

#[derive(ApiResponse)]
pub enum ReadyzResponse {
    /// The database answers and every migration is applied: send traffic here.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// The database is unreachable or not migrated yet.
    #[oai(status = 503, content_type = "application/problem+json")]
    NotReady(Json<Problem>, #[oai(header = "Retry-After")] u32),
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Is the process alive?
    ///
    /// 200 while the process runs, whatever the database is doing.
    #[oai(path = "/healthz", method = "get", operation_id = "get_health")]
    async fn get_health(&self) -> HealthzResponse {
        HealthzResponse::Ok(Json(Health {
            status: "ok".to_owned(),
        }))
    }

    /// Prometheus metrics
    ///
    /// The named series of jobdock in the Prometheus text format: jobs submitted and finished, queue depth
    /// (counted every few seconds), wait and run times, HTTP requests and their durations, database pool
    /// connections. Needs an `admin` key once the server has keys.
    #[oai(path = "/metrics", method = "get", operation_id = "get_metrics")]
    async fn get_metrics(&self) -> PlainText<String> {
        PlainText(crate::metrics::render(&self.state.pool))
    }

    /// Is the server ready for traffic?
    ///
    /// 200 when the database answers and migrations are applied, else 503.
    #[oai(path = "/readyz", method = "get", operation_id = "get_readiness")]
    async fn get_readiness(&self) -> ReadyzResponse {
        let not_ready = |detail: &str| {
            let mut problem = Problem::unavailable();
            problem.detail = Some(detail.to_owned());
            ReadyzResponse::NotReady(Json(problem), super::problem::UNAVAILABLE_RETRY_AFTER_SECS)
        };
        match store::db::is_ready(&self.state.pool).await {
            Ok(true) => ReadyzResponse::Ready(Json(Health {
                status: "ready".to_owned(),
            })),
            Ok(false) => not_ready("the database answers but migrations are not applied yet"),
            Err(err) => {
                tracing::warn!(error = %err, "readiness check failed");
                not_ready("the database is unreachable")
            }
        }
    }
}
