//! The embedded engine on a real model (SmolLM2-135M-Instruct, CPU).

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use cocoon_engine::{Engine, EngineError, Event, FinishReason};
use cocoon_llama::{LlamaConfig, LlamaEngine};
use common::{chat, completion};
use futures_util::StreamExt;

const MODEL: &str = "SmolLM2-135M-Instruct-Q4_1";

fn config() -> LlamaConfig {
    LlamaConfig {
        n_ctx_per_seq: 1024,
        progress: false,
        ..LlamaConfig::new(common::smollm2())
    }
}

/// One engine shared by the tests that do not depend on cache state.
fn shared() -> Arc<LlamaEngine> {
    static ENGINE: OnceLock<Arc<LlamaEngine>> = OnceLock::new();
    ENGINE
        .get_or_init(|| Arc::new(LlamaEngine::load(config()).unwrap()))
        .clone()
}

#[tokio::test]
async fn answers_the_capital_of_france() {
    let engine = shared();
    assert_eq!(engine.info().architecture, "llama");
    let r = chat(
        MODEL,
        "What is the capital of France?",
        r#","temperature":0,"max_tokens":40"#,
    );
    let a = engine.generate(r).unwrap().collect().await.unwrap();
    assert!(a.text.contains("Paris"), "{:?}", a.text);
    assert!(a.usage.prompt_tokens > 5);
    assert!(a.usage.completion_tokens >= 1 && a.usage.completion_tokens <= 40);
    assert_eq!(a.usage.reasoning_tokens, 0);
}

#[tokio::test]
async fn streams_the_answer_in_chunks_with_usage_through_the_openai_server() {
    let engine = shared();
    let url = serve(&engine).await;
    let body = format!(
        r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"What is the capital of France?"}}],"temperature":0,"max_tokens":40,"stream":true,"stream_options":{{"include_usage":true}}}}"#
    );
    let sse = reqwest_text(&format!("{url}/v1/chat/completions"), body).await;
    let events = sse_events(&sse);
    let text: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    let chunks = events
        .iter()
        .filter(|e| e["choices"][0]["delta"]["content"].is_string())
        .count();
    assert!(text.contains("Paris"), "{text:?}");
    assert!(chunks > 1, "streamed as several chunks");
    let usage = &events.last().unwrap()["usage"];
    // The same request, not streamed: the same billed counts.
    let direct = engine
        .generate(chat(
            MODEL,
            "What is the capital of France?",
            r#","temperature":0,"max_tokens":40"#,
        ))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(
        usage["prompt_tokens"].as_u64().unwrap(),
        direct.usage.prompt_tokens
    );
    assert_eq!(
        usage["completion_tokens"].as_u64().unwrap(),
        direct.usage.completion_tokens
    );
    assert!(sse.ends_with("data: [DONE]\n\n"));
}

/// The engine behind the OpenAI server on a free port; its base URL.
async fn serve(engine: &Arc<LlamaEngine>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(cocoon_engine::server::serve(listener, engine.clone()));
    url
}

/// The JSON events of an SSE body (`[DONE]` left out).
fn sse_events(sse: &str) -> Vec<serde_json::Value> {
    sse.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

async fn reqwest_text(url: &str, body: String) -> String {
    // A tiny HTTP/1.1 client over TCP keeps this crate free of an HTTP client dependency.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url
        .trim_start_matches("http://")
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let path = &url[url.find(&addr).unwrap() + addr.len()..];
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    }
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let n = usize::from_str_radix(size.trim(), 16).unwrap();
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
}

#[tokio::test]
async fn eight_concurrent_requests_share_the_batch_with_their_own_usage() {
    let engine = shared();
    let prompts = [
        "The first ten prime numbers are",
        "Once upon a time, in a small village,",
        "The recipe for pancakes needs",
        "In 1969, the first man on the moon",
        "Rust is a programming language that",
        "The three primary colors are",
        "Water boils at a temperature of",
        "The largest planet in the solar system",
    ];
    let mut handles = Vec::new();
    for (i, p) in prompts.iter().enumerate() {
        let max = 8 + 3 * i as u32;
        // `stop` and EOS are unlikely this early; ignore_eos is not offered,
        // so assert the bound and the exact count when the length was hit.
        let r = completion(MODEL, p, &format!(r#","temperature":0,"max_tokens":{max}"#));
        let g = engine.generate(r).unwrap();
        handles.push(tokio::spawn(
            async move { (max, g.collect().await.unwrap()) },
        ));
    }
    let mut prompt_counts = Vec::new();
    for h in handles {
        let (max, a) = h.await.unwrap();
        assert!(a.usage.completion_tokens <= u64::from(max));
        if a.finish_reason == FinishReason::Length {
            assert_eq!(a.usage.completion_tokens, u64::from(max));
        }
        assert!(!a.text.is_empty());
        prompt_counts.push(a.usage.prompt_tokens);
    }
    // Each request billed its own prompt (they differ in length).
    prompt_counts.dedup();
    assert!(prompt_counts.len() > 1, "{prompt_counts:?}");
}

#[tokio::test]
async fn a_repeated_prefix_is_reused_and_reported_as_cached() {
    let engine = LlamaEngine::load(config()).unwrap();
    let system = "You are a helpful assistant. You answer questions about geography in one short sentence, and you always name the country.";
    let ask = |q: &str| {
        let body = format!(
            r#"{{"model":"{MODEL}","messages":[{{"role":"system","content":"{system}"}},{{"role":"user","content":"{q}"}}],"temperature":0,"max_tokens":8}}"#
        );
        cocoon_engine::EngineRequest::parse_chat(body.as_bytes()).unwrap()
    };
    let first = engine
        .generate(ask("Where is Lyon?"))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(first.usage.cached_tokens, 0);
    let second = engine
        .generate(ask("Where is Porto?"))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(second.usage.cached_tokens >= 20, "{:?}", second.usage);
    assert!(second.usage.cached_tokens < second.usage.prompt_tokens);
}

#[tokio::test]
async fn seeded_sampling_is_reproducible() {
    let run = || async {
        let engine = LlamaEngine::load(config()).unwrap();
        let r = completion(
            MODEL,
            "My favourite animal is",
            r#","temperature":0.9,"seed":42,"max_tokens":16"#,
        );
        engine.generate(r).unwrap().collect().await.unwrap().text
    };
    assert_eq!(run().await, run().await);
}

#[tokio::test]
async fn dropping_the_stream_frees_the_slot() {
    // Its own engine, so that no other test's request is in flight.
    let engine = LlamaEngine::load(config()).unwrap();
    let mut g = engine
        .generate(completion(
            MODEL,
            "Count from one to one thousand: one, two,",
            r#","max_tokens":500"#,
        ))
        .unwrap();
    assert!(matches!(g.next().await, Some(Ok(Event::Text(_)))));
    drop(g);
    // The loop notices at its next step; bounded wait for the count to drop.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while engine.in_flight() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        engine.in_flight(),
        0,
        "the cancelled request still holds its slot"
    );
    let a = engine
        .generate(completion(MODEL, "Hello", r#","max_tokens":2"#))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert!(a.usage.completion_tokens <= 2);
}

#[tokio::test]
async fn refusals_are_specific() {
    let engine = shared();
    assert!(matches!(
        engine.generate(completion("gpt-4", "x", "")),
        Err(EngineError::UnknownModel(m)) if m == "gpt-4"
    ));
    let long = "word ".repeat(3000);
    let err = engine
        .generate(completion(MODEL, &long, ""))
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert!(
        matches!(err, EngineError::PromptTooLong { context: 1024, .. }),
        "{err}"
    );
    // The identity `name@sha256` is accepted as the model name too.
    let id = engine.models()[0].clone();
    assert!(id.starts_with(&format!("{MODEL}@")));
    let a = engine
        .generate(completion(&id, "Hi", r#","max_tokens":1"#))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(a.usage.completion_tokens, 1);
}

#[tokio::test]
async fn stop_sequences_end_the_answer_before_the_stop() {
    let engine = shared();
    let r = completion(
        MODEL,
        "1, 2, 3, 4, 5,",
        r#","temperature":0,"max_tokens":30,"stop":["8"]"#,
    );
    let a = engine.generate(r).unwrap().collect().await.unwrap();
    assert_eq!(a.finish_reason, FinishReason::Stop);
    assert!(!a.text.contains('8'), "{:?}", a.text);
    assert!(a.text.contains('7'), "{:?}", a.text);
}

#[tokio::test]
async fn a_reader_that_never_reads_does_not_stall_the_others() {
    let engine = LlamaEngine::load(LlamaConfig {
        max_sequences: 2,
        ..config()
    })
    .unwrap();
    // A: many chunks, never read while B runs (its channel fills up).
    let slow = engine
        .generate(completion(
            MODEL,
            "Count from one to two hundred: one, two, three,",
            r#","temperature":0,"max_tokens":100"#,
        ))
        .unwrap();
    // B: runs longer than A, so A finishes (and must deliver its end) while B decodes.
    let fast = engine
        .generate(completion(
            MODEL,
            "The alphabet is: A, B, C,",
            r#","temperature":0,"max_tokens":120"#,
        ))
        .unwrap();
    let b = tokio::time::timeout(Duration::from_secs(120), fast.collect())
        .await
        .expect("B finished although A's reader never read")
        .unwrap();
    assert!(b.usage.completion_tokens > 0);
    // A's answer was kept for it, whole, with its usage.
    let a = slow.collect().await.unwrap();
    assert!(a.usage.completion_tokens > 0 && a.usage.completion_tokens <= 100);
    assert!(!a.text.is_empty());
}

/// `response_format: json_object`: a grammar lets through only tokens that keep the answer one
/// JSON object, so even a 135M model answers with JSON that parses, at temperature 0 and not.
#[tokio::test]
async fn json_object_answers_are_json_objects_by_grammar() {
    let engine = shared();
    for extra in [
        r#","temperature":0,"max_tokens":200,"response_format":{"type":"json_object"}"#,
        r#","temperature":0.9,"seed":3,"max_tokens":200,"response_format":{"type":"json_object"}"#,
    ] {
        let r = chat(
            MODEL,
            "What is the capital of France? Reply only with {\"capital\": \"<city>\"}.",
            extra,
        );
        let a = engine.generate(r).unwrap().collect().await.unwrap();
        assert_eq!(a.finish_reason, FinishReason::Stop, "{:?}", a.text);
        let v: serde_json::Value = serde_json::from_str(a.text.trim())
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", a.text));
        assert!(v.is_object(), "{v}");
        // Constrained tokens are completion tokens like any other.
        assert!(a.usage.completion_tokens >= 2, "{:?}", a.usage);
    }
}

/// `logit_bias`: +100 on one token makes greedy decoding repeat it; a token beyond the vocabulary
/// is refused, naming it.
#[tokio::test]
async fn logit_bias_steers_the_choice_and_foreign_tokens_are_refused() {
    let engine = shared();
    let free = chat(MODEL, "Say hello.", r#","temperature":0,"max_tokens":6"#);
    let free = engine.generate(free).unwrap().collect().await.unwrap();
    let biased = chat(
        MODEL,
        "Say hello.",
        r#","temperature":0,"max_tokens":6,"logit_bias":{"33":100}"#,
    );
    let a = engine.generate(biased).unwrap().collect().await.unwrap();
    assert_ne!(a.text, free.text);
    assert_eq!(a.usage.completion_tokens, 6, "{:?}", a.text);
    // One token, six times: the text is one piece repeated.
    let piece = &a.text[..a.text.len() / 6];
    assert_eq!(a.text, piece.repeat(6), "{:?}", a.text);
    let foreign = chat(
        MODEL,
        "Say hello.",
        r#","max_tokens":6,"logit_bias":{"99999999":5}"#,
    );
    let e = engine
        .generate(foreign)
        .unwrap()
        .collect()
        .await
        .unwrap_err();
    assert_eq!(e.http_status(), 400);
    assert!(e.to_string().contains("logit_bias.99999999"), "{e}");
}

/// `response_format: json_schema`: the answer fits the schema — the properties it names, with
/// their types and enums — because the grammar allows nothing else.
#[tokio::test]
async fn json_schema_answers_fit_their_schema() {
    let engine = shared();
    let schema = r#"{"type":"object","properties":{"capital":{"type":"string"},"population_millions":{"type":"number"},"continent":{"enum":["Europe","Asia","Africa"]},"landlocked":{"type":"boolean"}},"required":["capital","population_millions","continent","landlocked"],"additionalProperties":false}"#;
    let extra = format!(
        r#","temperature":0,"max_tokens":120,"response_format":{{"type":"json_schema","json_schema":{{"name":"country","strict":true,"schema":{schema}}}}}"#
    );
    let r = chat(MODEL, "Describe France.", &extra);
    let a = engine.generate(r).unwrap().collect().await.unwrap();
    assert_eq!(a.finish_reason, FinishReason::Stop, "{:?}", a.text);
    let v: serde_json::Value = serde_json::from_str(a.text.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", a.text));
    let o = v.as_object().unwrap();
    assert_eq!(o.len(), 4, "{v}");
    assert!(o["capital"].is_string(), "{v}");
    assert!(o["population_millions"].is_number(), "{v}");
    assert!(
        ["Europe", "Asia", "Africa"].contains(&o["continent"].as_str().unwrap()),
        "{v}"
    );
    assert!(o["landlocked"].is_boolean(), "{v}");
}

const WEATHER_TOOL: &str = r#"{"type":"function","function":{"name":"get_weather","description":"The current weather in a city","parameters":{"type":"object","properties":{"city":{"type":"string"},"unit":{"enum":["celsius","fahrenheit"]}},"required":["city","unit"],"additionalProperties":false},"strict":true}}"#;

/// A chat request whose messages are given as JSON.
fn chat_messages(messages: &str, extra: &str) -> cocoon_engine::EngineRequest {
    let body = format!(r#"{{"model":{MODEL:?},"messages":{messages}{extra}}}"#);
    cocoon_engine::EngineRequest::parse_chat(body.as_bytes()).unwrap()
}

/// `tool_choice: required` (SmolLM2's template knows no tools: they are described in the system
/// prompt in the Hermes form): the grammar makes the model call the tool, with arguments that fit
/// its schema; the answer is a call (`finish_reason: tool_calls`), not text. Streamed through the
/// OpenAI server, the call arrives as `delta.tool_calls`.
#[tokio::test]
async fn required_tool_choice_makes_a_call_that_fits_the_schema() {
    let engine = shared();
    let extra = format!(
        r#","temperature":0,"max_tokens":60,"tools":[{WEATHER_TOOL}],"tool_choice":"required""#
    );
    let r = chat(MODEL, "What is the weather in Paris?", &extra);
    let a = engine.generate(r).unwrap().collect().await.unwrap();
    assert_eq!(a.finish_reason, FinishReason::ToolCalls, "{a:?}");
    assert_eq!(a.tool_calls.len(), 1, "{a:?}");
    let call = &a.tool_calls[0];
    assert_eq!(call.name, "get_weather");
    assert!(call.id.starts_with("call_"), "{call:?}");
    let args: serde_json::Value = serde_json::from_str(&call.arguments).unwrap();
    assert!(args["city"].is_string(), "{args}");
    assert!(
        ["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()),
        "{args}"
    );
    assert!(a.text.trim().is_empty(), "{:?}", a.text);
    // The call's tokens are completion tokens like any other.
    assert!(a.usage.completion_tokens >= 10, "{:?}", a.usage);

    // A named function, streamed through the OpenAI server.
    let url = format!("{}/v1/chat/completions", serve(&engine).await);
    let body = format!(
        r#"{{"model":{MODEL:?},"messages":[{{"role":"user","content":"Weather in Rome?"}}],"temperature":0,"max_tokens":60,"stream":true,"stream_options":{{"include_usage":true}},"tools":[{WEATHER_TOOL}],"tool_choice":{{"type":"function","function":{{"name":"get_weather"}}}}}}"#
    );
    let sse = reqwest_text(&url, body).await;
    let events = sse_events(&sse);
    let calls: Vec<&serde_json::Value> = events
        .iter()
        .filter_map(|e| e.pointer("/choices/0/delta/tool_calls/0"))
        .collect();
    // The call's start (id, name), then its arguments in fragments as they were generated.
    assert!(calls.len() > 3, "{sse}");
    assert_eq!(calls[0]["index"], 0);
    assert_eq!(calls[0]["type"], "function");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert!(
        calls[0]["id"].as_str().unwrap().starts_with("call_"),
        "{sse}"
    );
    assert!(
        calls[1..]
            .iter()
            .all(|c| c["index"] == 0 && c.get("id").is_none()),
        "{sse}"
    );
    let joined: String = calls
        .iter()
        .map(|c| c["function"]["arguments"].as_str().unwrap())
        .collect();
    let args: serde_json::Value = serde_json::from_str(&joined).unwrap();
    assert!(args["city"].is_string(), "{args}");
    let finish = events.iter().find_map(|e| {
        e.pointer("/choices/0/finish_reason")
            .and_then(|f| f.as_str())
    });
    assert_eq!(finish, Some("tool_calls"), "{sse}");
    assert!(sse.contains("\"usage\""), "{sse}");
}

/// The round trip: the assistant's call and the tool's result go back to the model (made plain
/// for SmolLM2's template), and it answers in text — with the tools still offered (`auto`) or not
/// (`none`, which also never parses a call).
#[tokio::test]
async fn a_tool_result_goes_back_to_the_model_and_it_answers() {
    let engine = shared();
    let messages = r#"[{"role":"user","content":"What is the weather in Paris?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"{\"temperature\": 21, \"sky\": \"sunny\"}"}]"#;
    for choice in ["none", "auto"] {
        let extra = format!(
            r#","temperature":0,"max_tokens":40,"tools":[{WEATHER_TOOL}],"tool_choice":"{choice}""#
        );
        let a = engine
            .generate(chat_messages(messages, &extra))
            .unwrap()
            .collect()
            .await
            .unwrap();
        if choice == "none" {
            assert!(a.tool_calls.is_empty(), "{a:?}");
        }
        if a.tool_calls.is_empty() {
            assert!(!a.text.trim().is_empty(), "{choice}: {a:?}");
            assert_ne!(a.finish_reason, FinishReason::ToolCalls);
        }
        // The prompt carried the call and the result.
        assert!(a.usage.prompt_tokens > 60, "{choice}: {:?}", a.usage);
    }
}

/// `logprobs` with `top_logprobs`: one entry per generated token, whose texts make the answer;
/// at temperature 0 each chosen token is the most likely one; every log probability is ≤ 0 and
/// the alternatives come most likely first. Streamed, the entries ride with the text they make.
#[tokio::test]
async fn logprobs_are_per_token_and_consistent_with_the_text() {
    let engine = shared();
    let extra = r#","temperature":0,"max_tokens":12,"logprobs":true,"top_logprobs":3"#;
    let a = engine
        .generate(chat(MODEL, "What is the capital of France?", extra))
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(a.logprobs.len() as u64, a.usage.completion_tokens, "{a:?}");
    let joined: String = a.logprobs.iter().map(|l| l.token.as_str()).collect();
    assert_eq!(joined, a.text);
    for l in &a.logprobs {
        assert!(l.logprob <= 0.0, "{l:?}");
        assert_eq!(l.top.len(), 3, "{l:?}");
        assert_eq!(l.top[0].0, l.token, "greedy picks the most likely: {l:?}");
        assert!((l.top[0].2 - l.logprob).abs() < 1e-5, "{l:?}");
        assert!(l.top.windows(2).all(|w| w[0].2 >= w[1].2), "{l:?}");
    }
    // Streamed through the OpenAI server: the entries' tokens make the streamed content.
    let url = format!("{}/v1/chat/completions", serve(&engine).await);
    let body = format!(
        r#"{{"model":{MODEL:?},"messages":[{{"role":"user","content":"What is the capital of France?"}}],"stream":true{extra}}}"#
    );
    let sse = reqwest_text(&url, body).await;
    let events = sse_events(&sse);
    let content: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["delta"]["content"].as_str())
        .collect();
    let tokens: String = events
        .iter()
        .filter_map(|e| e["choices"][0]["logprobs"]["content"].as_array())
        .flatten()
        .map(|l| l["token"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(content, a.text);
    assert_eq!(tokens, content, "{sse}");
}

/// Greedy decoding under a grammar takes the best of the most likely tokens that the grammar
/// allows, checked one by one, before filtering the whole vocabulary; the answer must be the
/// same as filtering every time. A zero `logit_bias` changes no logit but turns the shortcut off.
#[tokio::test]
async fn the_greedy_grammar_shortcut_gives_the_same_answers() {
    let engine = shared();
    let tool = WEATHER_TOOL;
    for constraint in [
        r#","response_format":{"type":"json_object"}"#.to_string(),
        format!(r#","tools":[{tool}],"tool_choice":"required""#),
    ] {
        let run = |extra: String| {
            let engine = engine.clone();
            async move {
                engine
                    .generate(chat(MODEL, "Weather in Lyon as JSON?", &extra))
                    .unwrap()
                    .collect()
                    .await
                    .unwrap()
            }
        };
        let fast = run(format!(r#","temperature":0,"max_tokens":48{constraint}"#)).await;
        let full = run(format!(
            r#","temperature":0,"max_tokens":48,"logit_bias":{{"0":0}}{constraint}"#
        ))
        .await;
        assert_eq!(fast.text, full.text);
        assert_eq!(
            fast.tool_calls
                .iter()
                .map(|c| (&c.name, &c.arguments))
                .collect::<Vec<_>>(),
            full.tool_calls
                .iter()
                .map(|c| (&c.name, &c.arguments))
                .collect::<Vec<_>>()
        );
        assert_eq!(fast.usage.completion_tokens, full.usage.completion_tokens);
    }
}
