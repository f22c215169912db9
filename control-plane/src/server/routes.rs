//! The route table.

use std::sync::Arc;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{delete, get, post};

use super::app::App;
use super::{admin, agent, http, middleware, operators, rollouts};

/// Every route with its middleware: [`middleware::frame`] (metrics, protocol version,
/// readiness) around all of them, and the audit log of operator actions ([`middleware::record`]) around the
/// operator routes only, so a waiting long-poll carries no audit state.
pub fn router(app: Arc<App>) -> Router {
    let agent = Router::new()
        .route("/v1/agent/hosts/{host}/desired", get(agent::desired))
        .route("/v1/agent/hosts/{host}/events", post(agent::events))
        .route("/v1/agent/hosts/{host}/heartbeat", post(agent::heartbeat))
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz));
    let operator = Router::new()
        .route(
            "/v1/admin/hosts",
            post(admin::add_host).get(admin::list_hosts),
        )
        .route(
            "/v1/admin/hosts/{host}",
            get(admin::host_detail).merge(delete(admin::revoke_host)),
        )
        .route("/v1/admin/targets", post(admin::set_target))
        .route("/v1/admin/hosts/{host}/rollback", post(admin::rollback))
        .route("/v1/admin/hosts/{host}/pause", post(admin::pause))
        .route("/v1/admin/hosts/{host}/resume", post(admin::resume))
        .route(
            "/v1/admin/rollouts",
            post(rollouts::start).get(rollouts::list),
        )
        .route("/v1/admin/rollouts/{id}", get(rollouts::show))
        .route("/v1/admin/rollouts/{id}/pause", post(rollouts::pause))
        .route("/v1/admin/rollouts/{id}/resume", post(rollouts::resume))
        .route("/v1/admin/rollouts/{id}/abort", post(rollouts::abort))
        .route("/v1/admin/rollouts/{id}/rollback", post(rollouts::rollback))
        .route("/v1/admin/rollouts/{id}/approve", post(rollouts::approve))
        .route(
            "/v1/admin/operators",
            post(operators::add_operator).get(operators::list_operators),
        )
        .route(
            "/v1/admin/operators/{name}",
            delete(operators::revoke_operator),
        )
        .route("/v1/admin/audit", get(operators::audit))
        .route_layer(from_fn_with_state(app.clone(), middleware::record));
    agent
        .merge(operator)
        .merge(crate::console::router())
        .fallback(http::not_found)
        .method_not_allowed_fallback(http::method_not_allowed)
        .layer(from_fn_with_state(app.clone(), middleware::frame))
        .with_state(app)
}
