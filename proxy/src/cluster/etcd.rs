//! A small etcd v3 client over etcd's JSON gateway (`/v3/kv/range`, `/v3/kv/txn`,
//! `/v3/kv/put`, `/v3/lease/grant`, `/v3/lease/keepalive`, `/v3/watch`, `/v3/auth/authenticate`):
//! keys and values travel base64-encoded, 64-bit integers as strings, and zero values are
//! left out of answers. Only what sitesteer needs is here.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::{json, Value};
use sitesteer_config::Cluster as ClusterConfig;
use tokio::sync::Mutex;

use super::transport::{chain, CallError, ConnTask, Transport};

/// Largest watch message buffered while incomplete.
const MAX_WATCH_MESSAGE: usize = 8 * 1024 * 1024;
/// Bound of one attempt of a call. A request in flight when the etcd leader dies is never
/// answered by the member that took it, so it is sent again after this (to the next member).
const ATTEMPT: Duration = Duration::from_millis(1500);
/// Pause before an attempt is repeated.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// gRPC's UNAVAILABLE: "leader changed", "no leader", "timed out": worth another attempt.
const UNAVAILABLE: i64 = 14;

/// Why an etcd call failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum EtcdError {
    /// No endpoint could be reached; nothing was sent.
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    /// The request may have reached etcd, but no answer came back.
    #[error("etcd did not answer: {0}")]
    NoAnswer(String),
    /// etcd answered with an error.
    #[error("etcd refused the request: {message} (code {code})")]
    Refused {
        /// The gRPC status code.
        code: i64,
        /// etcd's message.
        message: String,
    },
    /// etcd's answer made no sense.
    #[error("etcd's answer is not understood: {0}")]
    Garbled(String),
}

impl From<CallError> for EtcdError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Connect(m) => Self::Unreachable(m),
            CallError::Lost(m) => Self::NoAnswer(m),
        }
    }
}

/// One key and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Kv {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// The store revision of the key's last change.
    pub mod_revision: i64,
}

/// The outcome of a compare-and-put.
#[derive(Debug)]
pub(crate) enum PutIf {
    /// Stored at this revision.
    Stored(i64),
    /// The key had changed: here is what it holds now (`None`: it does not exist).
    Conflict(Option<Kv>),
}

/// One change seen by a watch.
#[derive(Clone, Debug)]
pub(crate) struct WatchEvent {
    /// The key was deleted (`kv.value` is empty).
    pub deleted: bool,
    /// The key as changed.
    pub kv: Kv,
}

/// One message of a watch.
#[derive(Debug, Default)]
pub(crate) struct WatchBatch {
    /// The changes, in revision order.
    pub events: Vec<WatchEvent>,
    /// The watch was canceled by etcd (for example, its start revision was compacted).
    pub canceled: bool,
    /// Set when the start revision was compacted away.
    pub compact_revision: i64,
}

/// A running watch; dropping it closes its connection.
pub(crate) struct Watch {
    body: Incoming,
    buf: Vec<u8>,
    _conn: ConnTask,
}

/// The client.
pub(crate) struct Etcd {
    transport: Transport,
    credentials: Option<(String, String)>,
    token: Mutex<Option<String>>,
    timeout: Duration,
}

/// A 64-bit integer of the gateway's JSON (a string or a number; absent is 0).
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

fn kv_of(v: &Value) -> Result<Kv, EtcdError> {
    let decode = |field: &str| -> Result<Vec<u8>, EtcdError> {
        match v.get(field).and_then(Value::as_str) {
            None => Ok(Vec::new()),
            Some(s) => B64
                .decode(s)
                .map_err(|e| EtcdError::Garbled(format!("{field} is not base64: {e}"))),
        }
    };
    Ok(Kv {
        key: String::from_utf8_lossy(&decode("key")?).into_owned(),
        value: decode("value")?,
        mod_revision: int(&v["mod_revision"]),
    })
}

fn kvs_of(v: &Value) -> Result<Vec<Kv>, EtcdError> {
    v.get("kvs")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(kv_of).collect())
        .unwrap_or_else(|| Ok(Vec::new()))
}

/// The end of the key range that holds every key starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn refusal(v: &Value, status: u16) -> EtcdError {
    let message = v
        .get("message")
        .or_else(|| v.get("error"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("HTTP {status}"));
    EtcdError::Refused {
        code: int(&v["code"]),
        message,
    }
}

/// True when etcd refused a request for want of a valid token.
fn needs_token(e: &EtcdError) -> bool {
    matches!(e, EtcdError::Refused { code, message } if *code == 16 || message.contains("token") || message.contains("user name is empty"))
}

impl Etcd {
    /// A client for the endpoints of `config`; `timeout` bounds each call (attempts
    /// included) and `connect` each connection attempt. TLS files and the password file are
    /// read now.
    pub(crate) fn new(
        config: &ClusterConfig,
        timeout: Duration,
        connect: Duration,
    ) -> Result<Self, String> {
        let transport = Transport::new(config, connect)?;
        let credentials = match (&config.username, &config.password_file) {
            (Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file).map_err(|e| {
                    format!("cannot read cluster.password_file {}: {e}", file.display())
                })?;
                Some((
                    user.clone(),
                    password.trim_end_matches(['\r', '\n']).to_string(),
                ))
            }
            _ => None,
        };
        Ok(Self {
            transport,
            credentials,
            token: Mutex::new(None),
            timeout,
        })
    }

    /// Starts the next calls on the next endpoint (after a failure on the current one).
    pub(crate) fn rotate(&self) {
        self.transport.rotate();
    }

    /// The endpoint URLs.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.transport.urls()
    }

    async fn authenticate(&self) -> Result<Option<String>, EtcdError> {
        let Some((name, password)) = &self.credentials else {
            return Ok(None);
        };
        let body = json!({"name": name, "password": password}).to_string();
        let (status, bytes) = self
            .transport
            .post("/v3/auth/authenticate", Bytes::from(body), &[], ATTEMPT)
            .await?;
        let v: Value = serde_json::from_slice(&bytes)
            .map_err(|e| EtcdError::Garbled(format!("authenticate: {e}")))?;
        if status != 200 {
            return Err(refusal(&v, status));
        }
        let token = v
            .get("token")
            .and_then(Value::as_str)
            .ok_or_else(|| EtcdError::Garbled("authenticate answered no token".into()))?
            .to_string();
        *self.token.lock().await = Some(token.clone());
        Ok(Some(token))
    }

    async fn auth_headers(&self) -> Result<Vec<(&'static str, String)>, EtcdError> {
        if self.credentials.is_none() {
            return Ok(Vec::new());
        }
        let cached = self.token.lock().await.clone();
        let token = match cached {
            Some(t) => Some(t),
            None => self.authenticate().await?,
        };
        Ok(token
            .map(|t| vec![("authorization", t)])
            .unwrap_or_default())
    }

    /// POSTs a JSON request and returns the JSON answer. Within the call's time, an attempt
    /// that gets no answer or etcd's UNAVAILABLE (a leader election) is repeated, on the next
    /// member after no answer; an expired token is renewed once. Every request sitesteer
    /// makes is safe to repeat: a compare-and-put that was applied fails its compare the
    /// second time, and the change is then redone on the fresh value.
    async fn call(&self, path: &str, body: Value) -> Result<Value, EtcdError> {
        let body = Bytes::from(body.to_string());
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut renewed = false;
        let mut last: Option<EtcdError> = None;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(last.unwrap_or_else(|| {
                    EtcdError::NoAnswer(format!("no answer within {:?}", self.timeout))
                }));
            }
            let headers = self.auth_headers().await?;
            let sent = self
                .transport
                .post(path, body.clone(), &headers, left.min(ATTEMPT))
                .await;
            let (status, bytes) = match sent {
                Ok(answer) => answer,
                // Nothing reached etcd this time; an earlier attempt may have.
                Err(CallError::Connect(m)) => {
                    return Err(match last {
                        Some(EtcdError::NoAnswer(earlier)) => {
                            EtcdError::NoAnswer(format!("{earlier}; then {m}"))
                        }
                        _ => EtcdError::Unreachable(m),
                    })
                }
                Err(CallError::Lost(m)) => {
                    tracing::debug!(path, error = %m, "etcd attempt got no answer; trying the next member");
                    self.transport.rotate();
                    last = Some(EtcdError::NoAnswer(m));
                    tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                    continue;
                }
            };
            let v: Value = serde_json::from_slice(&bytes)
                .map_err(|e| EtcdError::Garbled(format!("{path}: {e}")))?;
            if status == 200 && v.get("error").is_none() {
                return Ok(v);
            }
            let err = refusal(&v, status);
            if self.credentials.is_some() && !renewed && needs_token(&err) {
                renewed = true;
                *self.token.lock().await = None;
                continue;
            }
            if matches!(err, EtcdError::Refused { code, .. } if code == UNAVAILABLE) {
                tracing::debug!(path, error = %err, "etcd is electing a leader; trying again");
                last = Some(err);
                tokio::time::sleep(RETRY_PAUSE.min(left)).await;
                continue;
            }
            return Err(err);
        }
    }

    /// The key `key` (if it exists) and the store's current revision.
    pub(crate) async fn get(&self, key: &str) -> Result<(Option<Kv>, i64), EtcdError> {
        let v = self
            .call("/v3/kv/range", json!({"key": b64(key.as_bytes())}))
            .await?;
        let kv = kvs_of(&v)?.into_iter().next();
        Ok((kv, int(&v["header"]["revision"])))
    }

    /// Every key under `prefix`.
    pub(crate) async fn list(&self, prefix: &str) -> Result<Vec<Kv>, EtcdError> {
        let v = self
            .call(
                "/v3/kv/range",
                json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}),
            )
            .await?;
        kvs_of(&v)
    }

    /// Stores `value` under `key` only if the key's last change is `mod_revision` (0: the
    /// key does not exist). On a mismatch, answers what the key holds now.
    pub(crate) async fn put_if(
        &self,
        key: &str,
        value: &[u8],
        mod_revision: i64,
    ) -> Result<PutIf, EtcdError> {
        let k = b64(key.as_bytes());
        let v = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision.to_string()}],
                    "success": [{"request_put": {"key": k, "value": b64(value)}}],
                    "failure": [{"request_range": {"key": k}}],
                }),
            )
            .await?;
        if v.get("succeeded").and_then(Value::as_bool) == Some(true) {
            return Ok(PutIf::Stored(int(&v["header"]["revision"])));
        }
        let range = v["responses"]
            .as_array()
            .and_then(|r| r.first())
            .map(|r| r["response_range"].clone())
            .unwrap_or(Value::Null);
        Ok(PutIf::Conflict(kvs_of(&range)?.into_iter().next()))
    }

    /// Stores `value` under `key`, attached to `lease` (0: none).
    pub(crate) async fn put(&self, key: &str, value: &[u8], lease: i64) -> Result<i64, EtcdError> {
        let mut body = json!({"key": b64(key.as_bytes()), "value": b64(value)});
        if lease != 0 {
            body["lease"] = json!(lease.to_string());
        }
        let v = self.call("/v3/kv/put", body).await?;
        Ok(int(&v["header"]["revision"]))
    }

    /// A new lease of `ttl`; returns its id.
    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let v = self
            .call(
                "/v3/lease/grant",
                json!({"TTL": ttl.as_secs().max(1).to_string()}),
            )
            .await?;
        let id = int(&v["ID"]);
        if id == 0 {
            return Err(EtcdError::Garbled(format!(
                "lease grant answered no ID: {v}"
            )));
        }
        Ok(id)
    }

    /// Renews lease `id`; returns its remaining TTL in seconds (0: the lease is gone).
    pub(crate) async fn keep_alive(&self, id: i64) -> Result<i64, EtcdError> {
        let v = self
            .call("/v3/lease/keepalive", json!({"ID": id.to_string()}))
            .await?;
        Ok(int(&v["result"]["TTL"]))
    }

    /// Watches `key` from `start_revision` on.
    pub(crate) async fn watch(&self, key: &str, start_revision: i64) -> Result<Watch, EtcdError> {
        let headers = self.auth_headers().await?;
        let body = json!({"create_request": {"key": b64(key.as_bytes()), "start_revision": start_revision.to_string()}});
        let (status, body, conn) = self
            .transport
            .stream(
                "/v3/watch",
                Bytes::from(body.to_string()),
                &headers,
                ATTEMPT,
            )
            .await?;
        let mut watch = Watch {
            body,
            buf: Vec::new(),
            _conn: conn,
        };
        if status != 200 {
            let v = watch.next_value().await.unwrap_or(Value::Null);
            let err = refusal(&v, status);
            if needs_token(&err) {
                *self.token.lock().await = None;
            }
            return Err(err);
        }
        Ok(watch)
    }
}

impl Watch {
    /// The next JSON value of the stream.
    async fn next_value(&mut self) -> Result<Value, EtcdError> {
        loop {
            let mut values = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            match values.next() {
                Some(Ok(v)) => {
                    let used = values.byte_offset();
                    self.buf.drain(..used);
                    return Ok(v);
                }
                Some(Err(e)) if !e.is_eof() => {
                    return Err(EtcdError::Garbled(format!("watch stream: {e}")));
                }
                _ => {}
            }
            if self.buf.len() > MAX_WATCH_MESSAGE {
                return Err(EtcdError::Garbled("watch message too large".into()));
            }
            match self.body.frame().await {
                None => return Err(EtcdError::NoAnswer("the watch stream ended".into())),
                Some(Err(e)) => {
                    return Err(EtcdError::NoAnswer(format!("watch stream: {}", chain(&e))))
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next message: changes, or a cancellation.
    pub(crate) async fn next(&mut self) -> Result<WatchBatch, EtcdError> {
        let v = self.next_value().await?;
        if v.get("error").is_some() {
            return Err(refusal(&v["error"], 200));
        }
        let r = &v["result"];
        let mut batch = WatchBatch {
            canceled: r["canceled"].as_bool().unwrap_or(false),
            compact_revision: int(&r["compact_revision"]),
            events: Vec::new(),
        };
        for e in r["events"].as_array().map(Vec::as_slice).unwrap_or(&[]) {
            batch.events.push(WatchEvent {
                deleted: e["type"].as_str() == Some("DELETE"),
                kv: kv_of(&e["kv"])?,
            });
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_gateways_json() {
        assert_eq!(int(&json!("123")), 123);
        assert_eq!(int(&json!(7)), 7);
        assert_eq!(int(&Value::Null), 0);
        let kv =
            kv_of(&json!({"key": b64(b"/p/overrides"), "value": b64(b"{}"), "mod_revision": "42"}))
                .unwrap();
        assert_eq!(kv.key, "/p/overrides");
        assert_eq!(kv.value, b"{}");
        assert_eq!(kv.mod_revision, 42);
        assert!(kv_of(&json!({"key": "!!"})).is_err());
        assert_eq!(prefix_end("/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end("\u{7f}"), vec![0x80]);
    }

    #[test]
    fn token_refusals_are_recognised() {
        assert!(needs_token(&EtcdError::Refused {
            code: 16,
            message: "etcdserver: invalid auth token".into()
        }));
        assert!(!needs_token(&EtcdError::Refused {
            code: 5,
            message: "etcdserver: requested lease not found".into()
        }));
    }
}
