//! Bad requests against the REST API, one table row each (STYLE 27): every
//! row asserts the exact status, the ARM error `code`, fragments of the
//! `message` that show it names the bad value and the fix, the `target`, and
//! that the request changed nothing (watchers, their captures, VMs and the
//! operation count, read from the store before and after every row).
//!
//! The rows run against one API holding a NotStarted capture `busy` under
//! `NetworkWatcher_westus`, VMs `vm1` (westus) and `vm2` (eastus) registered.
//! All failing rows are reported together, so one run shows every answer
//! that drifted.

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use serde_json::{Value, json};
use sqlx::SqlitePool;
use tower::ServiceExt;

use crate::api::Api;

const SUB: &str = "00000000-0000-0000-0000-000000000000";
const OTHER_SUB: &str = "11111111-1111-1111-1111-111111111111";
const V: &str = "api-version=2024-05-01";
const NW: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus";
const ACCOUNT: &str = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg1/providers/Microsoft.Storage/storageAccounts/acct";
const JSON: &str = "application/json";
const HOST: &str = "netwatch.test:8443";

fn vm_id(name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{name}")
}

/// A body the API accepts (the setup PUTs it as `busy`): every row changes one
/// thing. No `storageId`, so that no row depends on configured storage accounts.
fn good() -> Value {
    json!({"properties": {
        "target": vm_id("vm1"), "targetType": "AzureVM",
        "storageLocation": {"filePath": "/var/captures/pc1.cap"},
        "filters": [{"protocol": "TCP", "localPort": "80"}],
        "bytesToCapturePerPacket": 0, "totalBytesPerSession": 1073741824, "timeLimitInSeconds": 60}})
}

/// [`good`] with `change` applied to its `properties`.
fn props(change: impl FnOnce(&mut Value)) -> Option<Vec<u8>> {
    let mut body = good();
    change(&mut body["properties"]);
    Some(body.to_string().into_bytes())
}

/// [`good`] with `filters` set to `[filter]`.
fn filter(filter: Value) -> Option<Vec<u8>> {
    props(|p| p["filters"] = json!([filter]))
}

/// [`good`] as a continuous capture writing to `localPath`, with `change` applied.
fn continuous(change: impl FnOnce(&mut Value)) -> Option<Vec<u8>> {
    props(|p| {
        p["continuousCapture"] = json!(true);
        p["storageLocation"] = json!({"localPath": "/var/captures/ring.cap"});
        change(p);
    })
}

fn raw(text: &str) -> Option<Vec<u8>> {
    Some(text.as_bytes().to_vec())
}

/// One bad request and what the API must answer.
struct Row {
    request: Request,
    status: u16,
    code: &'static str,
    target: Option<&'static str>,
    /// Each must appear in the message.
    message: Vec<String>,
}

/// A request, before its expected answer is known.
struct Request {
    method: Method,
    uri: String,
    body: Option<Vec<u8>>,
    content_type: &'static str,
}

fn request(method: Method, uri: impl Into<String>, body: Option<Vec<u8>>) -> Request {
    Request {
        method,
        uri: uri.into(),
        body,
        content_type: JSON,
    }
}

fn put(uri: impl Into<String>, body: Option<Vec<u8>>) -> Request {
    request(Method::PUT, uri, body)
}

fn get(uri: impl Into<String>) -> Request {
    request(Method::GET, uri, None)
}

fn post(uri: impl Into<String>) -> Request {
    request(Method::POST, uri, None)
}

impl Request {
    fn typed(self, content_type: &'static str) -> Self {
        Self { content_type, ..self }
    }

    fn fails(self, status: u16, code: &'static str, target: Option<&'static str>, message: &[&str]) -> Row {
        Row {
            request: self,
            status,
            code,
            target,
            message: message.iter().map(|fragment| (*fragment).to_owned()).collect(),
        }
    }
}

/// The answer to `sent`: status, headers, body (`null` when empty, a string
/// when not JSON).
async fn send(api: &Api, sent: &Request) -> (StatusCode, HeaderMap, Value) {
    let mut request = axum::http::Request::builder()
        .method(sent.method.clone())
        .uri(&sent.uri)
        .header(header::HOST, HOST);
    if sent.body.is_some() {
        request = request.header(header::CONTENT_TYPE, sent.content_type);
    }
    let body = sent.body.clone().map_or_else(Body::empty, Body::from);
    let response = api.router.clone().oneshot(request.body(body).unwrap()).await.unwrap();
    let (status, headers) = (response.status(), response.headers().clone());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    (status, headers, body)
}

/// What no bad request may change.
async fn state(api: &Api, db: &SqlitePool) -> String {
    let mut out = String::new();
    for sub in [SUB, OTHER_SUB] {
        for watcher in api.store.list_watchers(sub).await.unwrap() {
            out.push_str(&format!("{watcher:?}\n"));
            for capture in api.store.list_captures(&watcher.id).await.unwrap() {
                out.push_str(&format!("  {capture:?}\n"));
            }
        }
        out.push_str(&format!("{:?}\n", api.store.list_vms(sub).await.unwrap()));
    }
    // The store has no query for operations but by id; count them directly.
    let operations: i64 = sqlx::query_scalar("SELECT count(*) FROM operations")
        .fetch_one(db)
        .await
        .unwrap();
    out.push_str(&format!("operations: {operations}\n"));
    out
}

#[tokio::test]
async fn bad_requests_are_explained_and_change_nothing() {
    let api = Api::new().await;
    let db = SqlitePool::connect(&format!("sqlite://{}", api._dir.path().join("state.db").display()))
        .await
        .unwrap();
    let busy = format!("{NW}/packetCaptures/busy");
    let (status, _, body) = send(&api, &put(format!("{busy}?{V}"), Some(good().to_string().into_bytes()))).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let mut before = state(&api, &db).await;
    assert!(before.contains("operations: 1\n"), "{before}");

    let pc = format!("{NW}/packetCaptures/pc1");
    let pcv = format!("{pc}?{V}");
    let eastus = NW.replace("westus", "eastus");
    let long_name = "a".repeat(81);
    let huge = props(|p| p["padding"] = json!("x".repeat(1024 * 1024)));

    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        // ---- request bodies
        put(&pcv, raw("{")).fails(400, "InvalidRequestFormat", None,
            &["the request body is not valid JSON", "EOF"]),
        put(&pcv, raw("")).fails(400, "InvalidRequestFormat", None,
            &["the request body is empty", r#"{"properties":{"target""#]),
        put(&pcv, raw("[1]")).fails(400, "InvalidRequestFormat", None,
            &["must be a JSON object such as {\"properties\"", "not an array"]),
        put(&pcv, raw("null")).fails(400, "InvalidRequestFormat", None,
            &["must be a JSON object", "not null"]),
        put(&pcv, raw("{}")).fails(400, "InvalidRequestFormat", Some("properties"),
            &["properties is required", r#"the parameters go inside "properties""#]),
        put(&pcv, raw(r#"{"properties":null}"#)).fails(400, "InvalidRequestFormat", Some("properties"),
            &["properties is required"]),
        // The Python SDK sends a plain dict as is: snake_case, no "properties".
        put(&pcv, Some(json!({"storage_location": {"storage_id": ACCOUNT}, "target": vm_id("vm1")}).to_string().into_bytes()))
            .fails(400, "InvalidRequestFormat", Some("storage_location"),
            &[r#"unknown field "storage_location""#, r#"go inside "properties", as in {"properties":{"storageLocation":…}}"#]),
        put(&pcv, props(|p| p["time_limit_in_seconds"] = json!(60))).fails(400, "InvalidRequestFormat", Some("properties.time_limit_in_seconds"),
            &[r#"unknown field "time_limit_in_seconds" (did you mean "timeLimitInSeconds"?)"#]),
        put(&pcv, props(|p| p["timeLimitInSeconds"] = json!("60"))).fails(400, "InvalidRequestFormat", Some("properties.timeLimitInSeconds"),
            &["properties.timeLimitInSeconds must be a whole number 0-18000 (seconds)", r#"not a string ("60")"#]),
        put(&pcv, props(|p| p["timeLimitInSeconds"] = json!(1.5))).fails(400, "InvalidRequestFormat", Some("properties.timeLimitInSeconds"),
            &["must be a whole number 0-18000", "not 1.5"]),
        put(&pcv, props(|p| p["target"] = json!(42))).fails(400, "InvalidRequestFormat", Some("properties.target"),
            &["properties.target must be a string, not the number 42"]),
        put(&pcv, props(|p| p["continuousCapture"] = json!("yes"))).fails(400, "InvalidRequestFormat", Some("properties.continuousCapture"),
            &["must be true, false or null", r#"not a string ("yes")"#]),
        put(&pcv, props(|p| p["filters"] = json!({"protocol": "TCP"}))).fails(400, "InvalidRequestFormat", Some("properties.filters"),
            &["must be an array of filter objects such as [{"]),
        put(&pcv, filter(json!({"localPort": 80}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localPort"),
            &[r#"properties.filters[0].localPort must be a string, not the number 80: quote it, as in "80""#]),
        put(&pcv, props(|p| p["storageLocation"] = json!("acct"))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation"),
            &["properties.storageLocation must be a JSON object", r#"not a string ("acct")"#]),
        put(&pcv, raw(&good().to_string().replacen(r#""timeLimitInSeconds":60"#, r#""timeLimitInSeconds":60,"timeLimitInSeconds":61"#, 1)))
            .fails(400, "InvalidRequestFormat", Some("properties.timeLimitInSeconds"),
            &["properties.timeLimitInSeconds is given more than once: give each field once"]),
        put(&pcv, props(|p| p["targetType"] = json!("AzureVMX"))).fails(400, "InvalidRequestFormat", Some("properties.targetType"),
            &[r#"properties.targetType "AzureVMX" is not a target type"#, "use AzureVM for a virtual machine or AzureVMSS for a scale set"]),
        put(&pcv, props(|p| p["targetType"] = json!("AzureVMSS"))).fails(400, "InvalidRequestFormat", Some("properties.targetType"),
            &["properties.targetType is AzureVMSS but properties.target is a virtual machine id", "use AzureVM"]),
        put(&pcv, huge).fails(413, "RequestBodyTooLarge", None,
            &["the request body is larger than 1048576 bytes"]),
        put(&pcv, Some(good().to_string().into_bytes())).typed("text/plain").fails(415, "UnsupportedMediaType", None,
            &[r#"content type "text/plain" is not supported"#, "send the body as application/json"]),
        put(&pcv, Some(good().to_string().into_bytes())).typed("application/x-www-form-urlencoded").fails(415, "UnsupportedMediaType", None,
            &[r#""application/x-www-form-urlencoded""#, "application/json"]),

        // ---- ids and names in the path
        put(format!("{}/packetCaptures/pc1?{V}", NW.replace(SUB, "abc")), Some(good().to_string().into_bytes()))
            .fails(400, "InvalidSubscriptionId", Some("subscriptionId"),
            &[r#""abc" is not a valid subscription id"#, "GUIDs such as 00000000-0000-0000-0000-000000000000"]),
        put(format!("{}/packetCaptures/pc1?{V}", NW.replace(SUB, OTHER_SUB)), Some(good().to_string().into_bytes()))
            .fails(404, "NotFound", Some("subscriptionId"),
            &[r#"subscription "11111111-1111-1111-1111-111111111111" was not found"#, "this deployment serves 00000000-0000-0000-0000-000000000000"]),
        get(format!("/subscriptions/{OTHER_SUB}/providers/Microsoft.Network/networkWatchers?{V}"))
            .fails(404, "NotFound", Some("subscriptionId"), &["was not found", "this deployment serves"]),
        put(format!("{}/packetCaptures/pc1?{V}", NW.replace("NetworkWatcherRG", "rg*")), Some(good().to_string().into_bytes()))
            .fails(400, "InvalidResourceName", Some("resourceGroupName"),
            &[r#""rg*" is not a valid resource group name: it has the character '*'"#, "resource group names are 1-90 characters"]),
        put(format!("{}/packetCaptures/pc1?{V}", NW.replace("NetworkWatcher_westus", "nw*")), Some(good().to_string().into_bytes()))
            .fails(400, "InvalidResourceName", Some("networkWatcherName"),
            &[r#""nw*" is not a valid name: it has the character '*'"#]),
        put(format!("{NW}/packetCaptures/{long_name}?{V}"), Some(good().to_string().into_bytes()))
            .fails(400, "InvalidResourceName", Some("packetCaptureName"),
            &["is not a valid name: it is 81 characters long", "names are 1-80 characters"]),
        put(format!("{NW}/packetCaptures/bad%20name?{V}"), Some(good().to_string().into_bytes()))
            .fails(400, "InvalidResourceName", Some("packetCaptureName"),
            &["has the character ' '", r#"letters, digits, "_", "-" and ".""#]),
        put(format!("{NW}/packetCaptures/pc1.?{V}"), Some(good().to_string().into_bytes()))
            .fails(400, "InvalidResourceName", Some("packetCaptureName"),
            &[r#""pc1." is not a valid name: it ends with '.'"#]),
        put(format!("{NW}/packetCaptures/-pc1?{V}"), Some(good().to_string().into_bytes()))
            .fails(400, "InvalidResourceName", Some("packetCaptureName"),
            &[r#"it starts with '-'"#, "starting with a letter or digit"]),
        put(format!("{}/packetCaptures/pc1?{V}", NW.replace("NetworkWatcherRG", "rg1").replace("NetworkWatcher_westus", "nw9")), Some(good().to_string().into_bytes()))
            .fails(404, "ResourceNotFound", None,
            &[r#"network watcher "nw9" was not found"#, "/resourceGroups/rg1/providers/Microsoft.Network/networkWatchers/nw9"]),
        get(format!("{eastus}/packetCaptures?{V}"))
            .fails(404, "ResourceNotFound", None, &[r#"network watcher "NetworkWatcher_eastus" was not found"#]),
        get(format!("{NW}/packetCaptures/ghost?{V}"))
            .fails(404, "ResourceNotFound", None, &[r#"packet capture "ghost" was not found"#, "/networkWatchers/NetworkWatcher_westus/packetCaptures/ghost"]),
        post(format!("{NW}/packetCaptures/ghost/queryStatus?{V}"))
            .fails(404, "ResourceNotFound", None, &[r#"packet capture "ghost" was not found"#]),
        post(format!("{NW}/packetCaptures/ghost/stop?{V}"))
            .fails(404, "ResourceNotFound", None, &[r#"packet capture "ghost" was not found"#]),

        // ---- api-version
        put(&pc, Some(good().to_string().into_bytes())).fails(400, "MissingApiVersionParameter", Some("api-version"),
            &["the api-version query parameter is required", "?api-version=2024-05-01"]),
        put(format!("{pc}?api-version="), Some(good().to_string().into_bytes())).fails(400, "MissingApiVersionParameter", Some("api-version"),
            &["the api-version query parameter is required"]),
        post(format!("{busy}/queryStatus")).fails(400, "MissingApiVersionParameter", Some("api-version"),
            &["is required"]),
        put(format!("{pc}?api-version=2024-13-01"), Some(good().to_string().into_bytes())).fails(400, "InvalidApiVersionParameter", Some("api-version"),
            &[r#"api-version "2024-13-01" is not valid: there is no month 13"#, "use a date such as 2024-05-01"]),
        get(format!("{NW}/packetCaptures?api-version=abc")).fails(400, "InvalidApiVersionParameter", Some("api-version"),
            &[r#"api-version "abc" is not valid: it is not of the form YYYY-MM-DD"#]),
        get(format!("{busy}?api-version=2023-02-29")).fails(400, "InvalidApiVersionParameter", Some("api-version"),
            &["month 2 of 2023 has 28 days"]),
        get(format!("{busy}?api-version=2024-05-01-preview!")).fails(400, "InvalidApiVersionParameter", Some("api-version"),
            &[r#""preview!" after the date is not a suffix such as preview"#]),

        // ---- target
        put(&pcv, props(|p| { p.as_object_mut().unwrap().remove("target"); })).fails(400, "InvalidRequestFormat", Some("properties.target"),
            &["properties.target is required", "/providers/Microsoft.Compute/virtualMachines/{vm}"]),
        put(&pcv, props(|p| p["target"] = json!(""))).fails(400, "InvalidRequestFormat", Some("properties.target"),
            &["properties.target is required"]),
        put(&pcv, props(|p| p["target"] = json!("vm1"))).fails(400, "LinkedInvalidPropertyId", Some("properties.target"),
            &[r#"properties.target "vm1" is not a valid resource id: it must start with /subscriptions/"#]),
        put(&pcv, props(|p| p["target"] = json!(ACCOUNT))).fails(400, "LinkedInvalidPropertyId", Some("properties.target"),
            &["is a storage account id, but it must be a virtual machine or scale set id"]),
        put(&pcv, props(|p| p["target"] = json!(format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/ss1/virtualMachines/3"))))
            .fails(400, "LinkedInvalidPropertyId", Some("properties.target"),
            &["is a scale-set instance id", r#""scope":{"include":["3"]}"#]),
        put(&pcv, props(|p| p["target"] = json!(vm_id("ghost")))).fails(400, "InvalidRequestFormat", Some("properties.target"),
            &["virtual machine", "/virtualMachines/ghost is not registered", "install the agent"]),
        put(&pcv, props(|p| p["target"] = json!(vm_id("vm2")))).fails(400, "InvalidRequestFormat", Some("properties.target"),
            &["virtual machine vm2 is in eastus, but network watcher NetworkWatcher_westus serves westus", "use the watcher of eastus"]),
        put(format!("{eastus}/packetCaptures/pc1?{V}"), Some(good().to_string().into_bytes())).fails(400, "InvalidRequestFormat", Some("properties.target"),
            &["virtual machine vm1 is in westus, but network watcher NetworkWatcher_eastus serves eastus"]),
        put(&pcv, props(|p| p["scope"] = json!({"include": ["0"]}))).fails(400, "InvalidRequestFormat", Some("properties.scope"),
            &["applies only to scale sets", "remove scope"]),

        // ---- filters
        put(&pcv, filter(json!({"protocol": "GRE"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].protocol"),
            &[r#""GRE" is not supported: use TCP, UDP, ICMP, ICMPv6 or Any"#]),
        // netwatch's filter fields (issue 18): each error names its field and how to write it.
        put(&pcv, filter(json!({"icmpType": "8"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].icmpType"),
            &["is only for ICMP messages, but protocol is Any", r#"set "protocol" to "ICMP" (IPv4) or "ICMPv6""#]),
        put(&pcv, filter(json!({"protocol": "ICMP", "icmpType": "echo"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].icmpType"),
            &[r#""echo" is not an ICMP type: write one number 0-255"#]),
        put(&pcv, filter(json!({"protocol": "ICMPv6", "icmpCode": "256"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].icmpCode"),
            &[r#""256" is out of range: an ICMP code is 0-255"#]),
        put(&pcv, filter(json!({"protocol": "ICMP", "icmpType": 8}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].icmpType"),
            &[r#"must be a string, not the number 8: quote it, as in "8""#]),
        put(&pcv, filter(json!({"protocol": "ICMP", "remotePort": "53"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].remotePort"),
            &["cannot match: ICMP has no ports"]),
        put(&pcv, filter(json!({"protocol": "ICMP", "localIPAddress": "fd00::1"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localIPAddress"),
            &["is IPv6 only, but ICMP is never IPv6", r#"use protocol "ICMPv6""#]),
        put(&pcv, filter(json!({"protocol": "ICMPv6", "remoteIPAddress": "10.0.0.0/8"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].remoteIPAddress"),
            &["is IPv4 only, but ICMPv6 is never IPv4", r#"use protocol "ICMP""#]),
        put(&pcv, filter(json!({"protocol": "UDP", "tcpFlags": "SYN"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].tcpFlags"),
            &["is only for TCP, but protocol is UDP"]),
        put(&pcv, filter(json!({"tcpFlags": "SYN|ACK"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].tcpFlags"),
            &[r#""SYN|ACK" is not a TCP flag"#, r#"as in "SYN;!ACK""#]),
        put(&pcv, filter(json!({"tcpFlags": "ACK;!ack"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].tcpFlags"),
            &["asks for ACK to be both set and clear"]),
        put(&pcv, filter(json!({"direction": "in"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].direction"),
            &[r#""in" is not a direction: use "inbound""#]),
        put(&pcv, filter(json!({"remoteIPAddress": "10.0.0.0/33"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].remoteIPAddress"),
            &["has prefix length 33, more than IPv4's 32"]),
        put(&pcv, filter(json!({"localIPAddress": "fd00::/x"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localIPAddress"),
            &["is not a CIDR block: write the prefix length as a number 0-128"]),
        put(&pcv, filter(json!({"remoteIPAddress": "10.0.0.0/8-10.9.0.0"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].remoteIPAddress"),
            &["is a CIDR block, which cannot be a range's end"]),
        put(&pcv, filter(json!({"tcpflags": "SYN"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].tcpflags"),
            &[r#"unknown field "tcpflags" (did you mean "tcpFlags"?)"#]),
        // bpfExpression: compiled by libpcap on the PUT, its own message quoted.
        put(&pcv, filter(json!({"bpfExpression": "tcp prot 22"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].bpfExpression"),
            &[r#"properties.filters[0].bpfExpression "tcp prot 22" does not compile: libpcap: can't parse filter expression: syntax error"#]),
        put(&pcv, filter(json!({"bpfExpression": "ether host 2:0:0:0:0:1"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].bpfExpression"),
            &["does not compile: libpcap: ethernet addresses supported only on"]),
        put(&pcv, filter(json!({"bpfExpression": "greater 1000"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].bpfExpression"),
            &["reads the packet's length (len, less, greater)", "as in ip[2:2] > 1000"]),
        put(&pcv, filter(json!({"bpfExpression": "tcp and \u{7}"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].bpfExpression"),
            &["has the control character"]),
        put(&pcv, filter(json!({"bpfProgram": "1,6 0 0 65535"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].bpfProgram"),
            &["is set without bpfExpression", "leave it out"]),
        put(&pcv, filter(json!({"bpfExpression": "udp", "bpfProgram": "x"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].bpfProgram"),
            &["is not a program netwatch compiled"]),
        put(&pcv, filter(json!({"bpfExpression": ["udp"]}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].bpfExpression"),
            &["must be a string"]),
        put(&pcv, filter(json!({"localIPAddress": "10.0.0.256"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localIPAddress"),
            &[r#"properties.filters[0].localIPAddress "10.0.0.256" is not an IPv4 or IPv6 address"#]),
        put(&pcv, filter(json!({"remoteIPAddress": "1.1.1.1-255.255.255"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].remoteIPAddress"),
            &[r#""255.255.255" is not an IPv4 or IPv6 address"#]),
        put(&pcv, filter(json!({"remoteIPAddress": "10.0.0.7/24"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].remoteIPAddress"),
            &["has host bits set under its /24 mask", r#"write the network, "10.0.0.0/24", or "10.0.0.7" for that one address"#]),
        put(&pcv, filter(json!({"localIPAddress": "10.0.0.9-10.0.0.1"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localIPAddress"),
            &["10.0.0.9 is greater than 10.0.0.1", r#"as in "10.0.0.1-10.0.0.9""#]),
        put(&pcv, filter(json!({"localIPAddress": "10.0.0.1", "remoteIPAddress": "2001:db8::1"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0]"),
            &["can never match", "use one filter per family"]),
        put(&pcv, filter(json!({"localPort": "90-80"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localPort"),
            &["90 is greater than 80", r#"as in "80-90""#]),
        put(&pcv, filter(json!({"remotePort": "70000"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].remotePort"),
            &[r#"properties.filters[0].remotePort "70000" is out of range: ports are 0-65535"#]),
        put(&pcv, filter(json!({"localPort": "80;http"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localPort"),
            &[r#""80;http" is not a valid port list: "http" is not a port"#]),
        put(&pcv, filter(json!({"localPort": "80;1000-2000"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localPort"),
            &["mixes a range with a list", r#"put "1000-2000" in a separate filter"#]),
        put(&pcv, filter(json!({"localIPAddress": "10.0.0.1", "localIpAddress": "10.0.0.2"}))).fails(400, "InvalidRequestFormat", Some("properties.filters[0].localIPAddress"),
            &["properties.filters[0].localIPAddress is given more than once"]),
        put(&pcv, props(|p| p["filters"] = json!([{"protocol": "TCP"}, {"localip": "10.0.0.1"}]))).fails(400, "InvalidRequestFormat", Some("properties.filters[1].localip"),
            &[r#"unknown field "localip" (did you mean "localIPAddress"?)"#]),

        // ---- limits
        put(&pcv, props(|p| p["bytesToCapturePerPacket"] = json!(-1))).fails(400, "InvalidRequestFormat", Some("properties.bytesToCapturePerPacket"),
            &["properties.bytesToCapturePerPacket -1 is out of range: use 0-4294967295 bytes"]),
        put(&pcv, props(|p| p["bytesToCapturePerPacket"] = json!(4_294_967_296_u64))).fails(400, "InvalidRequestFormat", Some("properties.bytesToCapturePerPacket"),
            &["4294967296 is out of range: use 0-4294967295 bytes", "0 keeps whole packets"]),
        put(&pcv, props(|p| p["bytesToCapturePerPacket"] = json!(u64::MAX))).fails(400, "InvalidRequestFormat", Some("properties.bytesToCapturePerPacket"),
            &["18446744073709551615 is out of range"]),
        put(&pcv, props(|p| p["timeLimitInSeconds"] = json!(18_001))).fails(400, "InvalidRequestFormat", Some("properties.timeLimitInSeconds"),
            &["properties.timeLimitInSeconds 18001 is out of range: use 0-18000 seconds", "set continuousCapture"]),
        put(&pcv, props(|p| p["totalBytesPerSession"] = json!(-5))).fails(400, "InvalidRequestFormat", Some("properties.totalBytesPerSession"),
            &["properties.totalBytesPerSession -5 is out of range: use 0-4294967295 bytes"]),

        // ---- storage location and paths
        put(&pcv, props(|p| { p.as_object_mut().unwrap().remove("storageLocation"); })).fails(400, "InvalidRequestFormat", Some("properties.storageLocation"),
            &["properties.storageLocation is required", "a storageId"]),
        put(&pcv, props(|p| p["storageLocation"] = json!({}))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation"),
            &["needs a storageId", "a filePath on the host (such as /var/captures/pc1.cap)"]),
        put(&pcv, props(|p| p["storageLocation"]["storageId"] = json!(vm_id("vm1")))).fails(400, "LinkedInvalidPropertyId", Some("properties.storageLocation.storageId"),
            &["is a virtual machine id, but it must be a storage account id"]),
        put(&pcv, props(|p| p["storageLocation"]["storagePath"] = json!("https://x.blob.core.windows.net/c")))
            .fails(400, "InvalidRequestFormat", Some("properties.storageLocation.storagePath"),
            &["is used only with storageId"]),
        put(&pcv, props(|p| p["storageLocation"] = json!({"storageId": ACCOUNT, "storagePath": "not a uri"}))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation.storagePath"),
            &[r#""not a uri" is not a well-formed URI"#, "leave it out"]),
        put(&pcv, props(|p| p["storageLocation"]["filePath"] = json!("/var/captures/pc1.pcap"))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation.filePath"),
            &[r#""/var/captures/pc1.pcap" must name a .cap file, such as /var/captures/pc1.cap"#]),
        put(&pcv, props(|p| p["storageLocation"]["filePath"] = json!("/var/captures/../etc/pc1.cap"))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation.filePath"),
            &[r#"is not a plain path: it has an empty, "." or ".." component"#]),
        put(&pcv, props(|p| p["storageLocation"]["filePath"] = json!("/tmp/pc1.cap"))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation.filePath"),
            &["is not under /var/captures", "such as /var/captures/pc1.cap"]),
        put(&pcv, props(|p| p["storageLocation"]["filePath"] = json!(r"D:\capture\pc1.cap"))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation.filePath"),
            &["is a Windows path", "such as /var/captures/pc1.cap"]),
        put(&pcv, props(|p| p["storageLocation"] = json!({"localPath": "/var/captures/pc1.cap"})))
            .fails(400, "InvalidRequestFormat", Some("properties.storageLocation.localPath"),
            &["localPath is used only when continuousCapture is true or false", "give the path as filePath"]),
        put(&pcv, continuous(|p| p["storageLocation"]["filePath"] = json!("/var/captures/pc1.cap"))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation.filePath"),
            &["filePath cannot be used when continuousCapture is set", "give the path as localPath"]),
        put(&pcv, continuous(|p| p["storageLocation"]["localPath"] = json!("/var/captures/ring"))).fails(400, "InvalidRequestFormat", Some("properties.storageLocation.localPath"),
            &["must name a .cap file"]),
        put(&pcv, props(|p| p["captureSettings"] = json!({"fileCount": 3}))).fails(400, "InvalidRequestFormat", Some("properties.captureSettings"),
            &["applies only when continuousCapture is true or false", "set continuousCapture, or remove captureSettings"]),
        put(&pcv, continuous(|p| p["captureSettings"] = json!({"fileCount": 10_001}))).fails(400, "InvalidRequestFormat", Some("properties.captureSettings.fileCount"),
            &["properties.captureSettings.fileCount 10001 is out of range: use 0-10000 files"]),
        put(&pcv, continuous(|p| p["captureSettings"] = json!({"fileSizeInBytes": -1}))).fails(400, "InvalidRequestFormat", Some("properties.captureSettings.fileSizeInBytes"),
            &["-1 is out of range: use 0-4294967295 bytes"]),
        put(&pcv, continuous(|p| p["captureSettings"] = json!({"sessionTimeLimitInSeconds": 604_801}))).fails(400, "InvalidRequestFormat", Some("properties.captureSettings.sessionTimeLimitInSeconds"),
            &["604801 is out of range: use 0-604800 seconds (7 days)"]),

        // ---- network watchers (one per location, kept for good)
        put(format!("{}?{V}", NW.replace("NetworkWatcherRG", "rg1").replace("NetworkWatcher_westus", "nw1")), raw(r#"{"tags":{}}"#))
            .fails(400, "InvalidRequestFormat", Some("location"), &[r#"location is required, such as "westus""#]),
        put(format!("{}?{V}", NW.replace("NetworkWatcherRG", "rg1").replace("NetworkWatcher_westus", "nw1")), raw(r#"{"location":"mars"}"#))
            .fails(400, "InvalidRequestFormat", Some("location"), &[r#"location "mars" is not served here: use one of westus, eastus, westeurope"#]),
        put(format!("{}?{V}", NW.replace("NetworkWatcherRG", "rg1").replace("NetworkWatcher_westus", "nw1")), raw(r#"{"location":"West US"}"#))
            .fails(409, "Conflict", None, &["location westus already has a network watcher", "/networkWatchers/NetworkWatcher_westus", "one watcher per location"]),
        put(format!("{NW}?{V}"), raw(r#"{"location":"eastus"}"#))
            .fails(400, "InvalidRequestFormat", Some("location"), &["network watcher NetworkWatcher_westus is in westus: a watcher cannot move to eastus"]),

        // ---- state, methods, routes
        put(format!("{busy}?{V}"), Some(good().to_string().into_bytes())).fails(409, "Conflict", None,
            &["packet capture busy is NotStarted", "stop it (POST …/stop) or delete it"]),
        request(Method::PATCH, format!("{busy}?{V}"), Some(good().to_string().into_bytes())).fails(405, "MethodNotAllowed", None,
            &["PATCH is not allowed on", "/packetCaptures/busy"]),
        post(format!("{busy}?{V}")).fails(405, "MethodNotAllowed", None, &["POST is not allowed"]),
        get(format!("{busy}/stop?{V}")).fails(405, "MethodNotAllowed", None, &["GET is not allowed", "/stop"]),
        post(format!("{busy}/start?{V}")).fails(404, "NotFound", None, &["no route for POST", "/packetCaptures/busy/start"]),
        get(format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Network/virtualNetworks?{V}"))
            .fails(404, "NotFound", None, &["no route for GET /subscriptions/"]),
        get(format!("/subscriptions/{SUB}/providers/Microsoft.Network/locations/westus/operations/nope?{V}"))
            .fails(404, "NotFound", None, &[r#"operation "nope" was not found"#]),
    ];
    assert!(rows.len() >= 30, "{} rows", rows.len());

    let mut failures = Vec::new();
    for row in rows {
        let sent = &row.request;
        let what = format!("{} {}", sent.method, sent.uri.chars().take(200).collect::<String>());
        let (status, headers, body) = send(&api, sent).await;
        let error = &body["error"];
        let message = error["message"].as_str().unwrap_or_default();
        let mut wrong = Vec::new();
        if status.as_u16() != row.status {
            wrong.push(format!("status {} (want {})", status.as_u16(), row.status));
        }
        if error["code"] != row.code {
            wrong.push(format!("code {} (want {})", error["code"], row.code));
        }
        if error["target"].as_str() != row.target {
            wrong.push(format!("target {} (want {:?})", error["target"], row.target));
        }
        for fragment in &row.message {
            if !message.contains(fragment.as_str()) {
                wrong.push(format!("message lacks {fragment:?}"));
            }
        }
        // STYLE 8: no final period.
        if message.is_empty() || message.ends_with('.') {
            wrong.push("message is empty or ends with '.'".to_owned());
        }
        if row.status == 405 && !headers.contains_key(header::ALLOW) {
            wrong.push("405 without an Allow header".to_owned());
        }
        if error["details"] != json!([]) {
            wrong.push(format!("details {}", error["details"]));
        }
        let after = state(&api, &db).await;
        if after != before {
            wrong.push(format!("the state changed:\n{after}"));
            // Blame this row only.
            before = after;
        }
        if !wrong.is_empty() {
            failures.push(format!("{what}\n    {}\n    answer: {body}", wrong.join("\n    ")));
        }
    }
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
