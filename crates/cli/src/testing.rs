//! Test helpers: a scripted HTTP server on port 0 that answers the requests
//! it gets with canned bytes, one connection per request, and a [`Context`]
//! whose client talks to it, so a command's `execute` is tested against the
//! wire shapes it must send and read (paths, api-versions, bodies).

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::thread::JoinHandle;

use netwatch_api::resource::SubscriptionId;
use serde_json::Value;

use crate::Context;
use crate::client::Client;
use crate::settings::Settings;

/// A request the server got: its first line (`GET /path?q HTTP/1.1`) and body.
#[derive(Debug)]
pub(crate) struct Request {
    pub line: String,
    pub body: Vec<u8>,
}

impl Request {
    /// The body as JSON (`Null` when empty).
    pub fn json(&self) -> Value {
        if self.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&self.body).expect("a JSON request body")
        }
    }
}

/// Answers each of `answers` (raw HTTP, written as is, then the connection
/// closes) to one request, in order; returns the base URL and, joined, the
/// requests.
pub(crate) fn serve(answers: Vec<Vec<u8>>) -> (String, JoinHandle<Vec<Request>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a test port");
    let base = format!("http://{}", listener.local_addr().expect("a bound address"));
    let server = std::thread::spawn(move || {
        let mut requests = Vec::new();
        for answer in answers {
            let (stream, _) = listener.accept().expect("a client connection");
            let mut reader = BufReader::new(stream.try_clone().expect("clone the stream"));
            let mut line = String::new();
            reader.read_line(&mut line).expect("a request line");
            let mut length = 0;
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).expect("a header line");
                if header == "\r\n" || header.is_empty() {
                    break;
                }
                if let Some((name, value)) = header.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().expect("a Content-Length");
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).expect("the request body");
            let mut stream = stream;
            stream.write_all(&answer).expect("write the answer");
            stream.flush().expect("flush the answer");
            requests.push(Request {
                line: line.trim_end().to_owned(),
                body,
            });
        }
        requests
    });
    (base, server)
}

/// An answer with a JSON body.
pub(crate) fn json_answer(status: &str, body: &Value) -> Vec<u8> {
    json_answer_with(status, "", body)
}

/// An answer with a JSON body and `headers` (whole lines, each ending `\r\n`).
pub(crate) fn json_answer_with(status: &str, headers: &str, body: &Value) -> Vec<u8> {
    let body = body.to_string();
    format!(
        "HTTP/1.1 {status}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A command's context against `base` (plain http on loopback).
pub(crate) fn context(base: &str) -> Context {
    let settings = Settings {
        server: base.to_owned(),
        token: "t".to_owned(),
        ca: None,
        subscription: SubscriptionId::default_subscription(),
    };
    Context {
        client: Client::new(&settings, false).expect("a client"),
        settings,
        subscription: SubscriptionId::default_subscription(),
        only_show_errors: true,
    }
}

/// Runs `future` to its end, as `run` does.
pub(crate) fn block_on<T>(future: impl Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(future)
}
