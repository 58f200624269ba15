//! The login routes Azure's clients use (clients.md §2) and the access tokens
//! they hand out, accepted as bearer tokens while their client token is.

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use netwatch_controller::auth::{Tokens, digest};
use netwatch_controller::identity::Signer;
use netwatch_controller::routes::{ApiConfig, AppState, router};
use netwatch_controller::store::Store;
use netwatch_storage::Accounts;
use serde_json::Value;
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
