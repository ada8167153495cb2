//! The built-in token rules: one named rule per documented credential format, each with the
//! literal keywords that the prefilter looks for and the pattern that confirms a match.
//!
//! A rule's pattern is run **anchored** where its keyword was found (minus [`Back`]), so a
//! hit costs the length of the token, not a scan of the text. Its named group `s`, when
//! present, is the part replaced; the rest of the match (a scheme, a header name, a host) is
//! kept. Tokens must stand alone: the character before a match that starts with a letter or
//! digit, and the one after a match that ends with one, must not be a letter or digit.

/// Where an anchored pattern starts relative to its keyword.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Back {
    /// At the keyword.
    None,
    /// Exactly this many bytes before it.
    Fixed(usize),
    /// At the start of the run of ASCII digits (at most this many) right before it.
    Digits(usize),
    /// Anywhere in the next this-many bytes after the keyword (unanchored search in a window;
    /// the pattern's matches must be bounded in length).
    Window(usize),
}

/// A check on the replaced part; the match is dropped when it fails.
pub(super) type Validate = fn(&str) -> bool;

/// One named token rule.
pub(super) struct TokenRule {
    /// The marker name: `[REDACTED:{name}]`.
    pub(super) name: &'static str,
    /// Literal keywords (ASCII, matched case-insensitively by the prefilter).
    pub(super) keywords: &'static [&'static str],
    /// The pattern (case-sensitive unless it says `(?i:…)`).
    pub(super) pattern: &'static str,
    /// Where the pattern starts.
    pub(super) back: Back,
    /// An extra check on the replaced part.
    pub(super) validate: Option<Validate>,
}

const fn rule(
    name: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
) -> TokenRule {
    TokenRule {
        name,
        keywords,
        pattern,
        back: Back::None,
        validate: None,
    }
}

const fn rule_with(
    name: &'static str,
    keywords: &'static [&'static str],
    pattern: &'static str,
    back: Back,
    validate: Option<Validate>,
) -> TokenRule {
    TokenRule {
        name,
        keywords,
        pattern,
        back,
        validate,
    }
}

/// The token rules, most specific first: when two rules' matches overlap, the union is
/// replaced and named after the earlier rule.
pub(super) const TOKEN_RULES: &[TokenRule] = &[
    // Key material.
    rule(
        "private_key",
        &["-----BEGIN"],
        r"-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----(?s:.*?)-----END[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----|-----BEGIN[ A-Z0-9]*PRIVATE KEY(?: BLOCK)?-----[A-Za-z0-9+/=\s\\:,.-]*",
    ),
    rule(
        "age_secret_key",
        &["AGE-SECRET-KEY-1"],
        r"AGE-SECRET-KEY-1[0-9A-Z]{58}",
    ),
    // AI providers.
    rule("anthropic_key", &["sk-ant-"], r"sk-ant-[A-Za-z0-9_-]{20,}"),
    rule_with(
        "openai_key",
        &["sk-"],
        r"sk-(?:proj-|svcacct-|admin-|None-)?[A-Za-z0-9_-]{20,}",
        Back::None,
        Some(has_digit),
    ),
    rule(
        "huggingface_token",
        &["hf_", "api_org_"],
        r"(?:hf|api_org)_[A-Za-z0-9]{30,}",
    ),
    rule("groq_key", &["gsk_"], r"gsk_[A-Za-z0-9]{48,}"),
    rule("xai_key", &["xai-"], r"xai-[A-Za-z0-9]{70,}"),
    rule("replicate_token", &["r8_"], r"r8_[A-Za-z0-9]{37}"),
    // Cloud providers.
    rule(
        "aws_access_key_id",
        &["AKIA", "ASIA", "ABIA", "ACCA", "A3T"],
        r"(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}",
    ),
    rule(
        "aws_session_token",
        &["IQoJb3JpZ2luX2Vj", "FwoGZXIvYXdz"],
        r"(?:IQoJb3JpZ2luX2Vj|FwoGZXIvYXdz)[A-Za-z0-9/+=]{50,}",
    ),
    rule("google_api_key", &["AIza"], r"AIza[0-9A-Za-z_-]{35}"),
    rule(
        "google_oauth_secret",
        &["GOCSPX-"],
        r"GOCSPX-[A-Za-z0-9_-]{28}",
    ),
    rule(
        "google_oauth_token",
        &["ya29."],
        r"ya29\.[0-9A-Za-z_-]{20,}",
    ),
    rule(
        "azure_storage_key",
        &["AccountKey"],
        r"(?i:AccountKey)=(?P<s>[A-Za-z0-9+/]{40,}={0,2})",
    ),
    rule(
        "azure_shared_access_key",
        &["SharedAccessKey"],
        r"(?i:SharedAccessKey)=(?P<s>[A-Za-z0-9+/]{30,}={0,2})",
    ),
    rule(
        "azure_sas_signature",
        &["sig="],
        r"sig=(?P<s>[A-Za-z0-9%+/]{30,}(?:={1,2}|%3[Dd]){0,2})",
    ),
    rule_with(
        "azure_client_secret",
        &["Q~"],
        r"[A-Za-z0-9_~.]{3}[0-9]Q~[A-Za-z0-9_~.-]{31,34}",
        Back::Fixed(4),
        None,
    ),
    rule(
        "digitalocean_token",
        &["dop_v1_", "doo_v1_", "dor_v1_"],
        r"do[por]_v1_[a-f0-9]{64}",
    ),
    rule_with(
        "terraform_token",
        &[".atlasv1."],
        r"[A-Za-z0-9]{14}\.atlasv1\.[A-Za-z0-9_=-]{60,}",
        Back::Fixed(14),
        None,
    ),
    rule(
        "vault_token",
        &["hvs.", "hvb.", "hvr."],
        r"hv[sbr]\.[A-Za-z0-9_-]{24,}",
    ),
    rule(
        "databricks_token",
        &["dapi"],
        r"dapi[a-f0-9]{32}(?:-[0-9])?",
    ),
    rule("supabase_token", &["sbp_"], r"sbp_[a-f0-9]{40}"),
    // Code hosting and packages.
    rule(
        "github_pat",
        &["ghp_", "github_pat_"],
        r"ghp_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{60,}",
    ),
    rule("github_oauth_token", &["gho_"], r"gho_[A-Za-z0-9]{36,}"),
    rule(
        "github_app_token",
        &["ghu_", "ghs_"],
        r"gh[us]_[A-Za-z0-9]{36,}",
    ),
    rule("github_refresh_token", &["ghr_"], r"ghr_[A-Za-z0-9]{36,}"),
    rule(
        "gitlab_token",
        &[
            "glpat-",
            "gldt-",
            "glrt-",
            "glptt-",
            "gloas-",
            "glcbt-",
            "glft-",
            "glimt-",
            "glagent-",
            "glsoat-",
            "glffct-",
            "GR1348941",
        ],
        r"(?:glpat|gldt|glrt|glptt|gloas|glcbt|glft|glimt|glagent|glsoat|glffct)-[0-9A-Za-z_.-]{20,}|GR1348941[0-9A-Za-z_-]{20,}",
    ),
    rule("npm_token", &["npm_"], r"npm_[A-Za-z0-9]{36}"),
    rule("pypi_token", &["pypi-AgE"], r"pypi-AgE[A-Za-z0-9_-]{50,}"),
    rule("docker_pat", &["dckr_pat_"], r"dckr_pat_[A-Za-z0-9_-]{27,}"),
    rule(
        "atlassian_token",
        &["ATATT3", "ATCTT3"],
        r"AT[AC]TT3[A-Za-z0-9_=-]{100,}",
    ),
    rule("linear_api_key", &["lin_api_"], r"lin_api_[A-Za-z0-9]{40}"),
    rule(
        "notion_token",
        &["ntn_", "secret_"],
        r"ntn_[A-Za-z0-9]{40,}|secret_[A-Za-z0-9]{43}",
    ),
    rule("figma_token", &["figd_"], r"figd_[A-Za-z0-9_-]{40,}"),
    rule("postman_key", &["PMAK-"], r"PMAK-[a-f0-9]{24}-[a-f0-9]{34}"),
    rule(
        "sentry_token",
        &["sntrys_", "sntryu_"],
        r"sntrys_[A-Za-z0-9+/=_]{40,}|sntryu_[a-f0-9]{64}",
    ),
    rule(
        "grafana_token",
        &["glc_", "glsa_"],
        r"glc_[A-Za-z0-9+/]{32,}={0,2}|glsa_[A-Za-z0-9]{32}_[a-f0-9]{8}",
    ),
    rule("newrelic_key", &["NRAK-"], r"NRAK-[A-Z0-9]{27}"),
    rule(
        "doppler_token",
        &["dp.pt.", "dp.st.", "dp.sa.", "dp.ct."],
        r"dp\.(?:pt|st|sa|ct)\.(?:[a-z0-9_-]{1,40}\.)?[A-Za-z0-9]{40,}",
    ),
    // Messaging and commerce.
    rule(
        "slack_token",
        &["xox", "xapp-"],
        r"(?:xox[abposre]|xoxe\.xox[bp]|xapp)-[0-9A-Za-z-]{10,}",
    ),
    rule(
        "slack_webhook",
        &["hooks.slack.com/"],
        r"hooks\.slack\.com/(?P<s>(?:services|workflows|triggers)/[A-Za-z0-9_/-]{20,})",
    ),
    rule(
        "discord_webhook",
        &["discord.com/api/webhooks/", "discordapp.com/api/webhooks/"],
        r"discord(?:app)?\.com/api/webhooks/[0-9]{17,20}/(?P<s>[A-Za-z0-9_-]{60,70})",
    ),
    rule_with(
        "discord_bot_token",
        &["discord", "bot "],
        r"[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}",
        Back::Window(160),
        None,
    ),
    rule_with(
        "telegram_bot_token",
        &[":AA"],
        r"[0-9]{8,10}:AA[A-Za-z0-9_-]{33}",
        Back::Digits(10),
        None,
    ),
    rule(
        "stripe_key",
        &["sk_live_", "sk_test_", "rk_live_", "rk_test_"],
        r"[sr]k_(?:live|test)_[0-9A-Za-z]{16,}",
    ),
    rule(
        "stripe_webhook_secret",
        &["whsec_"],
        r"whsec_[A-Za-z0-9+/=]{24,}",
    ),
    rule("twilio_api_key", &["SK"], r"SK[0-9a-fA-F]{32}"),
    rule(
        "sendgrid_key",
        &["SG."],
        r"SG\.[A-Za-z0-9_-]{22}\.[A-Za-z0-9_-]{43}",
    ),
    rule("mailgun_key", &["key-"], r"key-[0-9a-zA-Z]{32}"),
    rule_with(
        "mailchimp_key",
        &["-us"],
        r"[0-9a-f]{32}-us[0-9]{1,2}",
        Back::Fixed(32),
        None,
    ),
    rule(
        "shopify_token",
        &["shpat_", "shpca_", "shppa_", "shpss_"],
        r"shp(?:at|ca|pa|ss)_[a-fA-F0-9]{32}",
    ),
    rule(
        "square_token",
        &["sq0atp-", "sq0csp-", "EAAA"],
        r"sq0(?:atp|csp)-[0-9A-Za-z_-]{22,}|EAAA[A-Za-z0-9_-]{60}",
    ),
    rule(
        "jwt",
        &["eyJ"],
        r"eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{8,}",
    ),
    // Credentials in URLs and headers.
    rule_with(
        "url_password",
        &["://"],
        r#"://[^\s:/@?#"'<>]*:(?P<s>[^\s/@?#"'<>]+)@"#,
        Back::None,
        Some(not_placeholder),
    ),
    // A bare `key` is too common a word to be a credential name in general text (`the
    // key=value pairs`, `sort key=name`), but right after a URL query's `?` or `&` it is
    // Google's API key parameter, and `sig`/`signature` carry Azure SAS and presigned URL
    // signatures. The keywords include the `?`/`&`, so only query strings trigger the rule.
    rule_with(
        "url_query_secret",
        &[
            "?key=",
            "&key=",
            "?sig=",
            "&sig=",
            "?signature=",
            "&signature=",
            "?x-amz-signature=",
            "&x-amz-signature=",
            "?x-goog-signature=",
            "&x-goog-signature=",
        ],
        r#"[?&](?i:key|sig|signature|x-amz-signature|x-goog-signature)=(?P<s>[^=&#\s"'`<>\\][^&#\s"'`<>\\]*)"#,
        Back::None,
        Some(query_value),
    ),
    rule_with(
        "basic_auth",
        &["basic"],
        r"(?i:basic)[ \t]+(?P<s>[A-Za-z0-9+/]{6,}={0,2})",
        Back::None,
        Some(basic_credentials),
    ),
    rule_with(
        "bearer_token",
        &["authorization"],
        r#"(?i:(?:proxy-)?authorization)["']?[ \t]*[:=][ \t]*["']?(?i:bearer|token|bot)[ \t]+(?P<s>[^\s"'\\]{4,})"#,
        Back::None,
        Some(not_placeholder),
    ),
    rule_with(
        "bearer_token",
        &["bearer"],
        r"(?i:bearer)[ \t]+(?P<s>[A-Za-z0-9._~+/-]{16,}=*)",
        Back::None,
        Some(bare_bearer),
    ),
    rule_with(
        "authorization",
        &["authorization"],
        r#"(?i:(?:proxy-)?authorization)["']?[ \t]*[:=][ \t]*["']?(?:[A-Za-z][A-Za-z0-9-]*[ \t]+)?(?P<s>[^\s"'\\]{4,})"#,
        Back::None,
        Some(header_value),
    ),
];

fn has_digit(s: &str) -> bool {
    s.bytes().any(|b| b.is_ascii_digit())
}

/// A schemeless `Authorization:` value needs a digit (`authorization: pending` is prose).
fn header_value(s: &str) -> bool {
    has_digit(s) && not_placeholder(s)
}

/// A URL query parameter's value worth redacting: not a placeholder (`{key}`, `$KEY`,
/// `YOUR_API_KEY`), not a plain number (an id), at least 4 characters.
fn query_value(s: &str) -> bool {
    let template = s.starts_with('{')
        || (s.contains('_') && s.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
    s.len() >= 4 && !s.bytes().all(|b| b.is_ascii_digit()) && !template && not_placeholder(s)
}

/// A bare `Bearer x` (outside an `Authorization` header) needs a digit in `x`: prose says
/// "the bearer instrument".
fn bare_bearer(s: &str) -> bool {
    has_digit(s) && not_placeholder(s)
}

/// Values that stand for a secret rather than being one: `$TOKEN`, `${{ secrets.X }}`,
/// `<token>`, `%(pw)s`, `***`, `xxxx`, `[REDACTED…]`, `null`, ...
pub(super) fn not_placeholder(s: &str) -> bool {
    let s = s.trim();
    if s.is_empty() {
        return false;
    }
    let lower = s.to_ascii_lowercase();
    if s.starts_with(['$', '%', '<', '*'])
        || s.starts_with("{{")
        || s.starts_with("#{")
        || s.starts_with("[REDACTED")
        || s.starts_with("…")
    {
        return false;
    }
    let first = s.as_bytes()[0];
    if s.len() > 1 && s.bytes().all(|b| b == first) {
        return false;
    }
    !matches!(
        lower.as_str(),
        "null"
            | "none"
            | "nil"
            | "undefined"
            | "true"
            | "false"
            | "yes"
            | "no"
            | "on"
            | "off"
            | "redacted"
            | "hidden"
            | "masked"
            | "required"
            | "optional"
            | "n/a"
            | "tbd"
    )
}

/// Base64 that decodes to printable `user:password`.
fn basic_credentials(s: &str) -> bool {
    match base64_decode(s) {
        Some(bytes) => {
            bytes.len() >= 3
                && bytes.contains(&b':')
                && bytes.iter().all(|b| (0x20..0x7f).contains(b))
        }
        None => false,
    }
}

/// Standard base64 (padding optional); `None` when `s` is not base64.
pub(super) fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim_end_matches('=');
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc = 0u32;
    let mut bits = 0u32;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(((acc >> bits) & 0xff) as u8);
        }
    }
    Some(out)
}
