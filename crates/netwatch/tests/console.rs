//! The web console (issue 17) in a real browser: Debian's Chromium driven
//! through chromedriver (WebDriver, by fantoccini), against `netwatch up`
//! (controller, local storage and this host's agent) in namespace b and a
//! second agent, VM host-a, in namespace a.
//!
//! The browser, chromedriver and `up` run in b; this test talks to
//! chromedriver from a thread that entered b. Chromium trusts `up`'s CA
//! through an NSS database in its own `$HOME`. Screenshots of every page go
//! to `target/console-screenshots/` (CI keeps them; three are in the README).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use netwatch_testkit::{A4, B4, IF_A, NetnsPair, Place, read_pcap};
use serde_json::{Value, json};

use crate::deployment::{Guard, SUB, VM, run_sdk, start_up_args};
use crate::util::netwatch;

const CHROMIUM: &str = "/usr/lib/chromium/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// chromedriver's port, in the test's own namespace b.
const DRIVER_PORT: u16 = 9515;
/// An interface name the agent of host-a reports: the page must show it as text.
const HOSTILE_INTERFACE: &str = "<b>nw&x";
/// A tag value a user set: as text, never an image.
const HOSTILE_TAG: &str = "<img src=x onerror=alert(1)>";
/// The ports test traffic goes to on host-a: the capture's two filters keep
/// the first two, and nothing of the third.
const PORTS: [u16; 3] = [5001, 5002, 5003];
const PER_PORT: usize = 400;

fn host_a_id() -> String {
    format!("/subscriptions/{SUB}/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachines/{VM}")
}

/// Fails with what to install when the browser is missing: never a skip.
fn require_browser() {
    for (path, package) in [
        (CHROMIUM, "chromium"),
        (CHROMEDRIVER, "chromium-driver"),
        ("/usr/bin/certutil", "libnss3-tools"),
    ] {
        assert!(
            Path::new(path).exists(),
            "{path} is missing: apt-get install -y {package} (scripts/test.sh installs it)"
        );
    }
}

/// Where screenshots are kept.
fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `netwatch up` (with its agent) in b, host-a's agent in a, chromedriver in b.
struct Setup {
    pair: NetnsPair,
    dir: tempfile::TempDir,
    url: String,
    ca: PathBuf,
    admin: String,
    _up: Guard,
    _agent: Guard,
    _driver: Guard,
    downloads: PathBuf,
}

impl Setup {
    fn start() -> Setup {
        require_browser();
        let pair = NetnsPair::new();
        let dir = tempfile::tempdir().unwrap();
        // host-a's agent reports this interface with its name as the kernel has
        // it (a veth pair inside a: `dummy` is not in every kernel).
        netwatch_testkit::run(Command::new("ip").args([
            "-n",
            &pair.a,
            "link",
            "add",
            HOSTILE_INTERFACE,
            "type",
            "veth",
            "peer",
            "name",
            "nwpeer",
        ]));
        // `up` with its own agent.
        let (up, url) = start_up_args(&pair.b, dir.path(), &format!("{B4}:0"), &[]);
        let ca = dir.path().join("up/ca.pem");
        let read = |name: &str| {
            let text = std::fs::read_to_string(dir.path().join("up/credentials.toml")).unwrap();
            let credentials: toml::Table = toml::from_str(&text).unwrap();
            credentials[name].as_str().unwrap().to_owned()
        };
        let admin = read("admin_token");
        let agent = NetnsPair::exec(&pair.a, netwatch())
            .args([
                "agent",
                "--server",
                &url,
                "--enroll-token",
                &read("agent_token"),
                "--ca",
            ])
            .arg(&ca)
            .args(["--vm-name", VM, "-g", "rg1", "-l", "westus", "-i", IF_A, "--data-dir"])
            .arg(dir.path().join("agent"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("agent.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn netwatch agent");

        // Chromium's own home, with up's CA trusted in its NSS database.
        let home = dir.path().join("home");
        let nssdb = home.join(".pki/nssdb");
        std::fs::create_dir_all(&nssdb).unwrap();
        let db = format!("sql:{}", nssdb.display());
        netwatch_testkit::run(Command::new("certutil").args(["-d", &db, "-N", "--empty-password"]));
        netwatch_testkit::run(
            Command::new("certutil")
                .args(["-d", &db, "-A", "-t", "C,,", "-n", "netwatch-up", "-i"])
                .arg(&ca),
        );
        let downloads = dir.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let driver = NetnsPair::exec(&pair.b, CHROMEDRIVER)
            .arg(format!("--port={DRIVER_PORT}"))
            .env("HOME", &home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("chromedriver.log")).unwrap(),
            ))
            .spawn()
            .expect("spawn chromedriver");
        let setup = Setup {
            pair,
            url,
            ca,
            admin,
            _up: up,
            _agent: Guard(agent),
            _driver: Guard(driver),
            downloads,
            dir,
        };
        setup.wait_for_hosts();
        setup
    }

    /// One API call with `token` (Python requests, in b); `{status, body}`.
    fn api(&self, token: &str, method: &str, path: &str, body: Option<&Value>) -> Value {
        let body = body.map(Value::to_string);
        let mut args = vec!["rest", method, path];
        if let Some(body) = &body {
            args.push(body);
        }
        run_sdk(&self.pair.b, (&self.url, token, &self.ca), &args, || self.logs())
    }

    fn logs(&self) -> String {
        let read = |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!(
            "--- up.log\n{}\n--- agent.log\n{}\n--- chromedriver.log (tail)\n{}",
            read("up.log"),
            read("agent.log"),
            read("chromedriver.log")
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        )
    }

    /// Both agents registered and connected.
    fn wait_for_hosts(&self) {
        let path = format!("/subscriptions/{SUB}/providers/Microsoft.Compute/virtualMachines?api-version=2024-07-01");
        let both = netwatch_testkit::eventually(200, Duration::from_millis(100), || {
            let answer = self.api(&self.admin, "GET", &path, None);
            let vms = answer["body"]["value"].as_array().cloned().unwrap_or_default();
            vms.len() == 2 && vms.iter().all(|vm| vm["properties"]["netwatch"]["connected"] == true)
        });
        assert!(both, "the two agents did not connect within 20 s\n{}", self.logs());
    }
}

/// Sends `per_port` UDP datagrams from b to host-a on each of `ports`, a
/// millisecond apart, each payload saying its port and number.
fn send_udp(ns: &str, ports: &[u16], per_port: usize) {
    let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
    let program = format!(
        "import socket, time\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         for i in range({per_port}):\n    for p in ({},):\n        s.sendto(b'netwatch-console %d %06d' % (p, i), ('{}', p))\n    time.sleep(0.005)\n",
        ports.join(", "),
        A4[0]
    );
    netwatch_testkit::run(NetnsPair::exec(ns, "python3").args(["-c", &program]));
}

/// chromedriver's Chrome DevTools bridge (`goog/cdp/execute`), for what
/// WebDriver has no command for: the viewport and downloads.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params}).to_string();
        (http::Method::POST, Some(body))
    }
}

/// A browser session and what the steps share.
struct Browser<'a> {
    client: Client,
    setup: &'a Setup,
    shots: PathBuf,
}

impl Browser<'_> {
    async fn cdp(&self, cmd: &'static str, params: Value) {
        self.client
            .issue_cmd(Cdp { cmd, params })
            .await
            .unwrap_or_else(|err| panic!("CDP {cmd}: {err}"));
    }

    async fn viewport(&self, width: u32, height: u32, mobile: bool) {
        let params = json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile});
        self.cdp("Emulation.setDeviceMetricsOverride", params).await;
    }

    async fn shot(&self, name: &str) {
        // Let the last update paint.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).unwrap();
    }

    /// Runs `script` (a function body; `arguments` as WebDriver gives them).
    async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// The text of the first element `css` finds, or None.
    async fn text(&self, css: &str) -> Option<String> {
        let found = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                vec![json!(css)],
            )
            .await;
        found.as_str().map(str::to_owned)
    }

    async fn count(&self, css: &str) -> usize {
        let n = self
            .js(
                "return document.querySelectorAll(arguments[0]).length;",
                vec![json!(css)],
            )
            .await;
        n.as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(0)
    }

    /// Waits (20 s at most) until `check` holds; fails saying `what`.
    async fn until(&self, what: &str, mut check: impl AsyncFnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check().await {
            if Instant::now() > deadline {
                let body = self.text("body").await.unwrap_or_default();
                self.shot(&format!("failed-{}", what.replace(' ', "-"))).await;
                panic!(
                    "the console did not show {what} within 20 s; the page says:\n{body}\n{}",
                    self.setup.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the text of `css` passes `check`; that text.
    async fn until_text(&self, css: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
        let mut last = String::new();
        self.until(what, async || match self.text(css).await {
            Some(text) if check(&text) => {
                last = text;
                true
            }
            _ => false,
        })
        .await;
        last
    }

    /// The number `css` shows (digits only), 0 when none.
    async fn number(&self, css: &str) -> u64 {
        self.text(css).await.and_then(|t| t.trim().parse().ok()).unwrap_or(0)
    }

    /// The element `css` finds, waited for (20 s at most).
    async fn element(&self, css: &str, what: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no {css} to {what}: {err}\n{}", self.setup.logs()))
    }

    async fn click(&self, css: &str) {
        let element = self.element(css, "click").await;
        element.click().await.unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    async fn type_into(&self, css: &str, text: &str) {
        let element = self.element(css, "type into").await;
        element.clear().await.unwrap();
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    async fn select(&self, css: &str, value: &str) {
        let element = self.element(css, "choose in").await;
        // Options may come from the API a moment after the form.
        let options = format!("{css} option[value=\"{value}\"]");
        self.until(&format!("option {value} in {css}"), async || {
            self.count(&options).await > 0
        })
        .await;
        element
            .select_by_value(value)
            .await
            .unwrap_or_else(|err| panic!("choose {value} in {css}: {err}"));
    }

    async fn sign_in(&self, token: &str, role: &str) {
        self.client.goto(&format!("{}/console/", self.setup.url)).await.unwrap();
        self.type_into("#token", token).await;
        self.click("#sign-in").await;
        self.until_text("#role", &format!("signed in as {role}"), |text| text.trim() == role)
            .await;
    }

    async fn go(&self, nav: &str) {
        self.click(&format!("a[data-nav=\"{nav}\"]")).await;
    }
}

#[test]
fn the_console_in_chromium() {
    let setup = Setup::start();

    // What the page must show as text: a tag a user set on host-a.
    let tag = setup.api(
        &setup.admin,
        "PATCH",
        &format!("{}?api-version=2024-07-01", host_a_id()),
        Some(&json!({"tags": {"owner": HOSTILE_TAG}})),
    );
    assert_eq!(tag["status"], 200, "{tag}");
    // A reader token, made through the API.
    let made = setup.api(
        &setup.admin,
        "POST",
        "/netwatch/v1/tokens",
        Some(&json!({"name": "console-reader", "role": "reader"})),
    );
    assert_eq!(made["status"], 201, "{made}");
    let reader = made["body"]["token"].as_str().unwrap().to_owned();

    let shots = screenshots_dir();
    let place = Place::netns(&setup.pair.b, "127.0.0.1");
    place.run(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(session(&setup, &reader, shots));
    });
}

async fn session(setup: &Setup, reader: &str, shots: PathBuf) {
    let driver = format!("http://127.0.0.1:{DRIVER_PORT}");
    let connected = async {
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", DRIVER_PORT)).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        connected.await,
        "chromedriver did not listen within 10 s\n{}",
        setup.logs()
    );
    let profile = setup.dir.path().join("profile");
    let capabilities = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     format!("--user-data-dir={}", profile.display()), "--window-size=1280,800"],
            "prefs": {"download.default_directory": setup.downloads.display().to_string(),
                      "download.prompt_for_download": false},
        },
    });
    let serde_json::Value::Object(capabilities) = capabilities else {
        unreachable!()
    };
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&driver)
        .await
        .unwrap_or_else(|err| panic!("a Chromium session: {err}\n{}", setup.logs()));
    let browser = Browser { client, setup, shots };
    browser.viewport(1280, 800, false).await;
    browser
        .cdp(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": setup.downloads.display().to_string()}),
        )
        .await;

    let outcome = async {
        operator_flow(&browser).await;
        reader_flow(&browser, reader).await;
    };
    outcome.await;
    let _ = browser.client.close().await;
}

/// Sign in as admin; both hosts; a capture created from the form, watched,
/// stopped, downloaded, checked packet by packet, deleted.
async fn operator_flow(b: &Browser<'_>) {
    let setup = b.setup;
    b.client.goto(&format!("{}/console/", setup.url)).await.unwrap();
    b.element("#token", "see on the sign-in page").await;
    b.shot("sign-in").await;
    // A wrong token is refused with the server's words.
    b.type_into("#token", "not-a-token").await;
    b.click("#sign-in").await;
    b.until_text("#sign-in-error", "a refused token's message", |text| {
        !text.trim().is_empty()
    })
    .await;
    b.sign_in(&setup.admin, "admin").await;

    // Hosts: both, connected; host-a's hostile interface name and tag as text.
    b.go("hosts").await;
    let host_a = format!("[data-test=\"host-row\"][data-name=\"{VM}\"]");
    b.until_text(
        &format!("{host_a} [data-field=\"connected\"]"),
        "host-a connected",
        |text| text.contains("connected") && !text.contains("disconnected"),
    )
    .await;
    b.until("two hosts", async || b.count("[data-test=\"host-row\"]").await == 2)
        .await;
    let interfaces = b
        .until_text(
            &format!("{host_a} [data-field=\"interfaces\"]"),
            "host-a's interfaces",
            |text| text.contains(HOSTILE_INTERFACE),
        )
        .await;
    assert!(interfaces.contains(IF_A), "{interfaces}");
    let tags = b
        .until_text(&format!("{host_a} [data-field=\"tags\"]"), "host-a's tags", |text| {
            text.contains(HOSTILE_TAG)
        })
        .await;
    assert!(tags.contains("owner"), "{tags}");
    assert_eq!(
        b.count(&format!("{host_a} img, {host_a} b")).await,
        0,
        "markup from a host became elements"
    );
    b.shot("hosts").await;
    // The policy holds in the browser: a script added inline does not run.
    let ran = b
        .js(
            "const s = document.createElement('script'); s.textContent = 'window.__inlineRan = 1'; \
             document.head.append(s); return window.__inlineRan === 1;",
            vec![],
        )
        .await;
    assert_eq!(ran, json!(false), "an inline script ran under the console's policy");

    // Enroll a host (admin): the command `vm extension set` gives.
    b.type_into("#enroll-vm-name", "enrolled-1").await;
    b.type_into("#enroll-vm-group", "rg2").await;
    b.click("form:has(#enroll-vm-name) button[type=\"submit\"]").await;
    let command = b
        .until_text("#enroll-vm-command", "the install command", |text| {
            text.contains("install.sh")
        })
        .await;
    assert!(
        command.contains("--enroll-token") && command.contains(&setup.url),
        "{command}"
    );
    b.shot("hosts-enroll").await;

    // Captures: none yet.
    b.go("captures").await;
    b.until("the empty state", async || b.count("[data-test=\"empty\"]").await > 0)
        .await;
    b.until_text("#live", "the live stream connected", |text| text.trim() == "live")
        .await;

    // The form: a bad filter is refused in the page with the API's own words,
    // and nothing is created.
    b.click("[data-action=\"new-capture\"]").await;
    let name = "console-pc1";
    b.select("#location", "westus").await;
    b.select("#target-type", "AzureVM").await;
    b.select("#target", &host_a_id()).await;
    // A name with markup: the API's refusal, as text.
    b.type_into("#capture-name", HOSTILE_TAG).await;
    let refused = b
        .until_text("#form-error", "the refused name", |text| text.contains(HOSTILE_TAG))
        .await;
    assert!(
        refused.contains("packetCaptureName") || refused.contains("character"),
        "{refused}"
    );
    assert_eq!(
        b.count("#form-error img, [data-test=\"field-error\"] img").await,
        0,
        "a name became markup"
    );
    b.type_into("#capture-name", name).await;
    let account = format!(
        "/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal"
    );
    b.select("#storage-account", &account).await;
    b.type_into("#time-limit", "120").await;
    b.click("#add-filter").await;
    b.click("#add-filter").await;
    b.until("two filter rows", async || {
        b.count("[data-test=\"filter-row\"]").await == 2
    })
    .await;
    // The rows by their order, whatever elements hold them.
    b.js(
        "document.querySelectorAll('[data-test=\"filter-row\"]').forEach((r, i) => r.id = 'test-filter-' + (i + 1));",
        vec![],
    )
    .await;
    let row = |n: usize, field: &str| format!("#test-filter-{n} [data-field=\"{field}\"]");
    b.select(&row(1, "protocol"), "UDP").await;
    b.type_into(&row(1, "localPort"), &PORTS[0].to_string()).await;
    b.select(&row(2, "protocol"), "UDP").await;
    b.type_into(&row(2, "localPort"), &PORTS[1].to_string()).await;
    b.type_into(&row(2, "localIPAddress"), HOSTILE_TAG).await;
    // The API's message for exactly this body.
    let expected = setup.api(
        &setup.admin,
        "POST",
        "/netwatch/v1/validate/packetCapture",
        Some(&json!({"properties": {
            "target": host_a_id(),
            "storageLocation": {"storageId": account},
            "timeLimitInSeconds": 120,
            "filters": [{"protocol": "UDP", "localPort": PORTS[0].to_string()},
                        {"protocol": "UDP", "localPort": PORTS[1].to_string(), "localIPAddress": HOSTILE_TAG}],
        }})),
    );
    assert_eq!(expected["status"], 400, "{expected}");
    let message = expected["body"]["error"]["message"].as_str().unwrap().to_owned();
    let shown = b
        .until_text("#form-error", "the API's message for the bad filter", |text| {
            text.contains(&message)
        })
        .await;
    assert!(shown.contains(HOSTILE_TAG), "{shown}");
    assert_eq!(
        b.count("#form-error img, [data-test=\"field-error\"] img").await,
        0,
        "the message became markup"
    );
    let disabled = b
        .js("return document.querySelector('#create-capture').disabled;", vec![])
        .await;
    assert_eq!(disabled, json!(true), "the form can be sent while the API refuses it");
    // Even sent by force, nothing is created.
    b.js(
        "document.querySelector('#create-capture').closest('form').requestSubmit();",
        vec![],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let watcher = format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus"
    );
    let capture_path = format!("{watcher}/packetCaptures/{name}?api-version=2024-05-01");
    let none = setup.api(&setup.admin, "GET", &capture_path, None);
    assert_eq!(none["status"], 404, "a refused form created a capture: {none}");
    b.shot("new-capture-refused").await;

    // Fixed: the request is shown, and the command that does the same.
    b.type_into(&row(2, "localIPAddress"), A4[0]).await;
    b.until_text("#form-error", "the error cleared", |text| text.trim().is_empty())
        .await;
    let preview = b
        .until_text("#request-preview", "the request", |text| text.contains("\"filters\""))
        .await;
    let request: Value = serde_json::from_str(&preview).unwrap_or_else(|err| panic!("{err}: {preview}"));
    let filters = request.pointer("/properties/filters").unwrap_or(&request["filters"]);
    assert_eq!(filters.as_array().map(Vec::len), Some(2), "{preview}");
    let command = b.text("#cli-preview").await.unwrap_or_default();
    assert!(
        command.contains("packet-capture create") && command.contains(name),
        "{command}"
    );
    b.shot("new-capture").await;
    b.click("#create-capture").await;

    // The detail page: Running, counters rising while traffic flows, without a reload.
    b.until_text("#capture-status", "the capture running", |text| {
        text.trim() == "Running"
    })
    .await;
    b.js("window.__netwatchNoReload = 1;", vec![]).await;
    let ns = setup.pair.b.clone();
    let traffic = std::thread::spawn(move || send_udp(&ns, &PORTS, PER_PORT));
    let packets = "[data-field=\"packets\"]";
    b.until("packets counted", async || b.number(packets).await > 0).await;
    let first = b.number(packets).await;
    b.until("the count rising", async || b.number(packets).await > first)
        .await;
    assert_eq!(
        b.js("return window.__netwatchNoReload;", vec![]).await,
        json!(1),
        "the page reloaded to update its counters"
    );
    let watch = b.text("#live-command").await.unwrap_or_default();
    assert_eq!(
        watch,
        "netwatch network watcher packet-capture stream --name console-pc1 --location westus -w - | wireshark -k -i -",
        "the running capture's page does not say how to watch it live"
    );
    b.shot("capture-running").await;
    traffic.join().unwrap();
    let wanted = (2 * PER_PORT) as u64;
    b.until("every packet counted", async || b.number(packets).await >= wanted)
        .await;

    // The list shows it with the same counters; stop it there.
    b.go("captures").await;
    let listed = format!("[data-test=\"capture-row\"][data-name=\"{name}\"]");
    b.until_text(
        &format!("{listed} [data-field=\"packets\"]"),
        "the listed count",
        |text| text.trim() == wanted.to_string(),
    )
    .await;
    b.shot("captures").await;
    b.click(&format!("{listed} [data-action=\"stop\"]")).await;
    b.until_text(
        &format!("{listed} [data-field=\"status\"]"),
        "the capture stopped",
        |text| text.trim() == "Stopped",
    )
    .await;
    b.until_text(
        &format!("{listed} [data-field=\"upload\"]"),
        "the file stored",
        |text| text.contains("Succeeded") || text.contains("100"),
    )
    .await;

    // Download from the detail page: checked by the page against the
    // agent's SHA-256, then here packet by packet.
    b.click(&format!("{listed} a[data-action=\"open\"]")).await;
    b.click("[data-test=\"file-row\"] [data-action=\"download\"]").await;
    b.until_text("[data-test=\"download-done\"]", "the download verified", |text| {
        text.contains("verified")
    })
    .await;
    let file = wait_for_download(&setup.downloads).await;
    check_packets(&file, 2 * PER_PORT);
    b.shot("capture-stopped").await;

    // Delete, confirmed in the page.
    b.click("[data-action=\"delete\"]").await;
    b.until("the confirmation", async || b.count("dialog#confirm[open]").await == 1)
        .await;
    b.shot("delete-confirm").await;
    b.click("#confirm-yes").await;
    b.go("captures").await;
    b.until("the capture gone", async || b.count(&listed).await == 0).await;
    let gone = setup.api(&setup.admin, "GET", &capture_path, None);
    assert_eq!(gone["status"], 404, "{gone}");

    // Flight recorders and triggers: made from their forms, listed with the
    // hosts' status, deleted.
    b.go("alerting").await;
    b.click("[data-action=\"new-recorder\"]").await;
    b.type_into("#recorder-name", "console-rec").await;
    b.select("#recorder-location", "westus").await;
    b.select("#recorder-target", &host_a_id()).await;
    b.type_into("#recorder-seconds", "30").await;
    b.click("#recorder-save").await;
    let recorder = "[data-test=\"recorder-row\"][data-name=\"console-rec\"]";
    b.until_text(recorder, "the recorder listed", |text| text.contains("30 s"))
        .await;
    b.click("[data-action=\"new-trigger\"]").await;
    b.type_into("#trigger-name", "console-trigger").await;
    b.select("#trigger-location", "westus").await;
    b.type_into("#trigger-severities", "critical").await;
    b.click("#trigger-save").await;
    let trigger = "[data-test=\"trigger-row\"][data-name=\"console-trigger\"]";
    b.until_text(trigger, "the trigger listed", |text| text.contains("critical"))
        .await;
    let webhook = b.text("#webhook-url").await.unwrap_or_default();
    assert!(
        webhook.contains("/netwatch/v1/alerts/"),
        "no webhook URL shown: {webhook:?}"
    );
    // The agent says the recorder records (every 10 s; the page reads it again on each visit).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = b.until_text(recorder, "the recorder row", |_| true).await;
        if row.contains("Recording") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "host-a's recorder not Recording within 30 s: {row}\n{}",
            setup.logs()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        b.go("hosts").await;
        b.go("alerting").await;
    }
    b.shot("alerting").await;
    b.click(&format!("{recorder} [data-action=\"delete\"]")).await;
    b.click("#confirm-yes").await;
    b.until("the recorder gone", async || b.count(recorder).await == 0)
        .await;
    let recorders = setup.api(
        &setup.admin,
        "GET",
        &format!("{watcher}/netwatchFlightRecorders?api-version=2024-05-01"),
        None,
    );
    assert_eq!(recorders["body"]["value"], json!([]), "{recorders}");

    // The tokens page.
    b.go("tokens").await;
    b.until("the reader token listed", async || {
        b.count("[data-test=\"token-row\"][data-name=\"console-reader\"]").await == 1
    })
    .await;
    b.shot("tokens").await;

    // A phone's width: the hosts and the captures still read.
    b.viewport(390, 844, true).await;
    b.go("hosts").await;
    b.until("host rows", async || b.count("[data-test=\"host-row\"]").await == 2)
        .await;
    let overflow = b
        .js(
            "return document.documentElement.scrollWidth - window.innerWidth;",
            vec![],
        )
        .await;
    assert!(
        overflow.as_i64().unwrap_or(1) <= 0,
        "the page is wider than a phone: {overflow}"
    );
    b.shot("hosts-phone").await;
    b.viewport(1280, 800, false).await;
    b.click("#sign-out").await;
    b.until("the sign-in page again", async || b.count("#token").await == 1)
        .await;
}

/// A reader sees no control that changes anything, and the API refuses it all the same.
async fn reader_flow(b: &Browser<'_>, reader: &str) {
    let setup = b.setup;
    // A capture to look at, made by the admin.
    let watcher = format!(
        "/subscriptions/{SUB}/resourceGroups/NetworkWatcherRG/providers/Microsoft.Network/networkWatchers/NetworkWatcher_westus"
    );
    let body = json!({"properties": {"target": host_a_id(), "timeLimitInSeconds": 60,
        "storageLocation": {"storageId": format!("/subscriptions/{SUB}/resourceGroups/netwatch/providers/Microsoft.Storage/storageAccounts/netwatchlocal")}}});
    let path = format!("{watcher}/packetCaptures/reader-sees?api-version=2024-05-01");
    let made = setup.api(&setup.admin, "PUT", &path, Some(&body));
    assert_eq!(made["status"], 201, "{made}");

    b.sign_in(reader, "reader").await;
    b.go("captures").await;
    let row = "[data-test=\"capture-row\"][data-name=\"reader-sees\"]";
    b.until_text(
        &format!("{row} [data-field=\"status\"]"),
        "the admin's capture",
        |text| text.trim() == "Running",
    )
    .await;
    for control in [
        "a[data-nav=\"new\"]",
        "a[data-nav=\"tokens\"]",
        "[data-action=\"new-capture\"]",
        "[data-action=\"stop\"]",
        "[data-action=\"delete\"]",
    ] {
        assert_eq!(b.count(control).await, 0, "a reader is offered {control}");
    }
    b.shot("captures-reader").await;
    b.click(&format!("{row} a[data-action=\"open\"]")).await;
    b.until_text("#capture-status", "the detail page", |text| text.trim() == "Running")
        .await;
    assert_eq!(b.count("[data-action=\"stop\"], [data-action=\"delete\"]").await, 0);

    // Through the API the server says no.
    let body = json!({"properties": {"target": host_a_id(), "storageLocation": {"filePath": "/var/captures/r.cap"}}});
    let refused = setup.api(
        reader,
        "PUT",
        &format!("{watcher}/packetCaptures/by-reader?api-version=2024-05-01"),
        Some(&body),
    );
    assert_eq!(refused["status"], 403, "{refused}");
    let stop = setup.api(
        reader,
        "POST",
        &format!("{watcher}/packetCaptures/reader-sees/stop?api-version=2024-05-01"),
        None,
    );
    assert_eq!(stop["status"], 403, "{stop}");
    let stopped = setup.api(
        &setup.admin,
        "POST",
        &format!("{watcher}/packetCaptures/reader-sees/stop?api-version=2024-05-01"),
        None,
    );
    assert!(stopped["status"] == 200 || stopped["status"] == 202, "{stopped}");
}

/// The one file Chromium saved, once it is complete.
async fn wait_for_download(dir: &Path) -> PathBuf {
    for _ in 0..200 {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| !path.to_string_lossy().ends_with(".crdownload"))
            .collect();
        if let [file] = files.as_slice() {
            return file.clone();
        }
        assert!(files.len() <= 1, "more than one download: {files:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no download in {} within 20 s", dir.display());
}

/// The file holds exactly the datagrams sent to the two filtered ports, each
/// once, in order per port, and none to the third.
fn check_packets(file: &Path, wanted: usize) {
    let (_, packets) = read_pcap(file);
    let mut seen: std::collections::BTreeMap<u16, Vec<usize>> = Default::default();
    for packet in &packets {
        let sliced = etherparse::SlicedPacket::from_ethernet(&packet.data).expect("an Ethernet frame");
        let Some(etherparse::TransportSlice::Udp(udp)) = sliced.transport else {
            panic!("a packet that is not UDP passed the filters: {:?}", packet.data);
        };
        let payload = String::from_utf8_lossy(udp.payload()).into_owned();
        let mut words = payload.split(' ');
        assert_eq!(words.next(), Some("netwatch-console"), "{payload}");
        let port: u16 = words.next().unwrap().parse().unwrap();
        let number: usize = words.next().unwrap().parse().unwrap();
        assert_eq!(port, udp.destination_port());
        seen.entry(port).or_default().push(number);
    }
    assert_eq!(packets.len(), wanted, "the file has {} packets", packets.len());
    assert!(!seen.contains_key(&PORTS[2]), "port {} passed the filters", PORTS[2]);
    for port in &PORTS[..2] {
        let numbers = seen.get(port).cloned().unwrap_or_default();
        assert_eq!(numbers, (0..PER_PORT).collect::<Vec<_>>(), "port {port}'s datagrams");
    }
}
