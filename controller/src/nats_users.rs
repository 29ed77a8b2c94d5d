//! `controller nats-users`: writes the nats-server users of a fleet and their passwords.

use anyhow::Context;
use fleet_protocol::ids::SafeId;
use fleet_protocol::names::FleetNames;
use fleet_protocol::nats_access::{NatsUser, Role, authorization_block};
use rand::Rng;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

pub fn write(
    names: &FleetNames,
    out: &Path,
    controller: String,
    recorders: Vec<String>,
    transcoders: Vec<String>,
    both: Vec<String>,
) -> anyhow::Result<()> {
    let roles = [(vec![controller], Role::Controller), (recorders, Role::Recorder), (transcoders, Role::Transcoder), (both, Role::Both)];
    let mut users = Vec::new();
    for (logins, role) in roles {
        for name in logins {
            // The name becomes a subject token (the node's registry key) and a file name.
            SafeId::parse(&name).map_err(|e| anyhow::anyhow!("user {name:?}: {e}"))?;
            if users.iter().any(|u: &NatsUser| u.name == name) {
                anyhow::bail!("user {name:?} is listed twice");
            }
            users.push(NatsUser { name, password: fresh_password(), role });
        }
    }
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_private(&out.join("fleet-users.conf"), &authorization_block(names, &users))?;
    for user in &users {
        write_private(&out.join(format!("{}.password", user.name)), &user.password)?;
    }
    println!("wrote {} users to {}", users.len(), out.join("fleet-users.conf").display());
    Ok(())
}

fn fresh_password() -> String {
    rand::rng().sample_iter(rand::distr::Alphanumeric).take(32).map(char::from).collect()
}

/// Secrets are created readable by their owner alone (never world-readable, even for a moment).
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}
