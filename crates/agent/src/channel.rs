//! The agent's side of the channel (`netwatch_api::agent`): connect the
//! WebSocket with the bearer token, say hello, wait for the welcome, then run
//! the message loop until the connection is lost; reconnect with backoff and
//! jitter (100 ms doubling to 5 s), forever, until shutdown.
//!
//! One connection at a time. Every frame is a JSON text message; a frame the
//! agent does not understand (a newer controller) is logged and skipped, never
//! fatal. Sends are flushed at once and Nagle is off: the `Running` report is
//! on the path the product is measured on (create → Running).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use netwatch_api::agent::{
    AgentMessage, CaptureReport, ControllerMessage, HEARTBEAT_INTERVAL_MS, Hello, InterfaceInfo,
    RECORDER_STATUS_INTERVAL_MS, UpgradeFailure, Welcome,
};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use crate::remote::{Backoff, Remote};
use crate::supervisor::Supervisor;
use crate::upgrade::Upgrades;
use crate::{AgentConfig, error_chain, host};

/// An open channel.
pub(crate) type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// First wait before reconnecting; doubles up to [`RECONNECT_CAP`].
pub(crate) const RECONNECT_FIRST: Duration = Duration::from_millis(100);
pub(crate) const RECONNECT_CAP: Duration = Duration::from_secs(5);
/// Bounds of the steps of a connection: TCP + TLS + upgrade, the welcome, one send.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const WELCOME_TIMEOUT: Duration = Duration::from_secs(10);
const SEND_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a shutdown waits for the close handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// Largest message taken from the controller: a `Start` is a few KiB.
const MAX_MESSAGE: usize = 1 << 20;
/// Failed connection attempts in a row are logged as warnings once every this
/// many (the first included), the others at debug: an outage of a day is not
/// 17,000 warnings.
const WARN_EVERY: u32 = 20;

/// Who this agent says it is in its hello.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub(crate) vm_name: String,
    pub(crate) resource_group: String,
    pub(crate) location: String,
    /// Which host this is, for good ([`crate::credential::host_id`]).
    pub(crate) host_id: Option<String>,
    pub(crate) capture_interface: Option<String>,
    pub(crate) tags: std::collections::BTreeMap<String, String>,
    pub(crate) version: String,
}

impl Identity {
    pub(crate) fn from_config(config: &AgentConfig, host_id: String) -> Self {
        Self {
            vm_name: config.vm_name.clone(),
            resource_group: config.resource_group.clone(),
            location: config.location.clone(),
            host_id: Some(host_id),
            capture_interface: Some(config.interface.clone()),
            tags: config.tags.clone(),
            version: config.version.clone(),
        }
    }

    pub(crate) fn hello(
        &self,
        interfaces: Vec<InterfaceInfo>,
        captures: Vec<CaptureReport>,
        upgrade_failure: Option<UpgradeFailure>,
    ) -> AgentMessage {
        AgentMessage::Hello(Hello {
            vm_name: self.vm_name.clone(),
            resource_group: self.resource_group.clone(),
            location: self.location.clone(),
            hostname: host::hostname().unwrap_or_else(|| self.vm_name.clone()),
            host_id: self.host_id.clone(),
            capture_interface: self.capture_interface.clone(),
            tags: self.tags.clone(),
            agent_version: self.version.clone(),
            arch: Some(std::env::consts::ARCH.to_owned()),
            upgrade_failure,
            interfaces,
            captures,
        })
    }
}

/// Why a connection ended or could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ChannelError {
    #[error("connect to {url}")]
    Connect {
        url: String,
        #[source]
        source: tungstenite::Error,
    },
    #[error("connect to {url}: no answer within {} s", CONNECT_TIMEOUT.as_secs())]
    ConnectTimeout { url: String },
    #[error("the controller refused this agent: {0}")]
    Refused(String),
    #[error("the controller sent no welcome within {} s", WELCOME_TIMEOUT.as_secs())]
    NoWelcome,
    #[error("send to the controller")]
    Send(#[source] tungstenite::Error),
    #[error("send to the controller: not done within {} s", SEND_TIMEOUT.as_secs())]
    SendTimeout,
    #[error("receive from the controller")]
    Receive(#[source] tungstenite::Error),
    #[error("the controller closed the channel")]
    Closed,
    #[error("the controller replica is going away: {0}")]
    Leaving(String),
}

/// The WebSocket settings of a real agent: small frames only, both ways.
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .max_message_size(Some(MAX_MESSAGE))
        .max_frame_size(Some(MAX_MESSAGE))
}

/// Opens the WebSocket (no message sent yet).
pub(crate) async fn connect(remote: &Remote, config: WebSocketConfig) -> Result<Ws, ChannelError> {
    let url = remote.channel_url();
    let connect_error = |source| ChannelError::Connect {
        url: url.clone(),
        source,
    };
    let mut request = url.as_str().into_client_request().map_err(connect_error)?;
    request.headers_mut().insert(AUTHORIZATION, remote.authorization());
    let connector = if remote.is_secure() {
        Connector::Rustls(Arc::clone(remote.tls()))
    } else {
        Connector::Plain
    };
    let connecting = tokio_tungstenite::connect_async_tls_with_config(request, Some(config), true, Some(connector));
    match timeout(CONNECT_TIMEOUT, connecting).await {
        Err(_) => Err(ChannelError::ConnectTimeout { url }),
        Ok(Err(source)) => Err(connect_error(source)),
        Ok(Ok((ws, _response))) => Ok(ws),
    }
}

/// Sends one message and flushes it.
pub(crate) async fn send(ws: &mut Ws, message: &AgentMessage) -> Result<(), ChannelError> {
    let text = serde_json::to_string(message).expect("agent messages are plain data with string keys");
    match timeout(SEND_TIMEOUT, ws.send(Message::text(text))).await {
        Err(_) => Err(ChannelError::SendTimeout),
        Ok(result) => result.map_err(ChannelError::Send),
    }
}

/// The next controller message; `None` for a frame that carries none (ping,
/// pong, binary, text that does not parse). Cancel-safe.
pub(crate) async fn receive(ws: &mut Ws) -> Result<Option<ControllerMessage>, ChannelError> {
    match ws.next().await {
        Some(Ok(Message::Close(Some(frame)))) if matches!(frame.code, CloseCode::Restart | CloseCode::Away) => {
            Err(ChannelError::Leaving(frame.reason.to_string()))
        }
        None | Some(Ok(Message::Close(_))) => Err(ChannelError::Closed),
        Some(Err(error)) => Err(ChannelError::Receive(error)),
        Some(Ok(Message::Text(text))) => match serde_json::from_str(text.as_str()) {
            Ok(message) => Ok(Some(message)),
            Err(error) => {
                tracing::warn!(error = %error, "message from the controller not understood: skipped");
                Ok(None)
            }
        },
        // Pings are answered by tungstenite itself.
        Some(Ok(_)) => Ok(None),
    }
}

/// Sends the hello and waits for the welcome.
pub(crate) async fn handshake(ws: &mut Ws, hello: &AgentMessage) -> Result<Welcome, ChannelError> {
    send(ws, hello).await?;
    let welcome = async {
        loop {
            match receive(ws).await? {
                Some(ControllerMessage::Welcome(welcome)) => return Ok(welcome),
                Some(ControllerMessage::Refused { message }) => return Err(ChannelError::Refused(message)),
                Some(other) => tracing::warn!(message = ?other, "message before the welcome: ignored"),
                None => {}
            }
        }
    };
    timeout(WELCOME_TIMEOUT, welcome)
        .await
        .map_err(|_| ChannelError::NoWelcome)?
}

/// Counts failed attempts in a row and logs them without flooding.
#[derive(Debug, Default)]
pub(crate) struct FailureLog {
    in_a_row: u32,
}

impl FailureLog {
    pub(crate) fn failed(&mut self, what: &str, error: &ChannelError, retry_in: Duration) {
        self.in_a_row += 1;
        let chain = error_chain(error);
        if (self.in_a_row - 1).is_multiple_of(WARN_EVERY) {
            tracing::warn!(attempts = self.in_a_row, retry_ms = retry_in.as_millis(), error = %chain, "{what}");
        } else {
            tracing::debug!(attempts = self.in_a_row, retry_ms = retry_in.as_millis(), error = %chain, "{what}");
        }
    }

    pub(crate) fn succeeded(&mut self) {
        self.in_a_row = 0;
    }
}

/// What the channel knows of the agent's enrollment.
#[derive(Debug)]
pub(crate) struct Enrollment<'a> {
    /// Where a credential handed out in a welcome is saved.
    pub(crate) credential_file: &'a Path,
    /// Where the digest of the token it came from is saved.
    pub(crate) used_token_file: &'a Path,
    pub(crate) token_digest: &'a str,
    /// The saved credential, when the channel starts with a new enrollment
    /// token: used if the controller refuses the token.
    pub(crate) fallback: Option<String>,
}

/// What the agent authenticates with right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Using {
    /// The token it was given (an enrollment token or a shared agent token).
    Token,
    /// Its saved credential.
    Credential,
}

/// Why the controller refused: its 401 or its `Refused` message.
pub(crate) fn refusal_reason(error: &ChannelError) -> Option<String> {
    match error {
        ChannelError::Refused(message) => Some(message.clone()),
        other => refusal(other),
    }
}

/// The controller's 401 for a connection, with its reason: the token or
/// credential is not (or no longer) good.
fn refusal(error: &ChannelError) -> Option<String> {
    let ChannelError::Connect {
        source: tungstenite::Error::Http(response),
        ..
    } = error
    else {
        return None;
    };
    if response.status() != tungstenite::http::StatusCode::UNAUTHORIZED {
        return None;
    }
    let reason = response
        .body()
        .as_deref()
        .and_then(|body| serde_json::from_slice::<serde_json::Value>(body).ok())
        .and_then(|body| body["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "no reason given".to_owned());
    Some(format!("401 Unauthorized: {reason}"))
}

/// Holds the channel until `cancel`: connect, hello, session, and again.
pub(crate) async fn run(
    remote: &Remote,
    identity: &Identity,
    mut enrollment: Enrollment<'_>,
    supervisor: &Supervisor,
    upgrades: &Upgrades,
    cancel: &CancellationToken,
) {
    let credential_file = enrollment.credential_file;
    let mut backoff = Backoff::new(RECONNECT_FIRST, RECONNECT_CAP);
    let mut failures = FailureLog::default();
    let mut using = if credential_file.exists() && enrollment.fallback.is_none() {
        Using::Credential
    } else {
        Using::Token
    };
    let mut refusals: u32 = 0;
    let mut opened_before = false;
    loop {
        let opened = tokio::select! {
            () = cancel.cancelled() => return,
            opened = async {
                let mut ws = connect(remote, ws_config()).await?;
                let hello = identity.hello(host::interfaces(), supervisor.reports(), upgrades.last_failure());
                let welcome = handshake(&mut ws, &hello).await?;
                Ok::<_, ChannelError>((ws, welcome))
            } => opened,
        };
        let error = match opened {
            Ok((ws, welcome)) => {
                tracing::info!(vm_id = %welcome.vm_id, server = remote.authority(),
                    upload_protocol = welcome.upload_protocol.max(1), "connected to the controller");
                remote.set_upload_protocol(welcome.upload_protocol);
                remote.set_handoff(welcome.handoff.as_deref());
                if let Some(credential) = &welcome.credential {
                    // Kept before use: losing it would leave the host unable to
                    // connect (the enrollment token worked only once).
                    match crate::credential::save(credential_file, credential)
                        .and_then(|()| remote.set_token(credential))
                    {
                        Ok(()) => {
                            using = Using::Credential;
                            enrollment.fallback = None;
                            if let Err(error) =
                                crate::credential::save(enrollment.used_token_file, enrollment.token_digest)
                            {
                                tracing::warn!(error = %crate::error_chain(&error), "could not note the enrollment token as used");
                            }
                            tracing::info!(file = %credential_file.display(), "enrolled: the agent's credential is saved")
                        }
                        Err(error) => {
                            tracing::error!(error = %crate::error_chain(&error), "could not keep the agent's credential")
                        }
                    }
                }
                backoff.reset();
                failures.succeeded();
                let metrics = supervisor.metrics();
                if opened_before {
                    metrics.reconnects.inc();
                }
                opened_before = true;
                metrics.connected.set(1);
                let ended = session(ws, supervisor, upgrades, cancel).await;
                metrics.connected.set(0);
                match ended {
                    Ok(()) => return,
                    Err(error) => error,
                }
            }
            Err(error) => error,
        };
        if let Some(reason) = refusal(&error) {
            refusals += 1;
            match (using, enrollment.fallback.take()) {
                (Using::Token, Some(credential)) => {
                    tracing::error!(
                        "the controller refused the enrollment token ({reason}): the agent goes on with its saved \
                         credential"
                    );
                    // Spent or not this controller's: not tried again at the next start.
                    if let Err(error) = crate::credential::save(enrollment.used_token_file, enrollment.token_digest) {
                        tracing::warn!(error = %crate::error_chain(&error), "could not note the enrollment token as used");
                    }
                    if remote.set_token(&credential).is_ok() {
                        using = Using::Credential;
                        refusals = 0;
                        continue;
                    }
                }
                // Said at once, then every so often while it lasts.
                (Using::Credential, _) if (refusals - 1).is_multiple_of(WARN_EVERY) => tracing::error!(
                    attempts = refusals,
                    "the controller refused this agent's saved credential ({reason}): the host was removed \
                     (`vm extension delete`) or this is another controller. Enroll the host again with the command \
                     `netwatch vm extension set` prints: its --enroll-token wins over the saved credential"
                ),
                (Using::Token, None) if (refusals - 1).is_multiple_of(WARN_EVERY) => tracing::error!(
                    attempts = refusals,
                    "the controller refused the agent's token ({reason}): an enrollment token works once and \
                     expires; get a new one with `netwatch vm extension set` (or `vmss extension set`)"
                ),
                _ => {}
            }
        } else {
            refusals = 0;
        }
        let delay = backoff.next_delay();
        if remote.servers() > 1 {
            // Another replica may answer: the next attempt goes there.
            let next = remote.next_server();
            if let ChannelError::Leaving(reason) = &error {
                tracing::info!(
                    reason,
                    next,
                    "the controller replica asked this agent to move: connecting to the next"
                );
            } else {
                failures.failed(
                    &format!("no channel to the controller; trying {next} next"),
                    &error,
                    delay,
                );
            }
        } else {
            failures.failed("no channel to the controller", &error, delay);
        }
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// One welcomed connection: every report once (they may not have reached the
/// last connection), then work in and reports out until the connection is lost
/// (an error) or `cancel` (closed politely, `Ok`).
async fn session(
    mut ws: Ws,
    supervisor: &Supervisor,
    upgrades: &Upgrades,
    cancel: &CancellationToken,
) -> Result<(), ChannelError> {
    let heartbeat = Duration::from_millis(HEARTBEAT_INTERVAL_MS);
    supervisor.mark_all_dirty();
    if supervisor.recorder().configured() {
        supervisor.recorder().mark_dirty();
    }
    let status_every = Duration::from_millis(RECORDER_STATUS_INTERVAL_MS);
    let mut last_sent = Instant::now();
    let mut last_status = Instant::now();
    loop {
        tokio::select! {
            () = cancel.cancelled() => {
                // Best effort: the controller learns the agent left on purpose.
                let _ = timeout(CLOSE_TIMEOUT, ws.close(None)).await;
                return Ok(());
            }
            received = receive(&mut ws) => match received? {
                Some(ControllerMessage::Start(start)) => supervisor.start(start),
                Some(ControllerMessage::Stop { capture_id }) => supervisor.stop(&capture_id),
                Some(ControllerMessage::Refused { message }) => return Err(ChannelError::Refused(message)),
                Some(ControllerMessage::Welcome(_)) => tracing::debug!("repeated welcome: ignored"),
                Some(ControllerMessage::Upgrade(upgrade)) => upgrades.want(upgrade),
                Some(ControllerMessage::Uninstall { purge }) => upgrades.uninstall(purge),
                Some(ControllerMessage::Recorder { recorder }) => supervisor.recorder().want(recorder),
                Some(ControllerMessage::LiveStart { stream, capture_id }) => supervisor.live_start(stream, &capture_id),
                Some(ControllerMessage::LiveStop { stream }) => supervisor.live_stop(&stream),
                None => {}
            },
            () = supervisor.recorder().changed() => {
                if let Some(status) = supervisor.recorder().take_status(false) {
                    send(&mut ws, &AgentMessage::Recorder(status)).await?;
                    last_sent = Instant::now();
                    last_status = Instant::now();
                }
            }
            () = tokio::time::sleep_until(last_status + status_every), if supervisor.recorder().configured() => {
                if let Some(status) = supervisor.recorder().take_status(true) {
                    send(&mut ws, &AgentMessage::Recorder(status)).await?;
                    last_sent = Instant::now();
                }
                last_status = Instant::now();
            }
            () = upgrades.failed() => {
                if let Some(failure) = upgrades.take_unsent() {
                    send(&mut ws, &AgentMessage::UpgradeFailed(failure)).await?;
                    last_sent = Instant::now();
                }
            }
            () = supervisor.changed() => {
                for (report, seq) in supervisor.take_dirty() {
                    let id = report.capture_id.clone();
                    send(&mut ws, &AgentMessage::Report(report)).await?;
                    supervisor.sent(&id, seq);
                    last_sent = Instant::now();
                }
            }
            () = tokio::time::sleep_until(last_sent + heartbeat) => {
                send(&mut ws, &AgentMessage::Heartbeat).await?;
                last_sent = Instant::now();
            }
        }
    }
}
