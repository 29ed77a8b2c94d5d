//! `fleetctl`: the fleet's API from a shell. Start, stop, get and list recordings, list the nodes,
//! and watch a recording to its end with a progress bar for its transcode. `fleetctl completions SHELL`
//! and `fleetctl man` print shell completions and the man page, both generated from this definition.

use anyhow::{Context, bail};
use clap::{CommandFactory, Parser, Subcommand};
use serde_json::Value;
use std::io::Write;
use std::time::Duration;

#[derive(Parser)]
#[command(name = "fleetctl", version, about = "Operate a LiveKit recording fleet through its controller's API")]
struct Cli {
    /// The controller's address.
    #[arg(long, env = "FLEET_URL", default_value = "http://127.0.0.1:8080", global = true)]
    url: String,
    /// An API key (sent as a bearer token); prefer the environment to the command line, which `ps` shows.
    #[arg(long, env = "FLEET_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    /// Print the API's JSON as it is, instead of a summary.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start recording a room; prints the new recording's id.
    Start {
        /// The room to record.
        #[arg(long, required_unless_present = "request")]
        room: Option<String>,
        /// The whole request as JSON (see the API's openapi.json), or `-` to read it from standard input.
        #[arg(long, conflicts_with = "room")]
        request: Option<String>,
        /// Retries with the same key start one recording, not two.
        #[arg(long)]
        idempotency_key: Option<String>,
    },
    /// Stop a recording; its MP4 follows.
    Stop { id: String },
    /// One recording's record.
    Get { id: String },
    /// Recordings, newest first.
    List {
        #[arg(long)]
        room: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// The recorder and transcoder nodes alive now.
    Nodes,
    /// Follow a recording until it ends (complete, failed or aborted), with the transcode's progress.
    Watch {
        id: String,
        /// How often to ask, in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Shell completions on standard output.
    Completions { shell: clap_complete::Shell },
    /// The man page (roff) on standard output.
    Man,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match run(Cli::parse()).await {
        // Output cut short by its reader (`fleetctl man | head`) is not a failure.
        Err(err) if err.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) => Ok(()),
        result => result,
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let api = Api {
        http: reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?,
        url: cli.url.trim_end_matches('/').into(),
        key: cli.api_key,
    };
    let out = &mut std::io::stdout();
    match cli.command {
        Command::Start { room, request, idempotency_key } => {
            let body = match (room, request) {
                (Some(room), _) => serde_json::json!({ "room": room }),
                (None, Some(request)) => request_json(&request)?,
                (None, None) => unreachable!("clap requires one"),
            };
            let record = api.send(reqwest::Method::POST, "/v1/recordings", &[], Some(body), idempotency_key.as_deref()).await?;
            if cli.json { print_json(out, &record)? } else { writeln!(out, "{}\t{}", text(&record["id"]), text(&record["state"]))? }
        }
        Command::Stop { id } => {
            let record = api.send(reqwest::Method::POST, &format!("/v1/recordings/{id}/stop"), &[], None, None).await?;
            if cli.json { print_json(out, &record)? } else { writeln!(out, "{}\t{}", text(&record["id"]), text(&record["state"]))? }
        }
        Command::Get { id } => print_json(out, &api.get(&format!("/v1/recordings/{id}")).await?)?,
        Command::List { room, limit } => {
            let mut query = vec![("limit", limit.to_string())];
            query.extend(room.map(|room| ("room", room)));
            let page = api.send(reqwest::Method::GET, "/v1/recordings", &query, None, None).await?;
            if cli.json {
                print_json(out, &page)?;
            } else {
                writeln!(out, "ID\tROOM\tSTATE\tCREATED_MS")?;
                for r in page["recordings"].as_array().into_iter().flatten() {
                    writeln!(out, "{}\t{}\t{}\t{}", text(&r["id"]), text(&r["request"]["room"]), text(&r["state"]), text(&r["created_at_ms"]))?;
                }
            }
        }
        Command::Nodes => {
            let nodes = api.get("/v1/nodes").await?;
            if cli.json {
                print_json(out, &nodes)?;
            } else {
                writeln!(out, "ID\tROLE\tMODE\tJOBS\tSLOTS\tCPU\tENCODERS")?;
                for n in nodes["nodes"].as_array().into_iter().flatten() {
                    let jobs = n["running_jobs"].as_array().map_or(0, Vec::len);
                    let cpu = n["cpu_load"].as_f64().unwrap_or(0.0) * 100.0;
                    let encoders: Vec<&str> = n["encoders"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{jobs}\t{}\t{cpu:.0}%\t{}",
                        text(&n["id"]),
                        text(&n["role"]),
                        text(&n["mode"]),
                        text(&n["slots"]),
                        encoders.join(",")
                    )?;
                }
            }
        }
        Command::Watch { id, interval_ms } => {
            let record = watch(&api, &id, Duration::from_millis(interval_ms.max(100))).await?;
            if cli.json {
                print_json(out, &record)?
            } else {
                writeln!(out, "{}\t{}\t{}", text(&record["id"]), text(&record["state"]), text(&record["output"]["location"]))?
            }
            if record["state"] != "complete" {
                bail!("recording {id} ended {}: {}", text(&record["state"]), text(&record["error"]));
            }
        }
        Command::Completions { shell } => clap_complete::generate(shell, &mut Cli::command(), "fleetctl", out),
        Command::Man => clap_mangen::Man::new(Cli::command()).render(out)?,
    }
    Ok(())
}

/// Polls a recording until it ends: a spinner while it records, a bar for the transcode's percentage.
async fn watch(api: &Api, id: &str, interval: Duration) -> anyhow::Result<Value> {
    let bar = indicatif::ProgressBar::new(100);
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} {msg:24} [{bar:40}] {pos:>3}%").expect("a valid template"));
    loop {
        let record = api.get(&format!("/v1/recordings/{id}")).await?;
        let state = text(&record["state"]);
        let percent = record["progress"]["percent"].as_f64().unwrap_or(0.0);
        let speed = record["progress"]["speed"].as_f64();
        bar.set_position(if state == "complete" { 100 } else { percent.round() as u64 });
        bar.set_message(match speed {
            Some(speed) if state == "transcoding" => format!("{state} at {speed:.1}x"),
            _ => state.clone(),
        });
        bar.tick();
        if matches!(state.as_str(), "complete" | "failed" | "aborted") {
            bar.finish_and_clear();
            return Ok(record);
        }
        tokio::time::sleep(interval).await;
    }
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: Option<String>,
}

impl Api {
    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(reqwest::Method::GET, path, &[], None, None).await
    }

    /// Sends a request (`query` encoded by reqwest); a status of 400 and up is an error carrying the API's reason.
    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
        idempotency_key: Option<&str>,
    ) -> anyhow::Result<Value> {
        let mut request = self.http.request(method, format!("{}{path}", self.url)).query(query);
        if let Some(key) = &self.key {
            request = request.bearer_auth(key);
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.with_context(|| format!("reaching the controller at {}", self.url))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_client_error() || status.is_server_error() {
            let reason = value["error"]["message"].as_str().or(value["error"].as_str()).map(str::to_string).unwrap_or_else(|| value.to_string());
            bail!("{status}: {reason}");
        }
        Ok(value)
    }
}

/// A request given inline, or `-` for standard input.
fn request_json(request: &str) -> anyhow::Result<Value> {
    let text = if request == "-" {
        std::io::read_to_string(std::io::stdin()).context("reading the request from standard input")?
    } else {
        request.to_string()
    };
    serde_json::from_str(&text).context("the request is not JSON")
}

fn print_json(out: &mut impl Write, value: &Value) -> anyhow::Result<()> {
    writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    Ok(())
}

/// A field as plain text: strings unquoted, absent fields as `-`.
fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
