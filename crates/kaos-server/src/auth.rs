//! Bearer-token tenants: each token is a tenant, and session ids are scoped per tenant.
//!
//! Tokens come from `KAOS_API_TOKENS` (comma-separated) or a file (one per line, `#`
//! comments). An entry is `tenant=token` or a bare `token` (its tenant is then named after
//! a hash of the token). Presented tokens are compared in constant time against every
//! configured token (SHA-256 digests, so lengths leak nothing either).

use std::path::Path;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// A tenant: the owner of the sessions created with one token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant(pub Arc<str>);

impl Tenant {
    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The store id of this tenant's session `session_id`.
    pub fn scoped(&self, session_id: &str) -> String {
        format!("{}.{session_id}", self.0)
    }
}

/// A configuration error in the token list.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: {message}")]
pub struct TokenError {
    /// Where the bad entry is (`KAOS_API_TOKENS entry 2`, `tokens.txt:3`).
    pub origin: String,
    /// What is wrong.
    pub message: String,
}

/// The configured tokens. Empty = no authentication (only for `--insecure-localhost`).
#[derive(Clone, Default)]
pub struct TokenSet {
    entries: Vec<([u8; 32], Tenant)>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens (or their digests).
        f.debug_struct("TokenSet")
            .field(
                "tenants",
                &self
                    .entries
                    .iter()
                    .map(|(_, t)| t.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenSet {
    /// No tokens.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Whether no token is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Adds `token` for `tenant` (`None`: a tenant named after the token's hash).
    pub fn add(
        &mut self,
        tenant: Option<&str>,
        token: &str,
        origin: &str,
    ) -> Result<(), TokenError> {
        let bad = |message: String| TokenError {
            origin: origin.to_string(),
            message,
        };
        let token = token.trim();
        if token.len() < 8 {
            return Err(bad("a token must be at least 8 characters".into()));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "a token must not contain spaces or control characters".into()
            ));
        }
        let d = digest(token);
        let name = match tenant.map(str::trim) {
            Some(t) => {
                if t.is_empty()
                    || t.len() > 64
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                {
                    return Err(bad(format!(
                        "tenant name {t:?} must be 1-64 letters, digits, `-` or `_`"
                    )));
                }
                t.to_string()
            }
            None => format!(
                "t{}",
                d[..6]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>()
            ),
        };
        if self.entries.iter().any(|(e, _)| bool::from(e.ct_eq(&d))) {
            return Err(bad("the same token appears twice".into()));
        }
        self.entries.push((d, Tenant(Arc::from(name))));
        Ok(())
    }

    fn add_entry(&mut self, entry: &str, origin: &str) -> Result<(), TokenError> {
        match entry.split_once('=') {
            Some((tenant, token)) => self.add(Some(tenant), token, origin),
            None => self.add(None, entry, origin),
        }
    }

    /// Parses `KAOS_API_TOKENS`-style text: comma-separated `tenant=token` or `token`.
    pub fn from_list(text: &str) -> Result<Self, TokenError> {
        let mut set = Self::default();
        for (i, entry) in text.split(',').enumerate() {
            if entry.trim().is_empty() {
                continue;
            }
            set.add_entry(entry, &format!("KAOS_API_TOKENS entry {}", i + 1))?;
        }
        Ok(set)
    }

    /// Reads a token file: one `tenant=token` or `token` per line, `#` comments.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|e| TokenError {
            origin: path.display().to_string(),
            message: format!("cannot read the token file: {e}"),
        })?;
        let mut set = Self::default();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            set.add_entry(line, &format!("{}:{}", path.display(), i + 1))?;
        }
        Ok(set)
    }

    /// Merges another set in.
    pub fn extend(&mut self, other: TokenSet) {
        self.entries.extend(other.entries);
    }

    /// The tenant of a presented token, comparing against every entry in constant time.
    pub fn tenant_of(&self, presented: &str) -> Option<Tenant> {
        let d = digest(presented);
        let mut found = None;
        for (entry, tenant) in &self.entries {
            if bool::from(entry.ct_eq(&d)) {
                found = Some(tenant.clone());
            }
        }
        found
    }
}

/// The tenant used when authentication is off (`--insecure-localhost`).
pub const LOCAL_TENANT: &str = "local";

/// Middleware for `/v1/*`: a valid bearer token puts its [`Tenant`] in the request, else 401.
pub async fn require_tenant(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let tenant = if state.tokens.is_empty() {
        Tenant(Arc::from(LOCAL_TENANT))
    } else {
        let header = request
            .headers()
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let Some(header) = header else {
            return ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "missing `Authorization: Bearer <token>` header",
            )
            .into_response();
        };
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim);
        match token.and_then(|t| state.tokens.tenant_of(t)) {
            Some(t) => t,
            None => {
                return ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "the bearer token is not valid",
                )
                .into_response();
            }
        }
    };
    request.extensions_mut().insert(tenant);
    next.run(request).await
}

impl<S: Send + Sync> FromRequestParts<S> for Tenant {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts.extensions.get::<Tenant>().cloned().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "not authenticated",
            )
        })
    }
}
