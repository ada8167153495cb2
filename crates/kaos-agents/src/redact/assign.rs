//! Assignments of sensitive names (`DB_PASSWORD=x`, `export API_KEY="x"`, `password: x`,
//! `"client_secret": "x"`, `api_key = 'x'`, `--password x`, `<password>x</password>`) and
//! session cookies (`Cookie: sessionid=x`).
//!
//! The prefilter reports a sensitive word (`pass`, `secret`, `token`, `key`, ...); the name
//! around it is read outward over identifier characters, split into words (`_ - .` and
//! camelCase), and classified: sensitive when a word is (or ends with) a sensitive word,
//! unless another word marks it as metadata (`max_tokens`, `token_count`, `secret_name`,
//! `password_min_length`, `secret_santa_date`). The value must then look like a value, not a
//! placeholder (`${DB_PASSWORD}`, `<password>`, `***`), a type (`password: str`) or code
//! (`api_key = config.api_key`, `token = os.environ["T"]`).

use super::rules::not_placeholder;

/// What a sensitive name holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum NameClass {
    /// A password (`password`, `passwd`, `pwd`, `DB_PASS`, `passphrase`).
    Password,
    /// An AWS secret access key (`AWS_SECRET_ACCESS_KEY`, `SecretAccessKey`).
    AwsSecret,
    /// An AWS session token (`AWS_SESSION_TOKEN`).
    AwsSession,
    /// Another credential (`secret`, `token`, `api_key`, `private_key`, `credentials`, ...).
    Credential,
    /// Only `auth`: sensitive when the value looks random (`auth: required` is not).
    WeakAuth,
}

impl NameClass {
    /// The rule name of a value under such a name.
    pub(super) fn rule(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::AwsSecret => "aws_secret_key",
            Self::AwsSession => "aws_session_token",
            Self::Credential | Self::WeakAuth => "credential",
        }
    }
}

/// Words that make a name metadata about a secret, not the secret.
const META_WORDS: &[&str] = &[
    "tokens",
    "count",
    "counts",
    "limit",
    "limits",
    "max",
    "min",
    "length",
    "len",
    "size",
    "type",
    "types",
    "kind",
    "url",
    "uri",
    "urls",
    "endpoint",
    "path",
    "file",
    "files",
    "dir",
    "name",
    "names",
    "id",
    "ids",
    "ref",
    "arn",
    "version",
    "expiry",
    "expires",
    "expiration",
    "expire",
    "expired",
    "ttl",
    "policy",
    "required",
    "enabled",
    "disabled",
    "hint",
    "rotation",
    "date",
    "time",
    "at",
    "santa",
    "budget",
    "usage",
    "used",
    "estimate",
    "field",
    "format",
    "prefix",
    "suffix",
    "pattern",
    "regex",
    "header",
    "param",
    "location",
    "label",
    "description",
    "schema",
    "mode",
    "strategy",
    "source",
    "provider",
    "manager",
    "store",
    "backend",
    "validator",
    "public",
    "publishable",
    "input",
    "output",
    "prompt",
    "completion",
    "total",
    "page",
    "next",
    "cursor",
    "continuation",
    "sync",
    "reset",
    "forgot",
    "change",
    "changed",
    "strength",
    "policy",
    "placeholder",
    "env",
    "var",
    "length",
    "tokenizer",
    "lifetime",
    "duration",
    "hash",
    "algorithm",
    "algo",
    "rules",
    "rule",
    "error",
    "errors",
    "invalid",
    "valid",
    "missing",
    "status",
    "scope",
    "scopes",
    "issuer",
    "audience",
    "rate",
    "ratio",
    "percent",
    "score",
];

/// Words that qualify a following `key` as secret (`api_key`, `private_key`, ...).
const KEY_QUALIFIERS: &[&str] = &[
    "api",
    "private",
    "secret",
    "access",
    "signing",
    "encryption",
    "master",
    "account",
    "client",
    "license",
    "subscription",
    "shared",
    "service",
    "app",
    "consumer",
    "deploy",
    "ssh",
    "auth",
    "session",
    "webhook",
    "hmac",
    "jwt",
    "crypt",
    "cipher",
    "storage",
    "admin",
    "x",
    "write",
    "read",
    "mgmt",
    "management",
];

fn words_of(name: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let bytes = name.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if !b.is_ascii_alphanumeric() {
            if !current.is_empty() {
                words.push(std::mem::take(&mut current));
            }
            continue;
        }
        // camelCase: a lower→Upper step, or the last capital of an acronym before a
        // lowercase letter (`APIKey` → `API`, `Key`).
        let split = i > 0
            && !current.is_empty()
            && b.is_ascii_uppercase()
            && (bytes[i - 1].is_ascii_lowercase()
                || bytes[i - 1].is_ascii_digit()
                || (bytes[i - 1].is_ascii_uppercase()
                    && bytes.get(i + 1).is_some_and(u8::is_ascii_lowercase)));
        if split {
            words.push(std::mem::take(&mut current));
        }
        current.push(b.to_ascii_lowercase() as char);
    }
    if !current.is_empty() {
        words.push(current);
    }
    words
}

fn is_password_word(w: &str) -> bool {
    matches!(
        w,
        "password" | "passwd" | "pwd" | "pass" | "passphrase" | "passcode" | "pword"
    ) || w.contains("password")
        || w.contains("passwd")
        || w.contains("passphrase")
        || (w.ends_with("pass")
            && !matches!(
                w,
                "bypass"
                    | "compass"
                    | "encompass"
                    | "overpass"
                    | "underpass"
                    | "trespass"
                    | "surpass"
                    | "impass"
                    | "firstpass"
                    | "multipass"
                    | "onepass"
            ))
        || (w.ends_with("pwd") && w != "oldpwd")
}

fn is_credential_word(w: &str) -> bool {
    matches!(
        w,
        "secret"
            | "token"
            | "credential"
            | "credentials"
            | "apikey"
            | "privatekey"
            | "accesskey"
            | "secretkey"
            | "bearer"
            | "sessionkey"
    ) || w.contains("secret")
        || (w.ends_with("token") && w.len() > 5)
        || w.ends_with("apikey")
        || w.ends_with("privatekey")
        || w.ends_with("accesskey")
        || w.ends_with("secretkey")
        || w.ends_with("credentials")
}

/// The class of a name, or `None` when it is not sensitive.
pub(super) fn classify_name(name: &str) -> Option<NameClass> {
    if name.len() > 128 {
        return None;
    }
    let words = words_of(name);
    if words.is_empty() {
        return None;
    }
    let joined: String = words.concat();
    let is_meta =
        |w: &String| META_WORDS.contains(&w.as_str()) || w.ends_with("tokens") || w == "oldpwd";
    if words.iter().any(is_meta) {
        return None;
    }
    if joined.contains("secretaccesskey")
        || (words.iter().any(|w| w == "aws") && joined.contains("secret"))
    {
        return Some(NameClass::AwsSecret);
    }
    if joined.contains("awssessiontoken") || joined.contains("awssecuritytoken") {
        return Some(NameClass::AwsSession);
    }
    if words.iter().any(|w| is_password_word(w)) {
        return Some(NameClass::Password);
    }
    if words.iter().any(|w| is_credential_word(w))
        || words
            .windows(2)
            .any(|p| p[1] == "key" && KEY_QUALIFIERS.contains(&p[0].as_str()))
    {
        return Some(NameClass::Credential);
    }
    if words.last().is_some_and(|w| w == "auth") {
        return Some(NameClass::WeakAuth);
    }
    None
}

/// Types that follow a parameter name in code (`password: str`).
const TYPE_NAMES: &[&str] = &[
    "str",
    "string",
    "int",
    "bytes",
    "bool",
    "secretstr",
    "option",
    "optional",
    "any",
    "none",
    "number",
    "object",
    "char",
    "usize",
    "u8",
    "vec",
    "text",
    "varchar",
    "secret",
    "secretbytes",
    "securestring",
    "password",
    "credentials",
];

/// Whether `value` (unquoted or quoted) is worth redacting under a name of `class`.
fn value_is_secret(class: NameClass, value: &str, quoted: bool, followed_by: Option<u8>) -> bool {
    if !not_placeholder(value) {
        return false;
    }
    let all_digits = value.bytes().all(|b| b.is_ascii_digit());
    match class {
        NameClass::Password => {}
        NameClass::WeakAuth => {
            if value.len() < 8 || !value.bytes().any(|b| b.is_ascii_digit()) {
                return false;
            }
        }
        _ => {
            if value.len() < 4 || all_digits {
                return false;
            }
        }
    }
    if quoted {
        return true;
    }
    // Code, not a literal: a call, an index, a type, a dotted or snake_case reference, a path.
    if matches!(followed_by, Some(b'(' | b'[' | b'<' | b'|' | b'!' | b'?')) {
        return false;
    }
    let lower = value.to_ascii_lowercase();
    if TYPE_NAMES.contains(&lower.as_str()) {
        return false;
    }
    let identifier = value
        .bytes()
        .all(|b| b.is_ascii_alphabetic() || b == b'_' || b == b'.');
    // `a.b`, `snake_case`, or a variable named like a secret (`password=password`,
    // `self.token = token`).
    if identifier && (value.contains('_') || value.contains('.') || classify_name(value).is_some())
    {
        return false;
    }
    if value.starts_with('/') || value.starts_with("~/") || value.starts_with("./") {
        return false;
    }
    true
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.')
}

/// A sensitive value found next to a keyword hit: `(start, end, rule)` of the value.
pub(super) fn assignment_at(text: &str, hit: usize) -> Option<(usize, usize, &'static str)> {
    let bytes = text.as_bytes();
    let mut start = hit;
    while start > 0 && is_name_byte(bytes[start - 1]) && hit - start < 128 {
        start -= 1;
    }
    let mut end = hit;
    while end < bytes.len() && is_name_byte(bytes[end]) && end - hit < 128 {
        end += 1;
    }
    // A name ends where punctuation ends it (`db.password.` is `db.password`).
    while end > hit && matches!(bytes[end - 1], b'.' | b'-') {
        end -= 1;
    }
    let name = &text[start..end];
    let class = classify_name(name)?;
    let mut i = end;
    let before = start.checked_sub(1).map(|j| bytes[j]);
    // `<password>value</password>`
    if before == Some(b'<') && bytes.get(i) == Some(&b'>') {
        let from = i + 1;
        let len = text[from..].find('<').unwrap_or(text.len() - from);
        let value = &text[from..from + len];
        return (value_is_secret(class, value.trim(), true, None) && !value.contains('\n'))
            .then_some((from, from + len, class.rule()));
    }
    // A quoted name: `"password": …`, `'password' => …`, `\"password\": …`.
    if let Some(q @ (b'"' | b'\'')) = before {
        if bytes.get(i) == Some(&b'\\') && bytes.get(i + 1) == Some(&q) {
            i += 2;
        } else if bytes.get(i) == Some(&q) {
            i += 1;
        }
    }
    let skip_blanks = |mut i: usize| {
        while i < bytes.len() && matches!(bytes[i], b' ' | b'\t') {
            i += 1;
        }
        i
    };
    let after_name = i;
    i = skip_blanks(i);
    match bytes.get(i) {
        Some(b'=') => {
            i += 1;
            match bytes.get(i) {
                Some(b'>') => i += 1,
                Some(b'=' | b'~') => return None,
                _ => {}
            }
        }
        Some(b':') => {
            i += 1;
            match bytes.get(i) {
                Some(b'=') => i += 1,
                // `a::b`, and `secret:prod/db` in an ARN or a URN: an unquoted name's colon
                // is a separator only when a blank or a quote follows it.
                Some(b':') => return None,
                Some(b' ' | b'\t' | b'"' | b'\'' | b'`') => {}
                Some(b'\\') if bytes.get(i + 1).is_some_and(|b| matches!(b, b'"' | b'\'')) => {}
                _ if i - 1 > end => {}
                _ => return None,
            }
        }
        // `--password hunter2`
        Some(_) if name.starts_with("--") && i > after_name => {}
        _ => return None,
    }
    i = skip_blanks(i);
    let rest = &text[i..];
    let rb = rest.as_bytes();
    let (from, to, quoted, after) = match rb.first() {
        Some(&q @ (b'"' | b'\'' | b'`')) => {
            let close = find_closing(&rest[1..], q)?;
            (i + 1, i + 1 + close, true, None)
        }
        Some(b'\\') if matches!(rb.get(1), Some(b'"' | b'\'')) => {
            let close = rest[2..].find(&rest[..2])?;
            (i + 2, i + 2 + close, true, None)
        }
        Some(_) => {
            let len = rb
                .iter()
                .position(|&b| {
                    b.is_ascii_whitespace()
                        || matches!(
                            b,
                            b'"' | b'\''
                                | b'`'
                                | b','
                                | b';'
                                | b'&'
                                | b'<'
                                | b'>'
                                | b'('
                                | b')'
                                | b'{'
                                | b'}'
                                | b'['
                                | b']'
                                | b'\\'
                                | b'|'
                                | b'!'
                                | b'?'
                        )
                })
                .unwrap_or(rb.len());
            (i, i + len, false, rb.get(len).copied())
        }
        None => return None,
    };
    if to <= from {
        return None;
    }
    let value = &text[from..to];
    if value.contains('\n') || value.len() > 4096 {
        return None;
    }
    value_is_secret(class, value, quoted, after).then_some((from, to, class.rule()))
}

/// The offset of the closing `q` in `s` (backslash escapes skipped), within a line.
fn find_closing(s: &str, q: u8) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && i < 4096 {
        match b[i] {
            b'\\' => i += 2,
            b'\n' => return None,
            c if c == q => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// Cookie names that hold a session or login: `sessionid`, `PHPSESSID`, `connect.sid`,
/// `__Secure-next-auth.session-token`, `remember_token`, ...
fn session_cookie_name(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "sess", "sid", "token", "auth", "jwt", "remember", "login", "identity",
    ]
    .iter()
    .any(|w| n.contains(w))
        || n.starts_with("__secure-")
        || n.starts_with("__host-")
}

/// The values of session cookies in a `Cookie:`/`Set-Cookie:` header starting at `hit`
/// (the `cookie` keyword), as `(start, end)` ranges.
pub(super) fn cookies_at(text: &str, hit: usize, out: &mut Vec<(usize, usize)>) {
    let bytes = text.as_bytes();
    if hit > 0 && bytes[hit - 1].is_ascii_alphanumeric() {
        return;
    }
    let mut i = hit + "cookie".len();
    if matches!(bytes.get(i), Some(b'"' | b'\'')) {
        i += 1;
    }
    while matches!(bytes.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    if bytes.get(i) != Some(&b':') {
        return;
    }
    i += 1;
    while matches!(bytes.get(i), Some(b' ' | b'\t' | b'"' | b'\'')) {
        i += 1;
    }
    let line_end = text[i..]
        .find(['\r', '\n', '"', '\''])
        .map_or(text.len(), |n| i + n);
    let mut pos = i;
    for pair in text[i..line_end].split(';') {
        let pair_start = pos;
        pos += pair.len() + 1;
        let Some(eq) = pair.find('=') else { continue };
        let name = pair[..eq].trim();
        let value = pair[eq + 1..].trim();
        if value.is_empty() || !session_cookie_name(name) || !not_placeholder(value) {
            continue;
        }
        let lead = pair[eq + 1..].len() - pair[eq + 1..].trim_start().len();
        let from = pair_start + eq + 1 + lead;
        out.push((from, from + value.len()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for (name, class) in [
            ("DB_PASSWORD", Some(NameClass::Password)),
            ("dbPassword", Some(NameClass::Password)),
            ("PGPASSWORD", Some(NameClass::Password)),
            ("MYSQL_PWD", Some(NameClass::Password)),
            ("openai_api_key", Some(NameClass::Credential)),
            ("apiKey", Some(NameClass::Credential)),
            ("X-API-KEY", Some(NameClass::Credential)),
            ("client_secret", Some(NameClass::Credential)),
            ("AWS_SECRET_ACCESS_KEY", Some(NameClass::AwsSecret)),
            ("AWS_SESSION_TOKEN", Some(NameClass::AwsSession)),
            ("GITHUB_TOKEN", Some(NameClass::Credential)),
            ("_authToken", Some(NameClass::Credential)),
            ("max_tokens", None),
            ("input_tokens", None),
            ("tokens_used", None),
            ("token_count", None),
            ("secret_santa_date", None),
            ("primary_key", None),
            ("tokenizer", None),
            ("bypass", None),
            ("PWD", Some(NameClass::Password)),
            ("OLDPWD", None),
        ] {
            assert_eq!(classify_name(name), class, "{name}");
        }
    }
}
