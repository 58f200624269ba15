//! The login routes Azure's clients use (clients.md §2) and the access tokens
//! they hand out, accepted as bearer tokens while their client token is.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use netwatch_controller::app::{ApiConfig, AppState};
use netwatch_controller::auth::{Tokens, digest};
use netwatch_controller::identity::Signer;
use netwatch_controller::routes::router;
use netwatch_controller::store::Store;
use netwatch_storage::Accounts;
use serde_json::{Value, json};
use tower::ServiceExt;

const TENANT: &str = "00000000-0000-0000-0000-000000000000";
const ADMIN: &str = "admin-token";
const AGENT: &str = "agent-token";
const SUBSCRIPTIONS: &str = "/subscriptions?api-version=2022-12-01";

struct Login {
    signer: Signer,
    store: Store,
    _dir: tempfile::TempDir,
}

impl Login {
    async fn new() -> Login {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&format!("sqlite://{}", dir.path().join("state.db").display()))
            .await
            .unwrap();
        Login {
            signer: Signer::random().unwrap(),
            store,
            _dir: dir,
        }
    }

    /// The API accepting `admin` as its client tokens.
    fn router(&self, admin: &[&str]) -> Router {
        let admin: Vec<String> = admin.iter().map(|token| digest(token)).collect();
        let config = ApiConfig {
            auth: Some(Tokens::from_digests(&admin, &[digest(AGENT)]).unwrap()),
            signer: Some(self.signer.clone()),
            scheme: "https".into(),
            ..ApiConfig::default()
        };
        router(AppState::new(self.store.clone(), config, Accounts::default()))
    }
}

async fn call(router: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

fn get(uri: &str, bearer: Option<&str>) -> Request<Body> {
    let mut request = Request::get(uri).header(header::HOST, "netwatch.test");
    if let Some(token) = bearer {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    request.body(Body::empty()).unwrap()
}

fn token_request(tenant: &str, form: &str) -> Request<Body> {
    Request::post(format!("/{tenant}/oauth2/v2.0/token"))
        .header(header::HOST, "netwatch.test")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from(form.to_owned()))
        .unwrap()
}

#[tokio::test]
async fn service_principal_login_trades_a_client_token_for_an_access_token() {
    let login = Login::new().await;
    let api = login.router(&[ADMIN]);

    let (status, oidc) = call(
        &api,
        get(&format!("/{TENANT}/v2.0/.well-known/openid-configuration"), None),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{oidc}");
    assert_eq!(
        oidc["token_endpoint"],
        format!("https://netwatch.test/{TENANT}/oauth2/v2.0/token")
    );
    assert_eq!(oidc["issuer"], format!("https://netwatch.test/{TENANT}/v2.0"));

    let form = format!(
        "grant_type=client_credentials&client_id=netwatch&client_secret={ADMIN}\
         &scope=https%3A%2F%2Fmanagement.core.windows.net%2F%2F.default"
    );
    let (status, granted) = call(&api, token_request(TENANT, &form)).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["expires_in"], 3600);
    let access = granted["access_token"].as_str().unwrap().to_owned();
    let claims = login.signer.verify(&access).unwrap();
    assert_eq!(claims.tid, TENANT);
    assert_eq!(claims.aud, "https://management.core.windows.net/");

    // The access token opens the ARM API as the client token would.
    assert_eq!(call(&api, get(SUBSCRIPTIONS, Some(&access))).await.0, StatusCode::OK);
    assert_eq!(call(&api, get(SUBSCRIPTIONS, Some(ADMIN))).await.0, StatusCode::OK);
    assert_eq!(call(&api, get(SUBSCRIPTIONS, None)).await.0, StatusCode::UNAUTHORIZED);
    // ...until its client token is no longer accepted.
    let revoked = login.router(&["another-token"]);
    assert_eq!(
        call(&revoked, get(SUBSCRIPTIONS, Some(&access))).await.0,
        StatusCode::UNAUTHORIZED
    );
    // A token signed by another key is refused.
    let foreign = Signer::random().unwrap().issue(&claims);
    assert_eq!(
        call(&api, get(SUBSCRIPTIONS, Some(&foreign))).await.0,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn bad_logins_are_refused_with_oauth_errors() {
    let login = Login::new().await;
    let api = login.router(&[ADMIN]);
    let rows = [
        (
            token_request(TENANT, &format!("grant_type=client_credentials&client_secret={AGENT}")),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            token_request(TENANT, "grant_type=client_credentials&client_secret=nope"),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            token_request(TENANT, "grant_type=client_credentials"),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            token_request(TENANT, &format!("grant_type=password&client_secret={ADMIN}")),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        (
            token_request(
                "11111111-1111-1111-1111-111111111111",
                &format!("grant_type=client_credentials&client_secret={ADMIN}"),
            ),
            StatusCode::BAD_REQUEST,
            "invalid_tenant",
        ),
        (
            get("/msi/token?resource=https://management.core.windows.net/", None),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
    ];
    for (request, status, error) in rows {
        let what = format!("{} {}", request.method(), request.uri());
        let (got, body) = call(&api, request).await;
        assert_eq!((got, body["error"].as_str()), (status, Some(error)), "{what}: {body}");
        assert!(
            body["error_description"].as_str().is_some_and(|d| !d.is_empty()),
            "{what}"
        );
    }
}

#[tokio::test]
async fn managed_identity_login_takes_the_token_in_its_header() {
    let login = Login::new().await;
    let api = login.router(&[ADMIN]);
    let request = Request::get("/msi/token?api-version=2019-08-01&resource=https://management.core.windows.net/")
        .header(header::HOST, "netwatch.test")
        .header("X-IDENTITY-HEADER", ADMIN)
        .body(Body::empty())
        .unwrap();
    let (status, granted) = call(&api, request).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    let expires: u64 = granted["expires_on"].as_str().unwrap().parse().unwrap();
    assert!(expires > netwatch_controller::identity::now_secs());
    let access = granted["access_token"].as_str().unwrap();
    assert_eq!(login.signer.verify(access).unwrap().tid, TENANT);
    assert_eq!(call(&api, get(SUBSCRIPTIONS, Some(access))).await.0, StatusCode::OK);
}

fn send(method: &str, uri: &str, bearer: &str, body: Option<Value>) -> Request<Body> {
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .header(header::HOST, "netwatch.test")
        .header(header::AUTHORIZATION, format!("Bearer {bearer}"));
    if body.is_some() {
        request = request.header(header::CONTENT_TYPE, "application/json");
    }
    request
        .body(body.map_or_else(Body::empty, |body| Body::from(body.to_string())))
        .unwrap()
}

/// An access token for client token `secret`, from the service principal login.
async fn access_token(api: &Router, secret: &str) -> String {
    let form = format!("grant_type=client_credentials&client_id=netwatch&client_secret={secret}");
    let (status, granted) = call(api, token_request(TENANT, &form)).await;
    assert_eq!(status, StatusCode::OK, "{granted}");
    granted["access_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_made_with_a_role_may_do_what_the_role_allows_until_revoked() {
    let login = Login::new().await;
    let api = login.router(&[ADMIN]);
    let tokens = "/netwatch/v1/tokens";
    let mut made = std::collections::HashMap::new();
    for (name, role) in [("ci-read", "reader"), ("oncall", "operator"), ("ops-admin", "admin")] {
        let (status, body) = call(
            &api,
            send("POST", tokens, ADMIN, Some(json!({"name": name, "role": role}))),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        assert_eq!((&body["name"], &body["role"]), (&json!(name), &json!(role)));
        made.insert(role, body["token"].as_str().unwrap().to_owned());
    }
    // The list never shows a token; names are unique; bad roles and names are refused.
    let (_, listed) = call(&api, send("GET", tokens, ADMIN, None)).await;
    let names: Vec<&str> = listed["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["ci-read", "oncall", "ops-admin"]);
    assert!(!listed.to_string().contains(&made["reader"]), "{listed}");
    let again = call(
        &api,
        send(
            "POST",
            tokens,
            ADMIN,
            Some(json!({"name": "CI-READ", "role": "reader"})),
        ),
    )
    .await;
    assert_eq!(again.0, StatusCode::CONFLICT, "{}", again.1);
    for bad in [
        json!({"name": "x", "role": "root"}),
        json!({"name": "a b", "role": "reader"}),
        json!({"name": "x"}),
    ] {
        let (status, body) = call(&api, send("POST", tokens, ADMIN, Some(bad.clone()))).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }

    let capture = format!(
        "/subscriptions/{TENANT}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus/packetCaptures/pc1?api-version=2024-05-01"
    );
    let account = format!(
        "/subscriptions/{TENANT}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/acct1?api-version=2025-08-01"
    );
    // (who, method, uri, allowed): a refused call is 403 AuthorizationFailed
    // naming the role it needs; an allowed one reaches its route (any other status).
    let reader = made["reader"].clone();
    let operator = made["operator"].clone();
    let admin = made["admin"].clone();
    let rows = [
        (&reader, "GET", SUBSCRIPTIONS.to_owned(), true),
        (&reader, "GET", capture.clone(), true),
        (&reader, "DELETE", capture.clone(), false),
        (&reader, "GET", tokens.to_owned(), false),
        (&operator, "DELETE", capture.clone(), true),
        (&operator, "PUT", account.clone(), false),
        (&operator, "GET", "/netwatch/v1/agent/uploads".to_owned(), false),
        (&admin, "PUT", account.clone(), true),
        (&admin, "GET", tokens.to_owned(), true),
    ];
    for (token, method, uri, allowed) in rows {
        let body = (method == "PUT").then(|| json!({}));
        let (status, answer) = call(&api, send(method, &uri, token, body)).await;
        if allowed {
            assert_ne!(status, StatusCode::FORBIDDEN, "{method} {uri}: {answer}");
            assert_ne!(status, StatusCode::UNAUTHORIZED, "{method} {uri}: {answer}");
        } else {
            assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {answer}");
            assert_eq!(answer["error"]["code"], "AuthorizationFailed", "{answer}");
        }
    }
    let (_, refused) = call(&api, send("DELETE", &capture, &reader, None)).await;
    let message = refused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("a reader token may not DELETE") && message.contains("needs the operator role"),
        "{message}"
    );

    // A reader logs in as az does; its access token reads, and stops with its client token.
    let access = access_token(&api, &reader).await;
    assert_eq!(call(&api, get(SUBSCRIPTIONS, Some(&access))).await.0, StatusCode::OK);
    assert_eq!(
        call(&api, send("DELETE", &capture, &access, None)).await.0,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        call(&api, send("DELETE", &format!("{tokens}/ci-read"), ADMIN, None))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        call(&api, send("DELETE", &format!("{tokens}/ci-read"), ADMIN, None))
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(&api, get(SUBSCRIPTIONS, Some(&reader))).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        call(&api, get(SUBSCRIPTIONS, Some(&access))).await.0,
        StatusCode::UNAUTHORIZED
    );
    // The name is free again; the store holds digests only.
    let (status, _) = call(
        &api,
        send(
            "POST",
            tokens,
            ADMIN,
            Some(json!({"name": "ci-read", "role": "reader"})),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let stored = login.store.get_client_token(&digest(&operator)).await.unwrap().unwrap();
    assert_eq!((stored.name.as_str(), stored.role.as_str()), ("oncall", "operator"));
}
