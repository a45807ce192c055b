//! The HTTP server `corral serve` runs: hyper's HTTP/1 connections with corral's bounds
//! on slow clients (issue 9, "slow clients hold the server").
//!
//! * **Headers**: a connection must deliver a request's headers within
//!   `CORRAL_HTTP_HEADER_TIMEOUT` of being ready for one. hyper starts that clock both for
//!   a new connection and for a kept-alive one waiting for its next request, so it is also
//!   the idle keep-alive bound; past it the connection is closed.
//! * **Body**: the whole request body must arrive within `CORRAL_HTTP_BODY_TIMEOUT`
//!   (bodies are small: Slack payloads, hooks, reports), else `408` and the connection
//!   closes. Handlers then run unbounded by it: `PATCH /api/stack` answers when its job
//!   ends, bounded by the job's own deadline, as go-cowpoke did.
//! * **Connections**: at most `CORRAL_HTTP_MAX_CONNECTIONS` open at once; past that the
//!   accept loop waits (new clients queue in the kernel's backlog, costing corral no file
//!   descriptor) until a connection ends, which the two timeouts above guarantee.
//! * **Long responses**: the two timeouts bound what a client sends, not how long a
//!   response lasts. The one response that lasts (the playground's event feed) is bounded
//!   on its own: a cap on open feeds well under the connection cap, a lifetime after which
//!   the page reconnects, and an end when the server shuts down (`playground::http`).
//! * **Peer**: every request carries `ConnectInfo<SocketAddr>` (the playground answers
//!   loopback clients only).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::config::HttpConfig;

/// Serves `router` on `listener` until `shutdown` resolves, then lets open requests
/// finish (as `axum::serve`'s graceful shutdown did).
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: HttpConfig,
    shutdown: impl Future<Output = ()>,
) {
    let router = router.layer(axum::middleware::from_fn_with_state(
        limits.body_timeout,
        body_deadline,
    ));
    let permits = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait a
                    // little rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let (stream, peer) = stream;
        let _ = stream.set_nodelay(true);
        // Handlers may ask who is on the other end (`ConnectInfo<SocketAddr>`).
        let with_peer = tower::util::MapRequest::new(
            router.clone(),
            move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
                req
            },
        );
        let service = hyper_util::service::TowerToHyperService::new(with_peer);
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .keep_alive(true)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            // A client past a bound or gone is a normal end of its connection.
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Reads the whole request body within the body timeout, then hands the request on with
/// the bytes as its body. Too slow: `408` and the connection closes.
async fn body_deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let (parts, body) = req.into_parts();
    // One byte over the routes' limit, so their own `413` answers stay as they were.
    let max = super::BODY_LIMIT + 1;
    match tokio::time::timeout(limit, axum::body::to_bytes(body, max)).await {
        Err(_) => (
            StatusCode::REQUEST_TIMEOUT,
            [(header::CONNECTION, "close")],
            "request body not received in time\n",
        )
            .into_response(),
        Ok(Err(_)) => (
            StatusCode::PAYLOAD_TOO_LARGE,
            [(header::CONNECTION, "close")],
            "request body too large or broken\n",
        )
            .into_response(),
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
    }
}
