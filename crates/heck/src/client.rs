//! A small HTTP client for the CLI commands that talk to an agent (`status`, `targets`).
//! One request per connection; every request bounded by [`TIMEOUT`].
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Bound on one request to the agent.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// The agent could not be reached (nothing listening, wrong address, timeout). `main` maps it to
/// exit code 3.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach the heck agent at {addr}: {reason} (is `heck agent` running? see --addr)")]
pub struct Unreachable {
    addr: String,
    reason: String,
}

/// The agent's address and credentials.
#[derive(Debug, Clone)]
pub struct Agent {
    host: String,
    port: u16,
    base: String,
    token: Option<String>,
}

/// `--addr` and `--api-token`, shared by the commands that talk to an agent.
#[derive(Debug, clap::Args)]
pub struct AgentArgs {
    /// The agent's API address.
    #[arg(
        long,
        global = true,
        env = "HECK_ADDR",
        default_value = "http://127.0.0.1:7070"
    )]
    pub addr: String,
    /// Bearer token for write endpoints (the agent's --api-token).
    #[arg(long, global = true, env = "HECK_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
}

impl Agent {
    /// Parse `http://host:port` (the scheme may be omitted).
    pub fn new(args: &AgentArgs) -> anyhow::Result<Agent> {
        let rest = args.addr.strip_prefix("http://").unwrap_or(&args.addr);
        if rest.contains("://") {
            anyhow::bail!("--addr {:?}: only http:// is supported", args.addr);
        }
        let hostport = rest.trim_end_matches('/');
        let (host, port) = hostport
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| anyhow::anyhow!("--addr {:?}: expected http://HOST:PORT", args.addr))?;
        Ok(Agent {
            base: format!("http://{hostport}"),
            host,
            port,
            token: args.api_token.clone().filter(|t| !t.is_empty()),
        })
    }

    /// Send one request; returns the status and the body.
    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<(u16, Bytes)> {
        let unreachable = |reason: String| Unreachable {
            addr: self.base.clone(),
            reason,
        };
        let work = async {
            let stream =
                tokio::net::TcpStream::connect((self.host.trim_matches(['[', ']']), self.port))
                    .await
                    .map_err(|e| unreachable(e.to_string()))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let mut req = http::Request::builder()
                .method(method)
                .uri(path)
                .header(http::header::HOST, format!("{}:{}", self.host, self.port));
            if let Some(token) = &self.token {
                req = req.header(http::header::AUTHORIZATION, format!("Bearer {token}"));
            }
            if body.is_some() {
                req = req.header(http::header::CONTENT_TYPE, "application/json");
            }
            let req = req.body(Full::new(Bytes::from(body.unwrap_or_default())))?;
            let response = async {
                let resp = sender.send_request(req).await?;
                let status = resp.status().as_u16();
                let bytes = resp.into_body().collect().await?.to_bytes();
                Ok::<_, hyper::Error>((status, bytes))
            };
            tokio::pin!(response);
            tokio::pin!(conn);
            let result = tokio::select! {
                biased;
                r = &mut response => r,
                _ = &mut conn => response.await,
            };
            result.map_err(|e| anyhow::Error::new(unreachable(e.to_string())))
        };
        tokio::time::timeout(TIMEOUT, work)
            .await
            .map_err(|_| unreachable(format!("no answer within {}s", TIMEOUT.as_secs())))?
    }

    /// GET a JSON document; a non-2xx answer becomes an error carrying the agent's message.
    pub async fn get_json(&self, path: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self.request(http::Method::GET, path, None).await?;
        json_or_error(status, &body)
    }
}

/// Parse a 2xx JSON body, or turn the agent's `{"error": ...}` into an error.
pub fn json_or_error(status: u16, body: &[u8]) -> anyhow::Result<serde_json::Value> {
    let value: serde_json::Value = if body.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(body)
            .map_err(|e| anyhow::anyhow!("agent answered {status} with invalid JSON: {e}"))?
    };
    if (200..300).contains(&status) {
        Ok(value)
    } else {
        let msg = value["error"].as_str().unwrap_or("(no message)");
        anyhow::bail!("agent answered {status}: {msg}")
    }
}
