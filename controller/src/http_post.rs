//! The controller's outgoing POSTs (fleet webhooks, LiveKit-format webhooks, plugNmeet reports) fail the
//! same two ways; one type for them, and one place that turns a non-2xx answer into an error.

#[derive(Debug, thiserror::Error)]
pub enum PostFailed {
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
    #[error("answered {0}")]
    Status(reqwest::StatusCode),
}

/// Sends `request`; anything but a 2xx answer is an error.
pub async fn send(request: reqwest::RequestBuilder) -> Result<(), PostFailed> {
    let response = request.send().await.map_err(PostFailed::Transport)?;
    if response.status().is_success() { Ok(()) } else { Err(PostFailed::Status(response.status())) }
}
