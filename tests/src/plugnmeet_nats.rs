//! A NATS server set up as plugNmeet's, for the stand-in tests that run without plugnmeet-server: its
//! users in one account with JetStream, plugNmeet's own login exempt, and every other login sent to an
//! auth callout that this module serves the way plugnmeet-server serves it for recorders (facts read off
//! plugnmeet-server 2.4.0): the login token must be an HS256 token signed with plugNmeet's API secret,
//! issued by its API key, named `PLUGNMEET_RECORDER_AUTH`; the login then gets exactly plugNmeet's
//! recorder permissions. So a drop-in that needs more than a real recorder may do fails here too.

use crate::procs::{Proc, free_port, wait_for_port};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures::StreamExt;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::Duration;

pub const ACCOUNT: &str = "PNM";
const RECORDER_AUTH_NAME: &str = "PLUGNMEET_RECORDER_AUTH";

/// plugNmeet's subject and bucket names (its defaults).
pub const RECORDER_CHANNEL: &str = "recorderChannel";
pub const RECORDER_INFO_BUCKET: &str = "pnm-recorderInfo";
pub const TRANSCODER_JOBS: &str = "pnm-RecorderTranscoderJobs";
pub const TRANSCODER_CONSUMER: &str = "transcoderWorker";

pub struct PlugnmeetNats {
    pub proc: Proc,
    pub port: u16,
    /// plugNmeet's own login (exempt from the callout).
    server_seed: String,
    callout: tokio::task::JoinHandle<()>,
}

impl PlugnmeetNats {
    /// Starts the server and the callout; `api_key`/`api_secret` are plugNmeet's.
    pub async fn start(dir: &Path, api_key: &'static str, api_secret: &'static str) -> PlugnmeetNats {
        let dir = dir.join("plugnmeet-nats");
        std::fs::create_dir_all(&dir).unwrap();
        let server_user = nkeys::KeyPair::new_user();
        let issuer = nkeys::KeyPair::new_account();
        let port = free_port();
        let config = dir.join("nats.conf");
        std::fs::write(&config, config_text(port, &dir.join("jetstream"), &server_user.public_key(), &issuer.public_key(), None)).unwrap();
        let proc = Proc::spawn("pnm-nats", Path::new("nats-server"), &["-c", &config.to_string_lossy()], &[], &dir);
        wait_for_port(port, Duration::from_secs(20));
        let server_seed = server_user.seed().unwrap();
        let client = async_nats::ConnectOptions::with_nkey(server_seed.clone()).connect(format!("nats://127.0.0.1:{port}")).await.unwrap();
        let requests = client.subscribe("$SYS.REQ.USER.AUTH").await.unwrap();
        client.flush().await.unwrap();
        let callout = tokio::spawn(serve_callout(client, requests, issuer, api_key, api_secret));
        PlugnmeetNats { proc, port, server_seed, callout }
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// A connection as plugnmeet-server logs in (full rights in its account).
    pub async fn server_connection(&self) -> async_nats::Client {
        async_nats::ConnectOptions::with_nkey(self.server_seed.clone()).connect(self.url()).await.unwrap()
    }

    /// What plugnmeet-server makes at start: the recorder bucket, the transcoder queue and its consumer.
    pub async fn create_recorder_objects(&self) -> async_nats::jetstream::kv::Store {
        let js = async_nats::jetstream::new(self.server_connection().await);
        let bucket = self.create_bucket().await;
        let queue = js
            .create_stream(async_nats::jetstream::stream::Config {
                name: TRANSCODER_JOBS.into(),
                subjects: vec![TRANSCODER_JOBS.into()],
                retention: async_nats::jetstream::stream::RetentionPolicy::WorkQueue,
                ..Default::default()
            })
            .await
            .unwrap();
        queue
            .create_consumer(async_nats::jetstream::consumer::pull::Config {
                durable_name: Some(TRANSCODER_CONSUMER.into()),
                ack_policy: async_nats::jetstream::consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(600),
                max_deliver: 3,
                ..Default::default()
            })
            .await
            .unwrap();
        bucket
    }

    pub async fn create_bucket(&self) -> async_nats::jetstream::kv::Store {
        let js = async_nats::jetstream::new(self.server_connection().await);
        js.create_key_value(async_nats::jetstream::kv::Config { bucket: RECORDER_INFO_BUCKET.into(), history: 1, ..Default::default() })
            .await
            .unwrap()
    }
}

impl Drop for PlugnmeetNats {
    fn drop(&mut self) {
        self.callout.abort();
    }
}

/// The account set-up of plugNmeet's sample NATS configuration (connect events exported to its account,
/// an auth callout for every login but plugNmeet's own).
pub fn config_text(port: u16, store: &Path, server_user: &str, issuer: &str, xkey: Option<&str>) -> String {
    let xkey = xkey.map(|x| format!("    xkey: {x}\n")).unwrap_or_default();
    format!(
        r#"listen: "127.0.0.1:{port}"
jetstream {{ store_dir: "{store}" }}
accounts {{
  SYS {{ exports: [ {{ stream: "$SYS.ACCOUNT.{ACCOUNT}.>", accounts: [{ACCOUNT}] }} ] }}
  {ACCOUNT} {{
    jetstream: enabled
    imports: [ {{ stream: {{ account: SYS, subject: "$SYS.ACCOUNT.{ACCOUNT}.>" }} }} ]
    users: [ {{ nkey: {server_user} }} ]
  }}
}}
system_account: SYS
authorization {{
  timeout: 5
  auth_callout {{
    issuer: {issuer}
    auth_users: [ {server_user} ]
    account: {ACCOUNT}
{xkey}  }}
}}
"#,
        store = store.display(),
    )
}

async fn serve_callout(
    client: async_nats::Client,
    mut requests: async_nats::Subscriber,
    issuer: nkeys::KeyPair,
    api_key: &'static str,
    api_secret: &'static str,
) {
    while let Some(message) = requests.next().await {
        let Some(reply) = message.reply.clone() else { continue };
        let answer = answer(&message.payload, &issuer, api_key, api_secret);
        let _ = client.publish(reply, answer.into()).await;
    }
}

/// The authorization response (a JWT signed by the callout's issuer) for one authorization request.
fn answer(request: &[u8], issuer: &nkeys::KeyPair, api_key: &str, api_secret: &str) -> String {
    let claims = jwt_claims(request).unwrap_or(Value::Null);
    let user_nkey = claims["nats"]["user_nkey"].as_str().unwrap_or("").to_string();
    let server_id = claims["nats"]["server_id"]["id"].as_str().unwrap_or("").to_string();
    let token = claims["nats"]["connect_opts"]["auth_token"].as_str().unwrap_or("");
    let mut response = json!({ "type": "authorization_response", "version": 2 });
    match recorder_id(token, api_key, api_secret) {
        Ok(recorder) => {
            let user = json!({
                "aud": ACCOUNT,
                "sub": user_nkey,
                "name": recorder,
                "nats": {
                    "pub": { "allow": recorder_publish_allow() },
                    "sub": { "allow": [RECORDER_CHANNEL, "_INBOX.>"] },
                    "subs": -1, "data": -1, "payload": -1,
                    "type": "user", "version": 2,
                },
            });
            response["jwt"] = json!(sign(user, issuer));
        }
        Err(why) => response["error"] = json!(why),
    }
    sign(json!({ "aud": server_id, "sub": user_nkey, "nats": response }), issuer)
}

/// plugNmeet's recorder permissions: its bucket's keys (put, purge, direct get, info), the transcoder
/// queue (publish, and next/info/ack on its durable consumer), account info, replies.
fn recorder_publish_allow() -> Vec<String> {
    vec![
        "$JS.API.INFO".into(),
        "_INBOX.>".into(),
        format!("$JS.API.STREAM.INFO.KV_{RECORDER_INFO_BUCKET}"),
        format!("$KV.{RECORDER_INFO_BUCKET}.>"),
        format!("$JS.API.DIRECT.GET.KV_{RECORDER_INFO_BUCKET}.>"),
        TRANSCODER_JOBS.into(),
        format!("$JS.API.CONSUMER.MSG.NEXT.{TRANSCODER_JOBS}.{TRANSCODER_CONSUMER}"),
        format!("$JS.API.CONSUMER.INFO.{TRANSCODER_JOBS}.{TRANSCODER_CONSUMER}"),
        format!("$JS.ACK.{TRANSCODER_JOBS}.{TRANSCODER_CONSUMER}.>"),
    ]
}

/// plugNmeet's recorder login check: an HS256 token with the API secret, `iss` = the API key, `name` =
/// the recorder marker, `sub` = `user_id` when set, `nbf`/`exp` (when present) within a minute's leeway.
fn recorder_id(token: &str, api_key: &str, api_secret: &str) -> Result<String, &'static str> {
    let parts: Vec<&str> = token.split('.').collect();
    let [header, body, signature] = parts[..] else { return Err("not a token") };
    let header: Value = decode_part(header).ok_or("bad token header")?;
    if header["alg"] != "HS256" {
        return Err("only HS256 tokens");
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(api_secret.as_bytes()).unwrap();
    mac.update(format!("{}.{body}", parts[0]).as_bytes());
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| "bad signature encoding")?;
    mac.verify_slice(&signature).map_err(|_| "invalid signature")?;
    let claims: Value = decode_part(body).ok_or("bad token claims")?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    if claims["iss"] != api_key {
        return Err("wrong issuer");
    }
    if claims["exp"].as_i64().is_some_and(|exp| now > exp + 60) || claims["nbf"].as_i64().is_some_and(|nbf| now < nbf - 60) {
        return Err("token expired or not yet valid");
    }
    if claims["name"] != RECORDER_AUTH_NAME {
        return Err("not a recorder");
    }
    let sub = claims["sub"].as_str().unwrap_or("");
    if claims["user_id"].as_str().is_some_and(|user| !user.is_empty() && user != sub) {
        return Err("sub and user_id differ");
    }
    Ok(sub.to_string())
}

fn decode_part(part: &str) -> Option<Value> {
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(part).ok()?).ok()
}

/// The claims of an (unencrypted) NATS JWT; its signature is the server's and not checked here.
fn jwt_claims(jwt: &[u8]) -> Option<Value> {
    let text = std::str::from_utf8(jwt).ok()?;
    decode_part(text.split('.').nth(1)?)
}

/// A NATS JWT (`ed25519-nkey`) with `iss`, `iat` and `jti` filled in, signed by `issuer`.
fn sign(mut claims: Value, issuer: &nkeys::KeyPair) -> String {
    claims["iss"] = json!(issuer.public_key());
    claims["iat"] = json!(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs());
    let digest = Sha256::digest(claims.to_string().as_bytes());
    claims["jti"] = json!(hex::encode_upper(&digest[..16]));
    let header = URL_SAFE_NO_PAD.encode(json!({ "typ": "JWT", "alg": "ed25519-nkey" }).to_string());
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{body}");
    let signature = issuer.sign(signing_input.as_bytes()).unwrap();
    format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(signature))
}
