//! The hub's web page: one self-contained HTML file (inline CSS and JS,
//! no build step, nothing loaded from elsewhere), compiled into the binary
//! with `include_str!` so a hub serves it with no files beside it.
//!
//! `GET /` and `GET /ui` answer it without auth: the page holds no data.
//! It asks for a token, keeps it in the browser's `localStorage`, and sends
//! it as `Authorization: Bearer` on every API call (and as `access_token`
//! on the events stream, which browsers cannot give headers). It lists the
//! devices with their presence; for the one selected, its plugins (the
//! built-in `_plugins` RPC, while the device is online), its requests with
//! states kept live by `GET /v1/devices/{device}/events`, and a form that
//! sends a command or RPC and follows it to its final state.
//!
//! It also lists the plugin rollouts with their progress and, for the one
//! selected, its devices (`rollouts.js`, inlined into the page when it is
//! first served, so the page stays one document).
//!
//! Elements a test drives carry stable ids and `data-*` attributes
//! (`#token`, `tr[data-device]`, `tr[data-id] [data-field=state]`,
//! `#send-result[data-id][data-state]`, `#live[data-state]`,
//! `#rollouts tr[data-rollout][data-state][data-failed]`).

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;

/// The page, with its rollouts script inlined.
pub static PAGE: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    include_str!("index.html").replacen("/* rollouts.js */", include_str!("rollouts.js"), 1)
});

/// What the page may load and talk to: itself only. Inline script and
/// style are its whole code, so they are allowed; nothing else is.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; \
     style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// `GET /` and `GET /ui`.
pub fn routes() -> Router {
    Router::new().route("/", get(page)).route("/ui", get(page))
}

async fn page() -> Response {
    let mut response = Html(PAGE.as_str()).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use tower::ServiceExt;

    use super::*;

    #[tokio::test]
    async fn serves_the_page_without_auth_at_both_paths() {
        for path in ["/", "/ui"] {
            let response = routes()
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
                .await
                .expect("infallible");
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            let headers = response.headers();
            assert_eq!(headers["content-type"], "text/html; charset=utf-8");
            assert!(headers["content-security-policy"]
                .to_str()
                .expect("ASCII")
                .starts_with("default-src 'none'"));
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .expect("body");
            assert_eq!(body, PAGE.as_bytes());
        }
    }

    #[test]
    fn the_page_loads_nothing_from_elsewhere() {
        for needle in ["http://", "https://", "//cdn", "<link", "src=\"", "@import"] {
            assert!(
                !PAGE.contains(needle),
                "the page must be self-contained, found {needle:?}"
            );
        }
        for id in [
            "id=\"token\"",
            "id=\"devices\"",
            "id=\"requests\"",
            "id=\"send-form\"",
            "id=\"live\"",
            "id=\"error\"",
            "id=\"rollouts\"",
            "function loadRollouts",
        ] {
            assert!(PAGE.contains(id), "the page lost {id}");
        }
    }
}
