//! Least-privilege NATS permissions for each fleet role, derived from the configured names, and the
//! nats-server `authorization` block that gives each process its own user.
//!
//! Only the controller creates jobs, writes job records and owns the topology. A node may: pull from and
//! acknowledge its own queues, queue the transcode (or chunks) of a job it holds, read job records and
//! ask the controller to change them on its own request subject (see `job_requests`), read the node
//! registry and write its own registry key. Events are the controller's to publish. Everything else (queueing
//! a recording, creating or deleting streams, consumers and buckets, another node's key) is refused by
//! the server.

use crate::names::FleetNames;
use std::fmt::Write;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Controller,
    Recorder,
    Transcoder,
    /// A node in `both` mode: recorder and transcoder.
    Both,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Controller => "controller",
            Role::Recorder => "recorder",
            Role::Transcoder => "transcoder",
            Role::Both => "both",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        [Role::Controller, Role::Recorder, Role::Transcoder, Role::Both].into_iter().find(|r| r.as_str() == s)
    }

    fn records(self) -> bool {
        matches!(self, Role::Recorder | Role::Both)
    }

    fn transcodes(self) -> bool {
        matches!(self, Role::Transcoder | Role::Both)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

/// One process's login: `name` is the node id for nodes (its registry key).
#[derive(Debug, Clone)]
pub struct NatsUser {
    pub name: String,
    pub password: String,
    pub role: Role,
}

/// Read access to a key-value bucket: direct and stream gets, and the ordered consumers that watch and
/// list keys (created, deleted and flow-controlled by the client).
fn bucket_reads(bucket: &str, publish: &mut Vec<String>) {
    let stream = format!("KV_{bucket}");
    publish.extend([
        format!("$JS.API.STREAM.INFO.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}"),
        format!("$JS.API.DIRECT.GET.{stream}.>"),
        format!("$JS.API.STREAM.MSG.GET.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}"),
        format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
        format!("$JS.API.CONSUMER.DELETE.{stream}.>"),
        format!("$JS.FC.{stream}.>"),
    ]);
}

/// Pulling from and acknowledging one durable consumer.
fn queue_consumer(stream: &str, consumer: &str, publish: &mut Vec<String>) {
    publish.extend([
        format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
        format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ]);
}

pub fn permissions(names: &FleetNames, role: Role, node_id: &str) -> Permissions {
    if role == Role::Controller {
        // The controller creates and migrates the topology, queues every job and serves the doors
        // (plugNmeet's subjects when it shares this server): it is this account's administrator.
        return Permissions { publish: vec![">".into()], subscribe: vec![">".into()] };
    }
    let mut publish = vec!["$JS.API.INFO".to_string()];
    // Looking the topology up (never creating it).
    for stream in [&names.record_stream, &names.transcode_stream, &names.events_stream] {
        publish.push(format!("$JS.API.STREAM.INFO.{stream}"));
    }
    publish.push(format!("$JS.API.CONSUMER.INFO.{}.*", names.record_stream));
    publish.push(format!("$JS.API.CONSUMER.INFO.{}.*", names.transcode_stream));
    if role.records() {
        queue_consumer(&names.record_stream, &names.recorder_consumer, &mut publish);
        // A draining recorder asks another to take its recording over (an existing job only).
        publish.push(names.record_handover_subject.clone());
        // Before taking a redelivered job over it asks whether the recorder holding it is alive.
        publish.push(format!("{}.*.*", names.alive_prefix));
        // It asks for a progressive transcode again only once its last ask left the queue.
        publish.push(format!("$JS.API.STREAM.MSG.GET.{}", names.transcode_stream));
    }
    if role.transcodes() {
        for consumer in [&names.transcoder_consumer, &names.transcoder_gpu_consumer, &names.transcoder_files_consumer] {
            queue_consumer(&names.transcode_stream, consumer, &mut publish);
        }
    }
    // A recorder queues the transcode of the job it captured; a transcoder queues a job's chunks.
    // File jobs come only from the controller.
    publish.extend([names.transcode_subject.clone(), names.transcode_gpu_subject.clone()]);
    // Job records change only through the controller, which checks that this node holds the job.
    publish.push(names.job_request_subject(role.as_str(), node_id));
    bucket_reads(&names.jobs_bucket, &mut publish);
    publish.push(format!("$KV.{}.{node_id}", names.nodes_bucket));
    bucket_reads(&names.nodes_bucket, &mut publish);
    let mut subscribe = vec!["_INBOX.>".to_string()];
    if role.records() {
        // It answers alive probes for the jobs it captures (the answers go out as responses).
        subscribe.push(names.alive_subject(node_id, "*"));
    }
    Permissions { publish, subscribe }
}

/// The `authorization { users = [...] }` block for nats-server, one user per process. Passwords are
/// written as given: keep the file readable by the server alone.
pub fn authorization_block(names: &FleetNames, users: &[NatsUser]) -> String {
    let quote = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let list = |subjects: &[String]| subjects.iter().map(|s| quote(s)).collect::<Vec<_>>().join(", ");
    let mut out = String::from("# Generated by `controller nats-users`: one user per fleet process.\nauthorization {\n  users = [\n");
    for user in users {
        let permissions = permissions(names, user.role, &user.name);
        let _ = writeln!(
            out,
            "    {{ user: {}, password: {}, permissions: {{ publish: {{ allow: [{}] }}, subscribe: {{ allow: [{}] }}, allow_responses: true }} }}",
            quote(&user.name),
            quote(&user.password),
            list(&permissions.publish),
            list(&permissions.subscribe),
        );
    }
    out.push_str("  ]\n}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorder_may_not_queue_recordings_or_write_other_nodes() {
        let names = FleetNames::default();
        let recorder = permissions(&names, Role::Recorder, "rec-a");
        assert!(!recorder.publish.iter().any(|s| s == "fleet.record" || s == ">" || s.starts_with("$JS.API.STREAM.CREATE")));
        assert!(recorder.publish.contains(&"$KV.fleet-nodes.rec-a".to_string()));
        assert!(!recorder.publish.iter().any(|s| s == "$KV.fleet-nodes.>"));
        assert!(!recorder.publish.iter().any(|s| s.contains("transcoders")));
        assert!(!recorder.publish.iter().any(|s| s.starts_with("$KV.fleet-jobs")), "job records are the controller's to write");
        assert!(recorder.publish.contains(&"fleet.jobs.apply.recorder.rec-a".to_string()));
        assert_eq!(recorder.subscribe, ["_INBOX.>", "fleet.alive.rec-a.*"], "it answers for its own jobs only");
        let transcoder = permissions(&names, Role::Transcoder, "tx-a");
        assert!(transcoder.publish.contains(&"$JS.API.CONSUMER.MSG.NEXT.FLEET_TRANSCODE.transcoders-gpu".to_string()));
        assert!(!transcoder.publish.iter().any(|s| s.contains(".recorders")));
        assert!(!transcoder.publish.contains(&names.transcode_files_subject));
    }

    #[test]
    fn the_block_quotes_every_value() {
        let users = [NatsUser { name: "rec-a".into(), password: "p\"w".into(), role: Role::Recorder }];
        let block = authorization_block(&FleetNames::default(), &users);
        assert!(block.contains(r#"password: "p\"w""#), "{block}");
        assert!(block.contains(r#""$KV.fleet-nodes.rec-a""#));
    }
}
