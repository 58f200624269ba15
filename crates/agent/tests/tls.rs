//! The channel over TLS: the agent trusts its CA file and nothing else.

use std::path::Path;
use std::sync::Arc;

use netwatch_api::agent::AgentMessage;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

use crate::fake_controller::{Agent, FakeController, TOKEN, WAIT};

/// A self-signed certificate for `localhost`, its PEM written to `pem`.
fn certificate(pem: &Path) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    std::fs::write(pem, certified.cert.pem()).unwrap();
    let key = PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der());
    (certified.cert.der().clone(), key.into())
}

fn acceptor(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> TlsAcceptor {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

#[tokio::test]
async fn the_channel_runs_over_tls_trusting_only_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(&dir.path().join("server.pem"));
    // Another CA, which did not sign the server's certificate.
    certificate(&dir.path().join("other.pem"));
    let acceptor = acceptor(cert, key);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = format!("https://localhost:{}", listener.local_addr().unwrap().port());
    // Only used for its agent config; the TLS server below plays the controller.
    let fake = FakeController::start().await;

    // Trusting the other CA: the agent refuses the server's certificate.
    let agent = Agent::start_with(
        &fake,
        |config| {
            config.server = server.clone();
            config.ca_file = Some(dir.path().join("other.pem"));
        },
        "any",
    );
    let (tcp, _) = tokio::time::timeout(WAIT, listener.accept()).await.unwrap().unwrap();
    let refused = acceptor.accept(tcp).await;
    assert!(
        refused.is_err(),
        "the agent must not accept a certificate its CA file did not sign"
    );
    agent.stop().await;

    // Trusting the server's CA: wss, bearer token, hello.
    let agent = Agent::start_with(
        &fake,
        |config| {
            config.server = server.clone();
            config.ca_file = Some(dir.path().join("server.pem"));
        },
        "any",
    );
    // A connection the first agent opened before it stopped may be queued: skip it.
    let tls = tokio::time::timeout(WAIT, async {
        loop {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(tls) = acceptor.accept(tcp).await {
                return tls;
            }
        }
    })
    .await
    .expect("the agent connects over TLS within the wait");
    #[allow(clippy::result_large_err, reason = "the callback's type is tungstenite's")]
    let check_token = |request: &Request, response: Response| {
        let auth = request.headers().get("authorization").unwrap().to_str().unwrap();
        assert_eq!(auth, format!("Bearer {TOKEN}"));
        Ok(response)
    };
    let mut ws = tokio_tungstenite::accept_hdr_async(tls, check_token).await.unwrap();
    let first = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut ws))
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let hello: AgentMessage = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert!(matches!(hello, AgentMessage::Hello(h) if h.vm_name == "vm1"));
    agent.stop().await;
}
