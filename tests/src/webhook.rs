//! A webhook receiver that verifies signatures as a user's server would (written from the documented
//! scheme, not from the controller's code).

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;
use std::sync::{Arc, Mutex};

#[derive(Clone, Debug)]
pub struct Delivery {
    pub event: String,
    pub delivery_id: String,
    pub body: Value,
    pub signature_ok: bool,
}

#[derive(Clone, Default)]
pub struct Receiver {
    pub deliveries: Arc<Mutex<Vec<Delivery>>>,
    pub port: u16,
}

impl Receiver {
    pub async fn start(secret: &'static str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = Receiver { deliveries: Arc::default(), port };
        let state = (receiver.deliveries.clone(), secret);
        let app = Router::new().route("/hook", post(receive)).with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        receiver
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    pub fn events_for(&self, job_id: &str) -> Vec<Delivery> {
        self.deliveries.lock().unwrap().iter().filter(|d| d.body["job_id"] == job_id).cloned().collect()
    }
}

async fn receive(State((deliveries, secret)): State<(Arc<Mutex<Vec<Delivery>>>, &'static str)>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let timestamp = header("x-fleet-timestamp");
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&body);
    let expected = format!("v1={}", hex::encode(mac.finalize().into_bytes()));
    let fresh = timestamp.parse::<u64>().is_ok_and(|t| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        now.abs_diff(t) < 300
    });
    deliveries.lock().unwrap().push(Delivery {
        event: header("x-fleet-event"),
        delivery_id: header("x-fleet-delivery"),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        signature_ok: fresh && header("x-fleet-signature") == expected,
    });
    StatusCode::NO_CONTENT
}
