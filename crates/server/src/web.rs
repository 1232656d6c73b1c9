//! The web pages embedded in the binary: the chat demo at `/`.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../../../web/index.html");

/// Routes for the embedded pages; `ws_path` is the endpoint the chat page connects to.
pub fn router(ws_path: String) -> Router {
    let page = INDEX.replace("__WS_PATH__", &ws_path);
    Router::new().route(
        "/",
        get(move || {
            let page = page.clone();
            async move { ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], page).into_response() }
        }),
    )
}
