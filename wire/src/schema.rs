//! The JSON Schema of every wire message, generated from the types themselves (with
//! `schemars`), so that the schema a third party implements against cannot drift from the code.
//! `docs/schema/<name>.schema.json` holds each one; `tests/schema.rs` fails when a committed
//! file differs from what the types generate (`UPDATE_SCHEMA=1` rewrites them).

use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, Schema};

use crate::agent_api::{AgentStatus, DesiredAnswer, EventAck, EventBatch, HeartbeatAck};
use crate::error::ErrorBody;
use crate::operator_api::{
    AddHost, DesiredChanged, HostAdded, HostDetail, HostList, RollbackRequest, SetTarget,
};
use crate::rollout::{ReleaseManifest, RolloutList, RolloutStatus, StartRollout};

/// One message's schema, under the name of its file in `docs/schema/`.
#[derive(Debug, Clone)]
pub struct MessageSchema {
    /// The file's stem, e.g. `event-batch`.
    pub name: &'static str,
    /// What the message is, for the schema's title.
    pub role: &'static str,
    /// The schema (draft 2020-12).
    pub schema: Schema,
}

/// Every message of protocol v1, agent endpoints first.
pub fn messages() -> Vec<MessageSchema> {
    vec![
        one::<DesiredAnswer>("desired-answer", "answer to GET desired (long-poll)"),
        one::<EventBatch>("event-batch", "body of POST events"),
        one::<EventAck>("event-ack", "answer to POST events"),
        one::<AgentStatus>(
            "agent-status",
            "body of POST heartbeat; also the agent's local status",
        ),
        one::<HeartbeatAck>("heartbeat-ack", "answer to POST heartbeat"),
        one::<ErrorBody>("error-body", "body of every error answer"),
        one::<AddHost>("add-host", "body of POST /v1/admin/hosts"),
        one::<HostAdded>("host-added", "answer to POST /v1/admin/hosts"),
        one::<SetTarget>("set-target", "body of POST /v1/admin/targets"),
        one::<DesiredChanged>("desired-changed", "answer to operator commands"),
        one::<RollbackRequest>(
            "rollback-request",
            "body of POST /v1/admin/hosts/{host}/rollback",
        ),
        one::<HostList>("host-list", "answer to GET /v1/admin/hosts"),
        one::<HostDetail>("host-detail", "answer to GET /v1/admin/hosts/{host}"),
        one::<ReleaseManifest>(
            "release-manifest",
            "a release: fleetnode's shape or Cachix Deploy's deploy.json",
        ),
        one::<StartRollout>("start-rollout", "body of POST /v1/admin/rollouts"),
        one::<RolloutStatus>(
            "rollout-status",
            "answer to GET /v1/admin/rollouts/{id} and every rollout command",
        ),
        one::<RolloutList>("rollout-list", "answer to GET /v1/admin/rollouts"),
    ]
}

/// A message's schema as its committed file holds it: pretty JSON and a final newline.
pub fn render(schema: &Schema) -> String {
    // Serialising a schema (a JSON value) cannot fail.
    serde_json::to_string_pretty(schema).unwrap_or_default() + "\n"
}

fn one<T: JsonSchema>(name: &'static str, role: &'static str) -> MessageSchema {
    let generator = SchemaSettings::draft2020_12().into_generator();
    let mut schema = generator.into_root_schema_for::<T>();
    schema.insert(
        "title".into(),
        format!("fleetnode protocol v1: {name} ({role})").into(),
    );
    MessageSchema { name, role, schema }
}
