//! An answer given before the request's body was read waits until the rest of
//! the body has arrived and been thrown away (within a bound), so that it
//! reaches the client whole (issue 12).
//!
//! Many answers come before any body is read: a missing or wrong token
//! ([`crate::auth::authenticate`]), a role too low, an unknown route or
//! method, no `api-version`, a body of the wrong type, a part with a bad
//! grant; a body over the limit is answered with the rest unread. The HTTP
//! stack then ends the request under a client still sending: over HTTP/1.1
//! hyper reads once more, then stops reading the connection and closes it,
//! and the kernel resets a connection closed with bytes unread, which can
//! reach the client before the answer does; over HTTP/2 it resets the stream
//! (`RST_STREAM NO_ERROR`, which RFC 9113 §8.1 allows after a complete
//! answer) and clients such as curl 7.88 report `(92) Stream error in the
//! HTTP/2 framing layer` instead of the answer they got. Neither hyper nor
//! axum-server can be told to keep reading, so [`discard_unread_body`], a
//! middleware around the whole router, does it: every early answer, whatever
//! made it (middleware, fallback, extractor rejection, handler), goes through
//! this one mechanism.
//!
//! How, and what it costs:
//! - A request whose body is empty (GET, DELETE, …) passes untouched.
//! - Any other body is handed on in a thin wrapper ([`Tracked`]) that passes
//!   each frame through as it comes, counting bytes (no copy, no buffering),
//!   so a handler reading its body, or streaming a part to storage, reads as
//!   before. If the wrapper is dropped before the body's end (its reader gave
//!   up on it, or never looked), it hands the rest of the body back.
//! - When the answer is ready and a rest was handed back, the rest is read and
//!   thrown away frame by frame (never held) before the answer goes, within
//!   the route's own limit ([`limit`]: [`MAX_BODY_BYTES`], or the largest part
//!   size for parts sent through the controller) and [`DRAIN_TIMEOUT`]. A
//!   rest its `Content-Length` says is larger is not read at all. Past the
//!   bound the answer goes anyway and the stack closes the stream as before.
//! - A client that sent `Expect: 100-continue` and whose body nobody read
//!   has sent nothing and waits for the answer: nothing is read, so it is
//!   not asked for the body (hyper sends `100 Continue` only when the body is
//!   first read).
//!
//! A body over the limit is answered once the limit has been read
//! (`DefaultBodyLimit`), so with this its client hears the 413 whole when the
//! rest is within one more limit.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use netwatch_api::agent::UPLOAD_PREFIX;
use netwatch_storage::MAX_PART_SIZE;

use super::MAX_BODY_BYTES;

/// Longest an answer waits for the rest of a body it did not need: 1 MiB
/// arrives within it over a link of 300 kbit/s.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a body dropped before its end leaves its rest for the middleware.
type Slot = Arc<Mutex<Option<Unread>>>;

/// The rest of a body its reader dropped before the end.
#[derive(Debug)]
struct Unread {
    body: Body,
    /// Bytes read before it was dropped.
    read: u64,
    /// Whether it was read at all (over HTTP/1.1: `100 Continue` sent).
    polled: bool,
}

/// Middleware around the whole router (module doc): an answer given before
/// the body was read goes once the rest of it was read and thrown away.
pub(super) async fn discard_unread_body(request: Request, next: Next) -> Response {
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let limit = limit(request.method(), request.uri().path());
    let declared = content_length(request.headers());
    let expects_continue = request
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let slot = Slot::default();
    let request = request.map(|body| {
        Body::new(Tracked {
            inner: body,
            read: 0,
            polled: false,
            ended: false,
            slot: Arc::clone(&slot),
        })
    });
    let response = next.run(request).await;
    let unread = slot.lock().unwrap_or_else(PoisonError::into_inner).take();
    if let Some(unread) = unread {
        let status = response.status().as_u16();
        if expects_continue && !unread.polled {
            tracing::debug!(status, "answered before the body was asked for");
        } else {
            discard(unread, declared, limit, status).await;
        }
    }
    response
}

/// The most thrown away after an early answer on `path`: the route's own
/// body limit. Parts sent through the controller (`files.rs`) have no body
/// limit but their account's part size, at most [`MAX_PART_SIZE`], which the
/// agent sends whole; the limit must hold before routing and authentication,
/// which answer early too, so it goes by the path.
fn limit(method: &Method, path: &str) -> u64 {
    if method == Method::PUT && path.starts_with(UPLOAD_PREFIX) {
        MAX_PART_SIZE
    } else {
        MAX_BODY_BYTES as u64
    }
}

/// Reads and throws away `unread`'s rest, within `limit` bytes and
/// [`DRAIN_TIMEOUT`]; `declared` is the whole body's `Content-Length`.
async fn discard(unread: Unread, declared: Option<u64>, limit: u64, status: u16) {
    let Unread { mut body, read, .. } = unread;
    if let Some(declared) = declared
        && declared.saturating_sub(read) > limit
    {
        tracing::debug!(
            status,
            declared,
            read,
            limit,
            "answered with a rest over the limit unread"
        );
        return;
    }
    let mut discarded: u64 = 0;
    let outcome = tokio::time::timeout(DRAIN_TIMEOUT, async {
        while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            let Ok(frame) = frame else {
                return "the body broke off";
            };
            if let Some(data) = frame.data_ref() {
                discarded += data.len() as u64;
                if discarded > limit {
                    return "the rest of the body is over the limit";
                }
            }
        }
        "the rest of the body came"
    })
    .await
    .unwrap_or("the rest of the body did not come in time");
    tracing::debug!(
        status,
        read,
        discarded,
        limit,
        "{outcome}, thrown away before the answer"
    );
}

/// The request's `Content-Length`, when it has a valid one.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|text| text.trim().parse().ok())
}

/// A request body passed through frame by frame, counting what was read; one
/// dropped before its end leaves its rest in the [`Slot`].
struct Tracked {
    inner: Body,
    read: u64,
    polled: bool,
    /// The end (or an error) was read: nothing is left.
    ended: bool,
    slot: Slot,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        self.polled = true;
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.read += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_)) | None) => self.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        if self.ended || self.inner.is_end_stream() {
            return;
        }
        let rest = Unread {
            body: std::mem::take(&mut self.inner),
            read: self.read,
            polled: self.polled,
        };
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(rest);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use axum::extract::DefaultBodyLimit;
    use axum::http::StatusCode;
    use axum::routing::{MethodRouter, put};
    use tower::ServiceExt as _;

    use super::*;

    const KIB: usize = 1024;

    /// A request body of `chunks` frames of `chunk` bytes that counts what was taken from it.
    struct Source {
        chunks: usize,
        chunk: usize,
        taken: Arc<AtomicUsize>,
    }

    impl HttpBody for Source {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
            if self.chunks == 0 {
                return Poll::Ready(None);
            }
            self.chunks -= 1;
            self.taken.fetch_add(self.chunk, Ordering::SeqCst);
            Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; self.chunk])))))
        }

        fn is_end_stream(&self) -> bool {
            self.chunks == 0
        }
    }

    /// The service a test sends to: what answers (`handler`, with the API's
    /// body limit) inside the middleware.
    fn app<H, T>(handler: H) -> MethodRouter
    where
        H: axum::handler::Handler<T, ()>,
        T: 'static,
    {
        put(handler)
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
            .layer(axum::middleware::from_fn(discard_unread_body))
    }

    /// Refuses whatever it is sent, unread.
    fn refuse() -> MethodRouter {
        app(|| async { StatusCode::UNAUTHORIZED })
    }

    /// Reads the body (within the limit) and answers its length.
    fn read() -> MethodRouter {
        app(|body: Bytes| async move { body.len().to_string() })
    }

    /// Sends `app` a PUT on `path` with `chunks` × `chunk` bytes (declaring their
    /// length when `declared`, plus `headers`): the status, the answer and the
    /// bytes taken from the body by the time the answer came.
    async fn send(
        app: MethodRouter,
        path: &str,
        chunks: usize,
        chunk: usize,
        declared: bool,
        headers: &[(&str, &str)],
    ) -> (StatusCode, String, usize) {
        let taken = Arc::new(AtomicUsize::new(0));
        let body = Body::new(Source {
            chunks,
            chunk,
            taken: Arc::clone(&taken),
        });
        let mut request = axum::http::Request::put(path);
        if declared {
            request = request.header(header::CONTENT_LENGTH, chunks * chunk);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = app.oneshot(request.body(body).unwrap()).await.unwrap();
        let taken = taken.load(Ordering::SeqCst);
        let status = response.status();
        let answer = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        (status, String::from_utf8_lossy(&answer).into_owned(), taken)
    }

    #[tokio::test]
    async fn a_body_nobody_read_is_read_before_the_answer() {
        for declared in [false, true] {
            let (status, _, taken) = send(refuse(), "/", 50, 4 * KIB, declared, &[]).await;
            assert_eq!(
                (status, taken),
                (StatusCode::UNAUTHORIZED, 200 * KIB),
                "declared: {declared}"
            );
        }
    }

    #[tokio::test]
    async fn a_body_the_handler_reads_is_read_once() {
        let (status, answer, taken) = send(read(), "/", 50, 4 * KIB, true, &[]).await;
        assert_eq!((status, answer.as_str(), taken), (StatusCode::OK, "204800", 200 * KIB));
    }

    #[tokio::test]
    async fn a_body_over_the_limit_is_read_to_its_end_within_one_more_limit() {
        let (status, _, taken) = send(read(), "/", 96, 16 * KIB, false, &[]).await;
        assert_eq!((status, taken), (StatusCode::PAYLOAD_TOO_LARGE, 1536 * KIB));
    }

    #[tokio::test]
    async fn no_more_than_the_limit_is_thrown_away() {
        // Declared: not read at all.
        let (status, _, taken) = send(refuse(), "/", 192, 16 * KIB, true, &[]).await;
        assert_eq!((status, taken), (StatusCode::UNAUTHORIZED, 0));
        // Not declared: read until past the limit (by the frame that crossed it).
        let (status, _, taken) = send(refuse(), "/", 192, 16 * KIB, false, &[]).await;
        assert_eq!((status, taken), (StatusCode::UNAUTHORIZED, MAX_BODY_BYTES + 16 * KIB));
    }

    #[tokio::test]
    async fn parts_are_read_up_to_the_largest_part_size() {
        let part = format!("{UPLOAD_PREFIX}/acct/network-watcher-logs/a.cap");
        let (status, _, taken) = send(refuse(), &part, 192, 16 * KIB, true, &[]).await;
        assert_eq!((status, taken), (StatusCode::UNAUTHORIZED, 3 * MAX_BODY_BYTES));
        assert_eq!(limit(&Method::PUT, &part), MAX_PART_SIZE);
        assert_eq!(limit(&Method::POST, &part), MAX_BODY_BYTES as u64);
        assert_eq!(limit(&Method::PUT, "/netwatch/v1/agent/uploads"), MAX_BODY_BYTES as u64);
    }

    #[tokio::test]
    async fn a_client_waiting_to_be_asked_for_its_body_is_not_asked() {
        let (status, _, taken) = send(refuse(), "/", 50, 4 * KIB, true, &[("expect", "100-continue")]).await;
        assert_eq!((status, taken), (StatusCode::UNAUTHORIZED, 0));
    }
}
