//! Model specs and create_client.

use kaos_llm::providers::create_client_with;
use kaos_llm::{LlmError, ModelSpec, create_client};

#[test]
fn explicit_provider_specs_parse_and_round_trip() {
    let cases = [
        (
            "anthropic:claude-haiku-4-5",
            ModelSpec::Anthropic {
                model: "claude-haiku-4-5".into(),
            },
        ),
        (
            "openai:gpt-4o-mini",
            ModelSpec::OpenAi {
                model: "gpt-4o-mini".into(),
            },
        ),
        (
            "openai-compatible:llama3@http://127.0.0.1:11434/v1",
            ModelSpec::OpenAiCompatible {
                model: "llama3".into(),
                base_url: "http://127.0.0.1:11434/v1".into(),
            },
        ),
        (
            "function:classifier",
            ModelSpec::Function {
                name: "classifier".into(),
            },
        ),
        (
            "openai:ft:gpt-4o-mini:org::abc",
            ModelSpec::OpenAi {
                model: "ft:gpt-4o-mini:org::abc".into(),
            },
        ),
    ];
    for (text, expected) in cases {
        let spec = ModelSpec::parse(text).unwrap();
        assert_eq!(spec, expected, "{text}");
        assert_eq!(spec.to_string(), text);
        assert_eq!(ModelSpec::parse(&spec.to_string()).unwrap(), spec);
        assert_eq!(text.parse::<ModelSpec>().unwrap(), spec);
    }
}

#[test]
fn bare_names_infer_the_provider() {
    for (bare, provider) in [
        ("claude-sonnet-4-6", "anthropic"),
        ("gpt-4o-mini", "openai"),
        ("chatgpt-4o-latest", "openai"),
        ("o1-mini", "openai"),
        ("o3", "openai"),
        ("o4-mini", "openai"),
    ] {
        let spec = ModelSpec::parse(bare).unwrap();
        assert_eq!(spec.provider(), provider, "{bare}");
        assert_eq!(spec.model(), bare);
        assert_eq!(spec.to_string(), format!("{provider}:{bare}"));
    }
    assert_eq!(
        ModelSpec::parse("  anthropic:claude-haiku-4-5 ")
            .unwrap()
            .to_string(),
        "anthropic:claude-haiku-4-5"
    );
}

#[test]
fn bad_specs_list_the_accepted_forms() {
    for bad in [
        "",
        "llama3",
        "gemini-2.5-flash",
        "mistral:large",
        "anthropic:",
        "openai-compatible:llama3",
        "openai-compatible:llama3@localhost:11434",
        "openai-compatible:@http://x/v1",
        // Found by the `model_specs_parse_or_fail_and_round_trip` property: no host, so the
        // canonical form (trailing slashes trimmed) was `…@http:`, which did not parse.
        "openai-compatible:0@http://",
        "openai-compatible:0@https:///v1",
        "openai-compatible:0@http://a b/v1",
    ] {
        let err = ModelSpec::parse(bad).unwrap_err();
        let LlmError::InvalidModelSpec { spec, message } = &err else {
            panic!("{bad:?}: unexpected {err:?}");
        };
        assert_eq!(spec, bad);
        for form in [
            "anthropic:<model>",
            "openai:<model>",
            "openai-compatible:<model>@<base-url>",
            "function:<name>",
            "claude-",
            "gpt-",
        ] {
            assert!(message.contains(form), "{bad:?}: {message}");
        }
        assert_eq!(err.kind(), "config_error");
    }
}

#[test]
fn function_specs_must_be_registered_on_the_runtime() {
    let Err(err) = create_client("function:classifier") else {
        panic!("function specs cannot be built");
    };
    let text = err.to_string();
    assert!(matches!(err, LlmError::Config(_)), "{err:?}");
    assert!(
        text.contains("KaosRuntime::with_client") && text.contains("classifier"),
        "{text}"
    );
}

#[test]
fn create_client_builds_each_provider() {
    let env = |name: &str| match name {
        "ANTHROPIC_API_KEY" => Some("a".to_owned()),
        "OPENAI_API_KEY" => Some("o".to_owned()),
        _ => None,
    };
    let anthropic = create_client_with("claude-haiku-4-5", env).unwrap();
    assert_eq!(
        (anthropic.provider(), anthropic.model()),
        ("anthropic", "claude-haiku-4-5")
    );
    let openai = create_client_with("openai:gpt-4o-mini", env).unwrap();
    assert_eq!(
        (openai.provider(), openai.model()),
        ("openai", "gpt-4o-mini")
    );
    let local =
        create_client_with("openai-compatible:qwen@http://localhost:8000/v1", |_| None).unwrap();
    assert_eq!(
        (local.provider(), local.model()),
        ("openai-compatible", "qwen")
    );

    let Err(err) = create_client_with("openai:gpt-4o-mini", |_| None) else {
        panic!("a missing key is an error");
    };
    assert!(
        matches!(&err, LlmError::Config(m) if m.contains("OPENAI_API_KEY")),
        "{err:?}"
    );
    let Err(err) = create_client_with("nonsense", env) else {
        panic!("bad spec");
    };
    assert!(matches!(err, LlmError::InvalidModelSpec { .. }));
}
