//! A small client of the controller's REST API for tests.

use serde_json::Value;
use std::time::Duration;

pub struct Api {
    pub base: String,
    http: reqwest::Client,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// `WWW-Authenticate`, when the reply has one.
    pub www_authenticate: Option<String>,
}

impl Api {
    pub fn new(port: u16) -> Self {
        // No pooled connections: a server may close one after refusing a request early (413), and a
        // reused closed connection would make the next request fail for reasons the test is not about.
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).build().expect("http client");
        Self { base: format!("http://127.0.0.1:{port}"), http }
    }

    /// A client of a controller serving HTTPS with a certificate of the CA in `ca_pem`.
    pub fn https(port: u16, ca_pem: &[u8]) -> Self {
        let ca = reqwest::Certificate::from_pem(ca_pem).expect("a PEM CA certificate");
        let http = reqwest::Client::builder().pool_max_idle_per_host(0).add_root_certificate(ca).build().expect("http client");
        Self { base: format!("https://127.0.0.1:{port}"), http }
    }

    pub async fn send(&self, method: &str, path: &str, key: Option<&str>, body: Option<&str>) -> Reply {
        let mut request = self.http.request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_string());
        }
        let response = request.send().await.expect("controller answers");
        let status = response.status().as_u16();
        let www_authenticate = response.headers().get("www-authenticate").and_then(|v| v.to_str().ok()).map(String::from);
        let text = response.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Reply { status, body, www_authenticate }
    }

    /// Panics unless `value` validates against schema `name` of the document this controller serves, with
    /// every object closed (a field the document does not list fails).
    pub async fn assert_documented(&self, name: &str, value: &Value) {
        let document = self.send("GET", "/v1/openapi.json", None, None).await.body;
        let validator =
            jsonschema::validator_for(&fleet_controller::openapi::strict_schema(&document, name)).expect("the document's schemas compile");
        let errors: Vec<String> = validator.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{name} does not match the served document: {errors:?}\n{value}");
    }

    /// POST /v1/recordings with the test key; panics unless 201. Returns the job id.
    pub async fn start(&self, body: &str) -> String {
        let reply = self.send("POST", "/v1/recordings", Some(crate::API_KEY), Some(body)).await;
        assert_eq!(reply.status, 201, "start failed: {}", reply.body);
        reply.body["id"].as_str().unwrap().to_string()
    }

    pub async fn stop(&self, id: &str) -> Reply {
        self.send("POST", &format!("/v1/recordings/{id}/stop"), Some(crate::API_KEY), None).await
    }

    pub async fn get(&self, id: &str) -> Value {
        let reply = self.send("GET", &format!("/v1/recordings/{id}"), Some(crate::API_KEY), None).await;
        assert_eq!(reply.status, 200, "get failed: {}", reply.body);
        reply.body
    }

    /// Polls until the job is in one of `states`; panics with the record after `timeout`.
    pub async fn wait_for_state(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        crate::wait::until(&format!("job {id} in {states:?}"), timeout, || async {
            let reply = self.send("GET", &format!("/v1/recordings/{id}"), Some(crate::API_KEY), None).await;
            let wanted = reply.status == 200 && states.contains(&reply.body["state"].as_str().unwrap_or(""));
            if wanted { Ok(reply.body) } else { Err(reply.body.to_string()) }
        })
        .await
    }
}
