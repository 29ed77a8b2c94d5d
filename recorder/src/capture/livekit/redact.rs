//! Reasons for failed connections, as they may be shown: livekit-server's 401 answers quote the token
//! they refused, which must reach neither a log nor the job.

use livekit_signaling::SignalError;

pub fn describe_connect_error(err: &SignalError) -> String {
    let text = match err {
        SignalError::Client(status, body) | SignalError::Server(status, body) => format!("the server answered {} {}", status.as_u16(), body.trim()),
        other => other.to_string(),
    };
    // livekit-server's 401 answers quote the token they refused: it must not reach logs or the job.
    redact_tokens(&text)
}

/// Replaces every JWT (`eyJ…` header, three base64url parts) in `text` with `<token>`.
fn redact_tokens(text: &str) -> String {
    let is_jwt_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("eyJ") {
        out.push_str(&rest[..at]);
        let candidate = &rest[at..];
        let len = candidate.find(|c: char| !is_jwt_char(c)).unwrap_or(candidate.len());
        if candidate[..len].split('.').filter(|part| !part.is_empty()).count() >= 3 {
            out.push_str("<token>");
        } else {
            out.push_str(&candidate[..len]);
        }
        rest = &candidate[len..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::redact_tokens;

    #[test]
    fn tokens_in_server_answers_are_redacted() {
        let answer = "the server answered 401 invalid token: eyJ0eXAiOiJKV1Qi.eyJleHAiOjE3OTY0.c2lnbmF0dXJl, error: signature is invalid";
        assert_eq!(redact_tokens(answer), "the server answered 401 invalid token: <token>, error: signature is invalid");
        assert_eq!(redact_tokens("no eyJ here"), "no eyJ here");
        assert_eq!(redact_tokens("404 requested room does not exist"), "404 requested room does not exist");
    }
}
