//! The web assets embedded in the binary: the chat demo at `/`, the admin dashboard at
//! `/admin` and the browser client `switchboard.js` at `/client.js`.
//!
//! The files live in `web/` and are compiled in with `include_str!`, so the binary needs
//! nothing beside it. They are served with `Cache-Control: no-cache`: a browser keeps its
//! copy but checks back, so an upgraded server never runs against a stale client. These
//! routes are open; the dashboard asks for the API token itself (PROTOCOL §11).
//! `/client.js` may be imported by pages of any origin (`Access-Control-Allow-Origin: *`).

use axum::Router;
use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

const INDEX: &str = include_str!("../../../web/index.html");
const ADMIN: &str = include_str!("../../../web/admin.html");
const CLIENT_JS: &str = include_str!("../../../web/switchboard.js");

const HTML: &str = "text/html; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";

/// Escapes text for an HTML attribute value.
fn attr_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn asset(content_type: &'static str, body: Bytes) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

/// Routes for the embedded pages; `ws_path` is the endpoint the chat page connects to.
pub fn router(ws_path: String) -> Router {
    // The chat page reads its endpoint from `<meta name="switchboard-ws-path">`.
    let index = Bytes::from(INDEX.replace("__WS_PATH__", &attr_escape(&ws_path)));
    Router::new()
        .route(
            "/",
            get(move || {
                let index = index.clone();
                async move { asset(HTML, index) }
            }),
        )
        .route(
            "/admin",
            get(|| async { asset(HTML, Bytes::from_static(ADMIN.as_bytes())) }),
        )
        .route(
            "/client.js",
            get(|| async {
                // Module scripts load in CORS mode: pages of other origins may import it.
                (
                    [(header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")],
                    asset(JS, Bytes::from_static(CLIENT_JS.as_bytes())),
                )
            }),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower_service::Service;

    async fn fetch(path: &str) -> (StatusCode, String, String, String) {
        let mut app = router("/chat\"ws".into());
        let res = app
            .call(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let header = |h| {
            res.headers()
                .get(h)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned()
        };
        let (ct, cc) = (header(header::CONTENT_TYPE), header(header::CACHE_CONTROL));
        let status = res.status();
        let body = axum::body::to_bytes(res.into_body(), 1 << 20)
            .await
            .unwrap();
        (status, ct, cc, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn serves_the_three_assets_with_their_types() {
        let (s, ct, cc, body) = fetch("/").await;
        assert_eq!(
            (s, ct.as_str(), cc.as_str()),
            (StatusCode::OK, HTML, "no-cache")
        );
        assert!(
            body.contains(r#"content="/chat&quot;ws""#),
            "ws path is injected, escaped"
        );
        assert!(!body.contains("__WS_PATH__"));

        let (s, ct, cc, body) = fetch("/admin").await;
        assert_eq!(
            (s, ct.as_str(), cc.as_str()),
            (StatusCode::OK, HTML, "no-cache")
        );
        assert!(body.contains("<title>"));

        let mut app = router("/ws".into());
        let res = app
            .call(Request::get("/client.js").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let (s, ct, cc, body) = fetch("/client.js").await;
        assert_eq!(
            (s, ct.as_str(), cc.as_str()),
            (StatusCode::OK, JS, "no-cache")
        );
        assert!(body.contains("export class Switchboard"));
    }
}
