//! Bearer-token authentication of `anvil serve`: the tokens (`ANVIL_SERVE_TOKEN`, named
//! `default`, and `--token-file` lines `name:token`), the constant-time check, and the
//! middleware every route but `/health` and `/metrics` sits behind. The token's name is
//! the `user_id` recorded on the environments its holder creates.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Tokens shorter than this are refused: a guessable token is no protection.
const MIN_TOKEN_LEN: usize = 16;

/// Why the tokens could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("anvil serve needs a bearer token for its API: set ANVIL_SERVE_TOKEN (at least {MIN_TOKEN_LEN} characters) or give --token-file FILE with `name:token` lines (or run with --no-api)")]
    NoToken,
    #[error("{}:{line}: {message}", path.display())]
    File {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("--token-file {}: cannot read it ({source}); give a readable file of `name:token` lines", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("ANVIL_SERVE_TOKEN is {len} characters long; use at least {MIN_TOKEN_LEN} (e.g. `openssl rand -hex 32`)")]
    ShortEnvToken { len: usize },
}

/// The accepted tokens, by name.
#[derive(Clone, Default)]
pub struct Tokens {
    entries: Vec<(String, Vec<u8>)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Names only: tokens never reach a log.
        let names: Vec<&str> = self.entries.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Tokens").field("names", &names).finish()
    }
}

impl Tokens {
    /// The tokens from `ANVIL_SERVE_TOKEN` (`env_token`, named `default`) and the token
    /// file. Neither given is an error: the API never runs open.
    ///
    /// # Errors
    /// No token at all, an unreadable file, or a bad line (named `file:line`).
    pub fn load(env_token: Option<&str>, file: Option<&Path>) -> Result<Tokens, AuthError> {
        let mut tokens = Tokens::default();
        if let Some(t) = env_token.filter(|t| !t.is_empty()) {
            if t.len() < MIN_TOKEN_LEN {
                return Err(AuthError::ShortEnvToken { len: t.len() });
            }
            tokens
                .entries
                .push(("default".into(), t.as_bytes().to_vec()));
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| AuthError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            tokens.entries.extend(parse_file(path, &text)?);
        }
        if tokens.entries.is_empty() {
            return Err(AuthError::NoToken);
        }
        Ok(tokens)
    }

    /// The name of the token `presented` is, if any. Every token is compared, each in
    /// constant time, so the time taken says nothing about which bytes matched.
    #[must_use]
    pub fn check(&self, presented: &str) -> Option<&str> {
        let mut found = None;
        for (name, token) in &self.entries {
            if bool::from(token.as_slice().ct_eq(presented.as_bytes())) && found.is_none() {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// Parses a token file: one `name:token` per line; blank lines and `#` comments skipped.
fn parse_file(path: &Path, text: &str) -> Result<Vec<(String, Vec<u8>)>, AuthError> {
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |message: String| AuthError::File {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        let Some((name, token)) = line.split_once(':') else {
            return Err(bad(
                "expected `name:token` (the name is the user_id recorded on environments)".into(),
            ));
        };
        let (name, token) = (name.trim(), token.trim());
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
        {
            return Err(bad(format!(
                "token name {name:?}: use letters, digits, `-`, `_`, `.` or `@`"
            )));
        }
        if token.len() < MIN_TOKEN_LEN {
            return Err(bad(format!(
                "the token of {name:?} is {} characters long; use at least {MIN_TOKEN_LEN}",
                token.len()
            )));
        }
        if out.iter().any(|(n, _)| n == name) {
            return Err(bad(format!(
                "token name {name:?} appears twice; each name once"
            )));
        }
        out.push((name.to_string(), token.as_bytes().to_vec()));
    }
    Ok(out)
}

/// Who made a request: the name of the token it carried.
#[derive(Debug, Clone)]
pub struct UserId(pub String);

/// The middleware: a request without a valid `Authorization: Bearer TOKEN` gets 401 with
/// a JSON body and `WWW-Authenticate: Bearer`; a valid one carries its [`UserId`].
pub async fn require(State(tokens): State<Arc<Tokens>>, mut req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    let (message, user) = match presented {
        None => (
            "missing bearer token: send `Authorization: Bearer TOKEN` (ANVIL_SERVE_TOKEN or a --token-file entry)",
            None,
        ),
        Some(t) => match tokens.check(t) {
            Some(name) => ("", Some(name.to_string())),
            None => (
                "the bearer token is not one this server accepts; check ANVIL_SERVE_TOKEN or the --token-file entry",
                None,
            ),
        },
    };
    match user {
        Some(name) => {
            req.extensions_mut().insert(UserId(name));
            next.run(req).await
        }
        None => {
            let mut resp = super::api::ApiError::Unauthorized(message.to_string()).into_response();
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_token_at_all_is_refused() {
        assert!(matches!(Tokens::load(None, None), Err(AuthError::NoToken)));
        assert!(matches!(
            Tokens::load(Some(""), None),
            Err(AuthError::NoToken)
        ));
    }

    #[test]
    fn the_env_token_is_named_default_and_checked_exactly() {
        let t = Tokens::load(Some("0123456789abcdef"), None).unwrap();
        assert_eq!(t.check("0123456789abcdef"), Some("default"));
        assert_eq!(t.check("0123456789abcdeF"), None);
        assert_eq!(t.check("0123456789abcde"), None);
        assert_eq!(t.check(""), None);
        assert!(!format!("{t:?}").contains("0123"));
    }

    #[test]
    fn file_lines_name_users_and_bad_lines_name_file_and_line() {
        let p = Path::new("tokens.txt");
        let ok = parse_file(
            p,
            "# ops\nalice: aaaaaaaaaaaaaaaa\n\nbob:bbbbbbbbbbbbbbbb\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert_eq!(ok[0].0, "alice");
        let e = parse_file(p, "alice:aaaaaaaaaaaaaaaa\nnocolon\n").unwrap_err();
        assert!(e.to_string().starts_with("tokens.txt:2: expected"), "{e}");
        let e = parse_file(p, "alice:short\n").unwrap_err();
        assert!(e.to_string().starts_with("tokens.txt:1:"), "{e}");
        let e = parse_file(p, "a b:aaaaaaaaaaaaaaaa\n").unwrap_err();
        assert!(e.to_string().contains("token name"), "{e}");
        let e = parse_file(p, "a:aaaaaaaaaaaaaaaa\na:bbbbbbbbbbbbbbbb\n").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
    }

    #[test]
    fn short_env_token_is_refused() {
        assert!(matches!(
            Tokens::load(Some("short"), None),
            Err(AuthError::ShortEnvToken { len: 5 })
        ));
    }
}
