//! The request whitelist: accepted fields are normalized, anything else is
//! refused with an error naming the field.

use cocoon_engine::request::{EngineRequest, Prompt, RequestError};

fn chat(body: &str) -> Result<EngineRequest, RequestError> {
    EngineRequest::parse_chat(body.as_bytes())
}

#[test]
fn a_full_chat_request_is_normalized() {
    let r = chat(
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":[{"type":"text","text":"hi"}]}],
            "max_completion_tokens":50,"max_tokens":10,"temperature":0.5,"top_p":0.9,"top_k":40,"seed":7,
            "stop":"\n","stream":true,"stream_options":{"include_usage":true},"presence_penalty":0.1,"frequency_penalty":0.2,"n":1}"#,
    )
    .unwrap();
    assert_eq!(r.model, "m");
    assert_eq!(r.max_tokens, Some(50), "max_completion_tokens wins");
    assert_eq!(r.sampling.top_k, Some(40));
    assert_eq!(r.sampling.seed, Some(7));
    assert_eq!(r.stop, vec!["\n".to_string()]);
    assert!(r.stream && r.include_usage);
    match r.prompt {
        Prompt::Chat(m) => {
            assert_eq!(m.len(), 2);
            assert_eq!(m[1].content, "hi");
        }
        _ => panic!("chat expected"),
    }
}

#[test]
fn unknown_fields_are_named() {
    assert_eq!(
        chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"functions":[]}"#)
            .unwrap_err(),
        RequestError::UnsupportedField("functions".into())
    );
    // Chat's logprobs (a boolean) are not the legacy completions' (an integer).
    assert_eq!(
        EngineRequest::parse_completion(br#"{"model":"m","prompt":"x","logprobs":2}"#)
            .unwrap_err()
            .to_string(),
        "field `logprobs` is not supported"
    );
    assert_eq!(
        chat(r#"{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[]}]}"#)
            .unwrap_err(),
        RequestError::UnsupportedField("messages[0].tool_calls".into())
    );
    assert_eq!(
        chat(
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":{"foo":1}}"#
        )
        .unwrap_err(),
        RequestError::UnsupportedField("stream_options.foo".into())
    );
    // `messages` belongs to chat, not to completions.
    assert_eq!(
        EngineRequest::parse_completion(br#"{"model":"m","prompt":"x","messages":[]}"#)
            .unwrap_err(),
        RequestError::UnsupportedField("messages".into())
    );
}

#[test]
fn bad_values_are_named() {
    let bad = |body: &str, field: &str| match chat(body).unwrap_err() {
        RequestError::InvalidField { field: f, .. } => assert_eq!(f, field, "{body}"),
        other => panic!("{body}: {other:?}"),
    };
    let m = r#""model":"m","messages":[{"role":"user","content":"x"}]"#;
    bad(&format!(r#"{{{m},"n":2}}"#), "n");
    bad(&format!(r#"{{{m},"max_tokens":0}}"#), "max_tokens");
    bad(&format!(r#"{{{m},"max_tokens":-5}}"#), "max_tokens");
    bad(&format!(r#"{{{m},"temperature":3}}"#), "temperature");
    bad(&format!(r#"{{{m},"top_p":"high"}}"#), "top_p");
    bad(&format!(r#"{{{m},"stop":["a","b","c","d","e"]}}"#), "stop");
    bad(&format!(r#"{{{m},"stream":"yes"}}"#), "stream");
    bad(r#"{"model":"m","messages":[]}"#, "messages");
    bad(
        r#"{"model":"m","messages":[{"role":"robot","content":"x"}]}"#,
        "messages[0].role",
    );
    bad(
        r#"{"model":"","messages":[{"role":"user","content":"x"}]}"#,
        "model",
    );
    assert_eq!(
        chat(r#"{"messages":[{"role":"user","content":"x"}]}"#).unwrap_err(),
        RequestError::MissingField("model")
    );
    assert_eq!(
        chat(r#"{"model":"m"}"#).unwrap_err(),
        RequestError::MissingField("messages")
    );
    assert!(matches!(
        chat("[1]").unwrap_err(),
        RequestError::InvalidJson(_)
    ));
    assert!(matches!(
        chat("{").unwrap_err(),
        RequestError::InvalidJson(_)
    ));
}

#[test]
fn upstream_json_keeps_only_whitelisted_fields_and_forces_usage() {
    let r = chat(r#"{"model":"m","messages":[{"role":"user","content":"x","name":"bob"}],"max_tokens":3,"stream":false}"#).unwrap();
    let v = r.to_upstream_json();
    assert_eq!(v["stream"], true);
    assert_eq!(v["stream_options"]["include_usage"], true);
    assert_eq!(v["max_tokens"], 3);
    assert!(v["messages"][0].get("name").is_none());
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(keys.len(), 5, "{keys:?}");
}

/// What apps send about themselves (`user`, `metadata`, `store`, `service_tier`,
/// `parallel_tool_calls`) is accepted when well-formed and never reaches the engine; a
/// malformed one is a 400 naming it; anything unknown is still refused by name.
#[test]
fn the_callers_own_fields_are_accepted_checked_and_kept_from_the_engine() {
    let body = r#"{"model":"m","messages":[{"role":"user","content":"x"}],"user":"u-42",
        "metadata":{"app":"demo","trace":"t1"},"store":false,"service_tier":"auto",
        "parallel_tool_calls":true}"#;
    let r = chat(body).unwrap();
    let up = r.to_upstream_json();
    for k in [
        "user",
        "metadata",
        "store",
        "service_tier",
        "parallel_tool_calls",
    ] {
        assert!(up.get(k).is_none(), "{k} reached the engine: {up}");
    }
    let with = |extra: &str| {
        chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],{extra}}}"#
        ))
    };
    assert!(with(r#""user":null"#).is_ok(), "null is as if absent");
    let named = |extra: &str| with(extra).unwrap_err().to_string();
    assert_eq!(named(r#""user":7"#), "field `user` must be a string");
    assert_eq!(named(r#""store":"yes""#), "field `store` must be a boolean");
    assert_eq!(
        named(r#""metadata":{"k":1}"#),
        "field `metadata.k` must be a string"
    );
    let many: Vec<String> = (0..17).map(|i| format!(r#""k{i}":"v""#)).collect();
    assert_eq!(
        named(&format!(r#""metadata":{{{}}}"#, many.join(","))),
        "field `metadata` must have at most 16 keys"
    );
    assert_eq!(
        named(r#""n":2"#),
        "field `n` must be 1 (one choice per request)"
    );
    assert_eq!(
        named(r#""frobnicate":1"#),
        "field `frobnicate` is not supported"
    );
}

/// `response_format`: json_object and an enforceable json_schema are kept (and passed on to an
/// HTTP engine), text is free text; a schema the grammar cannot enforce and anything else are
/// refused by name rather than ignored.
#[test]
fn response_format_json_object_is_kept_and_the_rest_refused_by_name() {
    let with = |rf: &str| {
        chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"response_format":{rf}}}"#
        ))
    };
    let r = with(r#"{"type":"json_object"}"#).unwrap();
    assert_eq!(
        r.response_format,
        Some(cocoon_engine::ResponseFormat::JsonObject)
    );
    assert_eq!(
        r.to_upstream_json()["response_format"],
        serde_json::json!({"type": "json_object"})
    );
    assert_eq!(with(r#"{"type":"text"}"#).unwrap().response_format, None);
    assert!(with(r#"{"type":"text"}"#)
        .unwrap()
        .to_upstream_json()
        .get("response_format")
        .is_none());
    let named = |rf: &str| with(rf).unwrap_err().to_string();
    assert_eq!(
        named(r#"{"type":"json_schema","json_schema":{"name":"x","schema":{}}}"#),
        "field `response_format.json_schema.schema` cannot be enforced: needs a `type` (or `enum`, `const`, `anyOf`)"
    );
    assert_eq!(
        named(r#"{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string","format":"email"}}}"#),
        "field `response_format.json_schema.schema` cannot be enforced: keyword `format` is not supported"
    );
    assert_eq!(
        named(r#"{"type":"json_schema","json_schema":{"schema":{"type":"string"}}}"#),
        "field `response_format.json_schema.name` is required"
    );
    assert_eq!(
        named(
            r#"{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"string"},"extra":1}}"#
        ),
        "field `response_format.json_schema.extra` is not supported"
    );
    assert_eq!(
        named(r#"{"type":"json_schema"}"#),
        "field `response_format.json_schema` is required"
    );
    // A schema the grammar enforces: kept, with the spec for HTTP engines.
    let spec = r#"{"name":"city","strict":true,"schema":{"type":"object","properties":{"name":{"type":"string"}},"required":["name"],"additionalProperties":false}}"#;
    let r = with(&format!(r#"{{"type":"json_schema","json_schema":{spec}}}"#)).unwrap();
    match &r.response_format {
        Some(cocoon_engine::ResponseFormat::JsonSchema { grammar, .. }) => {
            assert!(grammar.starts_with("root ::= "), "{grammar}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        r.to_upstream_json()["response_format"]["json_schema"]["name"],
        "city"
    );
    assert_eq!(
        named(r#"{"type":"xml"}"#),
        "field `response_format.type` must be text, json_object or json_schema, not \"xml\""
    );
    assert_eq!(named(r#"{}"#), "field `response_format.type` is required");
    assert_eq!(
        named(r#"{"type":"json_object","strict":true}"#),
        "field `response_format.strict` is not supported"
    );
    assert_eq!(
        named(r#""json""#),
        "field `response_format` must be an object"
    );
}

/// `logit_bias`: token ids to biases in -100…100, forwarded to HTTP engines; anything else named.
#[test]
fn logit_bias_is_read_checked_and_forwarded() {
    let with = |b: &str| {
        chat(&format!(
            r#"{{"model":"m","messages":[{{"role":"user","content":"x"}}],"logit_bias":{b}}}"#
        ))
    };
    let r = with(r#"{"50256":-100,"7":2.5}"#).unwrap();
    assert_eq!(r.sampling.logit_bias, [(7, 2.5), (50256, -100.0)]);
    assert_eq!(
        r.to_upstream_json()["logit_bias"],
        serde_json::json!({"7": 2.5, "50256": -100.0})
    );
    let named = |b: &str| with(b).unwrap_err().to_string();
    assert_eq!(
        named(r#"{"x":1}"#),
        "field `logit_bias.x` is not a token id (a non-negative integer)"
    );
    assert_eq!(
        named(r#"{"5":101}"#),
        "field `logit_bias.5` must be a number from -100 to 100"
    );
    assert_eq!(
        named(r#"[1]"#),
        "field `logit_bias` must be an object from token ids to biases"
    );
    let many: Vec<String> = (0..301).map(|i| format!(r#""{i}":1"#)).collect();
    assert_eq!(
        named(&format!("{{{}}}", many.join(","))),
        "field `logit_bias` must have at most 300 entries"
    );
}

#[test]
fn logprobs_and_top_logprobs_are_read_and_checked() {
    let base = r#"{"model":"m","messages":[{"role":"user","content":"x"}]"#;
    let with = |extra: &str| chat(&format!("{base}{extra}}}"));
    assert_eq!(with("").unwrap().logprobs, None);
    assert_eq!(with(r#","logprobs":true"#).unwrap().logprobs, Some(0));
    assert_eq!(
        with(r#","logprobs":true,"top_logprobs":5"#)
            .unwrap()
            .logprobs,
        Some(5)
    );
    assert_eq!(with(r#","logprobs":false"#).unwrap().logprobs, None);
    let err = |extra: &str| with(extra).unwrap_err().to_string();
    assert_eq!(
        err(r#","logprobs":1"#),
        "field `logprobs` must be a boolean"
    );
    assert_eq!(
        err(r#","logprobs":true,"top_logprobs":21"#),
        "field `top_logprobs` must be an integer from 0 to 20"
    );
    assert_eq!(
        err(r#","top_logprobs":2"#),
        "field `top_logprobs` needs `logprobs: true`"
    );
    // Forwarded to an HTTP engine.
    let up = with(r#","logprobs":true,"top_logprobs":3"#)
        .unwrap()
        .to_upstream_json();
    assert_eq!(
        (up["logprobs"].clone(), up["top_logprobs"].clone()),
        (true.into(), 3.into())
    );
}

#[test]
fn tool_messages_and_calls_are_read_and_forwarded() {
    let r = chat(
        r#"{"model":"m","messages":[
            {"role":"user","content":"weather?"},
            {"role":"assistant","content":null,"refusal":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":\"Oslo\"}"}}]},
            {"role":"tool","tool_call_id":"call_1","content":"cold"}],
          "tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}}],
          "tool_choice":"required","parallel_tool_calls":false}"#,
    )
    .unwrap();
    assert_eq!(r.tools.len(), 1);
    assert_eq!(r.tool_choice, cocoon_engine::ToolChoice::Required);
    let Prompt::Chat(m) = &r.prompt else {
        panic!("chat expected")
    };
    assert_eq!(m[1].tool_calls[0].name, "get_weather");
    assert_eq!(m[2].tool_call_id.as_deref(), Some("call_1"));
    let up = r.to_upstream_json();
    assert_eq!(up["tools"][0]["function"]["name"], "get_weather");
    assert_eq!(up["tool_choice"], "required");
    assert_eq!(up["messages"][1]["tool_calls"][0]["id"], "call_1");
    assert_eq!(up["messages"][2]["tool_call_id"], "call_1");
    // Refusals name what is wrong.
    let err = |body: &str| chat(body).unwrap_err().to_string();
    assert_eq!(
        err(r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#),
        "field `messages[0].tool_call_id` must be the id of the call answered"
    );
    assert_eq!(
        err(r#"{"model":"m","messages":[{"role":"user","content":"x","tool_calls":[]}]}"#),
        "field `messages[0].tool_calls` is not supported"
    );
    assert_eq!(
        err(
            r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":{}}}]}]}"#
        ),
        "field `messages[0].tool_calls[0].function.arguments` must be a string of JSON"
    );
    assert_eq!(
        err(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"json_object"}}"#),
        "field `response_format` cannot be combined with tools the model may call (use tool_choice \"none\")"
    );
    // `text` is no format at all: it goes with tools.
    assert!(chat(r#"{"model":"m","messages":[{"role":"user","content":"x"}],"tools":[{"type":"function","function":{"name":"f"}}],"response_format":{"type":"text"}}"#).is_ok());
}
