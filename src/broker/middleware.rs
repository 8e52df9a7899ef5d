//! What every request passes first: basic auth (constant-time compare, 401 with
//! `WWW-Authenticate`), the `X-Broker-API-Version` check (412 when missing or older
//! than 2.13), `X-Broker-API-Request-Identity` echoed on the answer.

use super::{ApiError, Shared, MIN_API_VERSION};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use subtle::ConstantTimeEq;

/// The request identity header, echoed on the answer.
pub const REQUEST_IDENTITY: &str = "x-broker-api-request-identity";
/// The version header.
pub const API_VERSION: &str = "x-broker-api-version";

/// Checks auth and version, runs the handler, echoes the request identity.
pub async fn check(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let identity = req.headers().get(REQUEST_IDENTITY).cloned();
    let mut resp = match admit(&state, &req) {
        Ok(()) => next.run(req).await,
        Err(e) => *e,
    };
    if let Some(id) = identity {
        resp.headers_mut().insert(REQUEST_IDENTITY, id);
    }
    resp
}

fn admit(state: &Shared, req: &Request) -> Result<(), Box<Response>> {
    if !authorized(
        req.headers().get(header::AUTHORIZATION),
        &state.settings.username,
        &state.settings.password,
    ) {
        let mut resp = ApiError::new(
            StatusCode::UNAUTHORIZED,
            "Unauthorized",
            "missing or wrong basic-auth credentials: use the user name and password the broker was started with (--username/--password or ANVIL_BROKER_USERNAME/ANVIL_BROKER_PASSWORD)",
        )
        .into_response();
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"anvil broker\""),
        );
        return Err(Box::new(resp));
    }
    // Blacksmith's own `/b/` API is not OSB: no version header needed.
    if req.uri().path().starts_with("/v2/") || req.uri().path() == "/v2" {
        version_ok(req.headers().get(API_VERSION)).map_err(|e| Box::new(e.into_response()))?;
    }
    Ok(())
}

/// Whether the `Authorization` header carries exactly `user:password`, compared in
/// constant time (both parts always compared, so timing says nothing about which).
fn authorized(header: Option<&HeaderValue>, user: &str, password: &str) -> bool {
    let Some(value) = header.and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let Some(encoded) = value
        .strip_prefix("Basic ")
        .or_else(|| value.strip_prefix("basic "))
    else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Some(colon) = decoded.iter().position(|b| *b == b':') else {
        return false;
    };
    let (u, p) = (&decoded[..colon], &decoded[colon + 1..]);
    let user_ok = u.ct_eq(user.as_bytes());
    let password_ok = p.ct_eq(password.as_bytes());
    bool::from(user_ok & password_ok)
}

/// 412 unless the header is `MAJOR.MINOR` at least [`MIN_API_VERSION`] with major 2.
fn version_ok(value: Option<&HeaderValue>) -> Result<(), ApiError> {
    let failed = |what: String| {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailed",
            format!(
                "{what}: this broker speaks Open Service Broker API 2.13 to 2.17; send X-Broker-API-Version: 2.17"
            ),
        )
    };
    let Some(v) = value else {
        return Err(failed("the X-Broker-API-Version header is missing".into()));
    };
    let text = v.to_str().unwrap_or("").trim();
    let parsed = text
        .split_once('.')
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
    match parsed {
        Some((2, minor)) if (2, minor) >= MIN_API_VERSION => Ok(()),
        Some(_) => Err(failed(format!(
            "X-Broker-API-Version {text} is not supported"
        ))),
        None => Err(failed(format!(
            "X-Broker-API-Version `{text}` is not a version (expected MAJOR.MINOR)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(s: &str) -> HeaderValue {
        HeaderValue::from_str(&format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        ))
        .unwrap()
    }

    #[test]
    fn basic_auth_needs_both_parts() {
        assert!(authorized(Some(&basic("cf:secret")), "cf", "secret"));
        assert!(authorized(Some(&basic("cf:sec:ret")), "cf", "sec:ret"));
        assert!(!authorized(Some(&basic("cf:wrong")), "cf", "secret"));
        assert!(!authorized(Some(&basic("cx:secret")), "cf", "secret"));
        assert!(!authorized(Some(&basic("cf")), "cf", "secret"));
        assert!(!authorized(Some(&basic("cf:secret2")), "cf", "secret"));
        assert!(!authorized(None, "cf", "secret"));
        assert!(!authorized(
            Some(&HeaderValue::from_static("Bearer x")),
            "cf",
            "secret"
        ));
        assert!(!authorized(
            Some(&HeaderValue::from_static("Basic !!!")),
            "cf",
            "secret"
        ));
    }

    #[test]
    fn versions_from_2_13() {
        let v = |s: &'static str| version_ok(Some(&HeaderValue::from_static(s)));
        assert!(v("2.13").is_ok());
        assert!(v("2.17").is_ok());
        assert!(v("2.99").is_ok());
        for bad in ["2.12", "1.0", "3.0", "two", "2", ""] {
            let e = v(bad).unwrap_err();
            assert_eq!(e.status, StatusCode::PRECONDITION_FAILED, "{bad}");
        }
        let e = version_ok(None).unwrap_err();
        assert!(e.description.contains("missing"), "{}", e.description);
    }
}
