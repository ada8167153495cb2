//! Bearer tokens for the HTTP transport: the same rules as `kaos serve` (kaos-server's
//! [`TokenSet`]: `KAOS_API_TOKENS` as comma-separated `tenant=token` or `token`, compared in
//! constant time, each token a tenant whose session ids are scoped to it).

pub use kaos_server::{Tenant, TokenError, TokenSet};

/// Tokens from `KAOS_API_TOKENS` (none when unset or blank).
pub fn tokens_from_env() -> Result<TokenSet, TokenError> {
    match std::env::var("KAOS_API_TOKENS") {
        Ok(list) => TokenSet::from_list(&list),
        Err(_) => Ok(TokenSet::empty()),
    }
}

/// The tenant of an `Authorization: Bearer <token>` header value, if the token is known.
pub fn tenant_of_header(tokens: &TokenSet, value: Option<&str>) -> Option<Tenant> {
    let v = value?.trim();
    let (scheme, token) = v.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    tokens.tenant_of(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers_map_to_tenants() {
        let t = TokenSet::from_list("alice=aaaaaaaaaaaa, bbbbbbbbbbbbbbbb").unwrap();
        let alice = tenant_of_header(&t, Some("Bearer aaaaaaaaaaaa")).unwrap();
        assert_eq!(alice.name(), "alice");
        assert!(tenant_of_header(&t, Some("bearer bbbbbbbbbbbbbbbb")).is_some());
        assert!(tenant_of_header(&t, Some("Bearer aaaaaaaaaaa")).is_none());
        assert!(tenant_of_header(&t, Some("Basic aaaaaaaaaaaa")).is_none());
        assert!(tenant_of_header(&t, None).is_none());
    }
}
