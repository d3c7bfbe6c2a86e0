//! The demo page and the browser client module, embedded in the binary.

use std::net::SocketAddr;

use axum::http::header;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

const INDEX: &str = include_str!("../../../clients/js/demo/index.html");
const DEMO_JS: &str = include_str!("../../../clients/js/demo/demo.js");
const CLIENT_JS: &str = include_str!("../../../clients/js/dist/tether.js");

fn js(body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], body)
        .into_response()
}

/// `ws`: the WebSocket listener the page should use (and whether it is wss).
pub(crate) fn router(ws: Option<(SocketAddr, bool)>) -> Router {
    let config = match ws {
        Some((a, secure)) => format!(
            "window.TETHER_WS_PORT = {}; window.TETHER_WS_SECURE = {};",
            a.port(),
            if secure { "true" } else { "false" }
        ),
        None => "window.TETHER_WS_PORT = null;".to_owned(),
    };
    Router::new()
        .route("/", get(|| async { Html(INDEX) }))
        .route("/demo.js", get(|| async { js(DEMO_JS) }))
        .route("/tether.js", get(|| async { js(CLIENT_JS) }))
        .route(
            "/config.js",
            get(move || {
                let c = config.clone();
                async move { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], c).into_response() }
            }),
        )
}
