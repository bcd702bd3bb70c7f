//! OpenAI's request bodies, read into the engine's [`PromptSpec`] and [`Params`] with every
//! field range-checked (a bad field is a 400 naming it), and the response bodies.
//!
//! Molecules and proteins are content parts shaped like OpenAI's `image_url` parts:
//! `{"type": "molecule", "molecule": {"smiles": "CCO"}}` and
//! `{"type": "protein", "protein": {"sequence": "MKT..."}}`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::structured::ResponseFormat;
use crate::tools::{Call, Function, ToolChoice, Tools};
use crate::request::{EmbedInput, Failure, Message, Params, Part, PromptSpec, Role, TokenLogprob};

fn bad(param: &str, message: impl Into<String>) -> Failure {
    Failure { status: 400, message: message.into(), param: Some(param.to_string()) }
}

/// Parses a JSON body; a syntax error says where it is, a wrong field names the field (in the
/// message and in `param`, issue 39, D25).
pub fn parse_body<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Failure> {
    if body.is_empty() {
        return Err(Failure::bad_request("the request body is empty: expected a JSON object"));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| Failure::bad_request(format!("invalid JSON body: {e}")))?;
    T::deserialize(&value).map_err(|e| {
        // serde loses the field's name inside `#[serde(flatten)]` (the sampling fields). Every
        // request field is optional, so the wrong one is the first member that fails alone.
        let wrong = value.as_object().and_then(|members| {
            members.iter().map(|(k, v)| (k, serde_json::Map::from_iter([(k.clone(), v.clone())]))).find_map(|(k, alone)| {
                T::deserialize(&Value::Object(alone)).is_err().then(|| k.clone())
            })
        });
        match wrong {
            Some(field) => bad(&field, format!("`{field}`: {e}")),
            None => Failure::bad_request(format!("invalid request body: {e}")),
        }
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
pub enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Fields shared by chat and text completions.
#[derive(Deserialize)]
pub struct Sampling {
    pub model: Option<String>,
    pub max_tokens: Option<u64>,
    pub max_completion_tokens: Option<u64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<i64>,
    pub seed: Option<i64>,
    pub stop: Option<StringOrList>,
    pub n: Option<u64>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub frequency_penalty: Option<f64>,
    pub presence_penalty: Option<f64>,
    pub repetition_penalty: Option<f64>,
    pub num_beams: Option<u64>,
    pub length_penalty: Option<f64>,
    pub logit_bias: Option<serde_json::Map<String, Value>>,
    pub tools: Option<Vec<Value>>,
    pub tool_choice: Option<Value>,
    pub response_format: Option<Value>,
    pub best_of: Option<u64>,
    #[serde(default)]
    pub ignore_eos: bool,
}

/// Most choices (`n`) and beams one request may ask for.
pub const MAX_N: u64 = 16;
pub const MAX_BEAMS: u64 = 16;
/// Stop strings: OpenAI allows 4; each is searched for in the text after every token, so their
/// length is bounded too (16 of 200 KB made every step 14x slower, issue 39, D23).
pub const MAX_STOPS: usize = 4;
pub const MAX_STOP_BYTES: usize = 256;

impl Sampling {
    /// The engine's parameters; `logprobs` comes from the endpoint's own fields.
    pub fn params(&self, logprobs: Option<usize>) -> Result<Params, Failure> {
        let mut p = Params::default();
        p.max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(m), _) | (None, Some(m)) => Some(usize::try_from(m).map_err(|_| bad("max_tokens", "max_tokens is too large"))?),
            (None, None) => None,
        };
        let finite = |name: &str, v: Option<f64>| -> Result<Option<f64>, Failure> {
            match v {
                Some(x) if !x.is_finite() => Err(bad(name, format!("{name} must be a finite number"))),
                v => Ok(v),
            }
        };
        if let Some(t) = finite("temperature", self.temperature)? {
            if !(0.0..=2.0).contains(&t) {
                return Err(bad("temperature", format!("temperature must be between 0 and 2, not {t}")));
            }
            p.temperature = Some(t as f32);
        }
        if let Some(tp) = finite("top_p", self.top_p)? {
            if !(tp > 0.0 && tp <= 1.0) {
                return Err(bad("top_p", format!("top_p must be in (0, 1], not {tp}")));
            }
            p.top_p = (tp < 1.0).then_some(tp as f32);
        }
        // vLLM's convention: -1 (or 0) turns top-k off.
        p.top_k = match self.top_k {
            Some(k) if k < -1 => return Err(bad("top_k", format!("top_k must be -1 (off) or positive, not {k}"))),
            Some(k) if k > 0 => Some(k as usize),
            _ => None,
        };
        p.seed = self.seed.map(|s| s as u64);
        p.stop = match &self.stop {
            None => Vec::new(),
            Some(StringOrList::One(s)) => vec![s.clone()],
            Some(StringOrList::Many(v)) => v.clone(),
        };
        if p.stop.len() > MAX_STOPS {
            return Err(bad("stop", format!("at most {MAX_STOPS} stop strings, not {}", p.stop.len())));
        }
        if p.stop.iter().any(String::is_empty) {
            return Err(bad("stop", "stop strings must not be empty"));
        }
        if let Some(long) = p.stop.iter().find(|s| s.len() > MAX_STOP_BYTES) {
            return Err(bad("stop", format!("a stop string has {} bytes; at most {MAX_STOP_BYTES}", long.len())));
        }
        let n = self.n.unwrap_or(1);
        if !(1..=MAX_N).contains(&n) {
            return Err(bad("n", format!("n must be between 1 and {MAX_N}, not {n}")));
        }
        p.n = n as usize;
        for (name, v, slot) in [
            ("frequency_penalty", self.frequency_penalty, &mut p.frequency_penalty),
            ("presence_penalty", self.presence_penalty, &mut p.presence_penalty),
        ] {
            if let Some(x) = finite(name, v)? {
                if !(-2.0..=2.0).contains(&x) {
                    return Err(bad(name, format!("{name} must be between -2 and 2, not {x}")));
                }
                *slot = x as f32;
            }
        }
        if let Some(r) = finite("repetition_penalty", self.repetition_penalty)? {
            if !(r > 0.0) {
                return Err(bad("repetition_penalty", format!("repetition_penalty must be positive, not {r}")));
            }
            p.repetition_penalty = r as f32;
        }
        if let Some(l) = finite("length_penalty", self.length_penalty)? {
            p.length_penalty = l as f32;
        }
        let beams = self.num_beams.unwrap_or(1);
        if !(1..=MAX_BEAMS).contains(&beams) {
            return Err(bad("num_beams", format!("num_beams must be between 1 and {MAX_BEAMS}, not {beams}")));
        }
        p.num_beams = beams as usize;
        if beams > 1 && p.sampling() {
            return Err(bad("num_beams", "beam search with sampling is not supported: use temperature 0 or num_beams 1"));
        }
        if beams > 1 && p.n > 1 {
            return Err(bad("n", "n > 1 with beam search is not supported"));
        }
        if beams > 1 && logprobs.is_some() {
            return Err(bad("logprobs", "logprobs are not returned with beam search"));
        }
        if self.logit_bias.as_ref().is_some_and(|m| !m.is_empty()) {
            return Err(bad("logit_bias", "logit_bias is not supported"));
        }
        p.response_format = match &self.response_format {
            None => None,
            Some(format) => response_format(format)?,
        };
        p.tools = tools(self.tools.as_deref(), self.tool_choice.as_ref())?;
        if p.tools.is_some() && p.response_format.is_some() {
            return Err(bad("tools", "tools with a response_format are not supported: a call's arguments follow its function's parameters"));
        }
        if p.tools.is_some() && beams > 1 {
            return Err(bad("tools", "tools with beam search are not supported: use num_beams 1"));
        }
        if p.response_format.is_some() && beams > 1 {
            return Err(bad("response_format", "response_format with beam search is not supported: use num_beams 1"));
        }
        if self.best_of.is_some_and(|b| b > 1) {
            return Err(bad("best_of", "best_of is not supported"));
        }
        p.logprobs = logprobs;
        p.ignore_eos = self.ignore_eos;
        Ok(p)
    }

    pub fn include_usage(&self) -> bool {
        self.stream_options.as_ref().is_some_and(|o| o.include_usage)
    }
}

/// Longest function name (OpenAI's limit) and most functions per request.
const MAX_FUNCTION_NAME: usize = 64;
const MAX_TOOLS: usize = 128;

/// OpenAI's `tools` (`[{"type": "function", "function": {"name", "description", "parameters"}}]`)
/// and `tool_choice` (`"none"`, `"auto"`, `"required"` or `{"type": "function", "function":
/// {"name"}}`; `auto` by default). `None`: no function may be called.
fn tools(tools: Option<&[Value]>, choice: Option<&Value>) -> Result<Option<Tools>, Failure> {
    let tools = tools.unwrap_or_default();
    if tools.len() > MAX_TOOLS {
        return Err(bad("tools", format!("tools has {} functions; at most {MAX_TOOLS} are allowed", tools.len())));
    }
    let mut functions: Vec<Function> = Vec::with_capacity(tools.len());
    for (i, tool) in tools.iter().enumerate() {
        let at = format!("tools[{i}]");
        if tool.get("type").and_then(Value::as_str) != Some("function") {
            return Err(bad(&format!("{at}.type"), format!("{at}.type must be \"function\"")));
        }
        let f = tool.get("function").filter(|f| f.is_object()).ok_or_else(|| bad(&format!("{at}.function"), format!("{at}.function must be an object with a name")))?;
        let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
        if name.is_empty() || name.len() > MAX_FUNCTION_NAME || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return Err(bad(&format!("{at}.function.name"), format!("{at}.function.name must be 1 to {MAX_FUNCTION_NAME} letters, digits, underscores or dashes")));
        }
        if functions.iter().any(|g| g.name == name) {
            return Err(bad(&format!("{at}.function.name"), format!("{at}.function.name `{name}` is given twice")));
        }
        let description = match f.get("description") {
            None | Some(Value::Null) => None,
            Some(Value::String(d)) => Some(d.clone()),
            Some(_) => return Err(bad(&format!("{at}.function.description"), format!("{at}.function.description must be a string"))),
        };
        let parameters = match f.get("parameters") {
            None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
            Some(p) if p.is_object() => p.clone(),
            Some(_) => return Err(bad(&format!("{at}.function.parameters"), format!("{at}.function.parameters must be a JSON schema (an object)"))),
        };
        functions.push(Function { name: name.to_string(), description, parameters });
    }
    let choice = match choice {
        None | Some(Value::Null) if functions.is_empty() => return Ok(None),
        None | Some(Value::Null) => ToolChoice::Auto,
        Some(Value::String(s)) => match s.as_str() {
            "none" => return Ok(None),
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => return Err(bad("tool_choice", format!("tool_choice `{other}` is not supported (none, auto, required, or {{\"type\": \"function\", \"function\": {{\"name\": ...}}}})"))),
        },
        Some(named) => match named.get("function").and_then(|f| f.get("name")).and_then(Value::as_str) {
            Some(name) if functions.iter().any(|f| f.name == name) => ToolChoice::Named(name.to_string()),
            Some(name) => return Err(bad("tool_choice", format!("tool_choice names `{name}`, which is not in tools"))),
            None => return Err(bad("tool_choice", "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}")),
        },
    };
    if functions.is_empty() {
        return Err(bad("tool_choice", "tool_choice needs tools"));
    }
    Ok(Some(Tools { functions, choice }))
}

/// OpenAI's `response_format`: `{"type": "text"}`, `{"type": "json_object"}` or `{"type":
/// "json_schema", "json_schema": {"name", "schema", "strict"}}` (the schema is compiled, and its
/// unsupported features named, when the engine admits the request).
fn response_format(format: &Value) -> Result<Option<ResponseFormat>, Failure> {
    match format.get("type").and_then(Value::as_str) {
        Some("text") => Ok(None),
        Some("json_object") => Ok(Some(ResponseFormat::JsonObject)),
        Some("json_schema") => {
            let schema = &format["json_schema"]["schema"];
            if !schema.is_object() && !schema.is_boolean() {
                return Err(bad("response_format", "response_format.json_schema.schema must be a JSON schema (an object)"));
            }
            Ok(Some(ResponseFormat::JsonSchema(schema.clone())))
        }
        Some(other) => Err(bad("response_format", format!("response_format type `{other}` is not supported (text, json_object, json_schema are)"))),
        None => Err(bad("response_format", "response_format needs a `type`: text, json_object or json_schema")),
    }
}

#[derive(Deserialize)]
pub struct ChatRequest {
    pub messages: Option<Vec<Value>>,
    #[serde(flatten)]
    pub sampling: Sampling,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<u64>,
}

#[derive(Deserialize)]
pub struct CompletionRequest {
    pub prompt: Option<Value>,
    #[serde(flatten)]
    pub sampling: Sampling,
    pub logprobs: Option<u64>,
    #[serde(default)]
    pub echo: bool,
    pub suffix: Option<String>,
}

#[derive(Deserialize)]
pub struct EmbeddingRequest {
    pub model: Option<String>,
    pub input: Option<Value>,
    pub encoding_format: Option<String>,
}

/// Most alternatives per token (OpenAI's limit).
const MAX_TOP_LOGPROBS: u64 = 20;

impl ChatRequest {
    pub fn prompt(&self) -> Result<PromptSpec, Failure> {
        let messages = self.messages.as_ref().ok_or_else(|| bad("messages", "messages is required"))?;
        if messages.is_empty() {
            return Err(bad("messages", "messages is empty"));
        }
        // A tool's result answers the calls of the assistant turn before it (as OpenAI checks).
        let mut calls_open = false;
        for (i, m) in messages.iter().enumerate() {
            match m.get("role").and_then(Value::as_str) {
                Some("tool") if !calls_open => {
                    return Err(bad(&format!("messages[{i}].role"), format!("messages[{i}]: a tool message must follow an assistant message with tool_calls")));
                }
                Some("tool") => {}
                Some("assistant") => calls_open = m.get("tool_calls").and_then(Value::as_array).is_some_and(|c| !c.is_empty()),
                _ => calls_open = false,
            }
        }
        messages.iter().enumerate().map(|(i, m)| message(i, m)).collect::<Result<Vec<_>, _>>().map(PromptSpec::Chat)
    }

    pub fn logprobs(&self) -> Result<Option<usize>, Failure> {
        match (self.logprobs, self.top_logprobs) {
            (_, Some(k)) if k > MAX_TOP_LOGPROBS => Err(bad("top_logprobs", format!("top_logprobs must be at most {MAX_TOP_LOGPROBS}"))),
            (false, Some(k)) if k > 0 => Err(bad("top_logprobs", "top_logprobs needs logprobs: true")),
            (true, k) => Ok(Some(k.unwrap_or(0) as usize)),
            (false, _) => Ok(None),
        }
    }
}

fn message(i: usize, m: &Value) -> Result<Message, Failure> {
    let at = format!("messages[{i}]");
    let obj = m.as_object().ok_or_else(|| bad(&at, format!("{at} must be an object with role and content")))?;
    let role = match obj.get("role").and_then(Value::as_str) {
        Some("system" | "developer") => Role::System,
        Some("user") => Role::User,
        Some("assistant") => Role::Assistant,
        // A call's result: a user turn in the tool template (crate::tools).
        Some("tool") => {
            let content = match obj.get("content") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Array(parts)) => parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect(),
                _ => return Err(bad(&format!("{at}.content"), format!("{at}.content must be the call's result (a string)"))),
            };
            return Ok(Message { role: Role::User, parts: vec![Part::Text(crate::tools::render_response(&content))] });
        }
        Some(other) => return Err(bad(&format!("{at}.role"), format!("{at}.role `{other}` is not supported (system, developer, user, assistant, tool)"))),
        None => return Err(bad(&format!("{at}.role"), format!("{at} has no role"))),
    };
    // An assistant turn that called functions: written back as the template writes calls.
    if role == Role::Assistant
        && let Some(calls) = obj.get("tool_calls").filter(|c| !c.is_null())
    {
        let calls = calls.as_array().ok_or_else(|| bad(&format!("{at}.tool_calls"), format!("{at}.tool_calls must be a list")))?;
        let mut parsed = Vec::with_capacity(calls.len());
        for (j, call) in calls.iter().enumerate() {
            let f = &call["function"];
            let (Some(name), Some(arguments)) = (f.get("name").and_then(Value::as_str), f.get("arguments").and_then(Value::as_str)) else {
                return Err(bad(&format!("{at}.tool_calls[{j}]"), format!("{at}.tool_calls[{j}] needs function.name and function.arguments (a JSON string)")));
            };
            parsed.push(Call { name: name.to_string(), arguments: arguments.to_string() });
        }
        let mut text = obj.get("content").and_then(Value::as_str).unwrap_or_default().to_string();
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&crate::tools::render_calls(&parsed));
        return Ok(Message { role, parts: vec![Part::Text(text)] });
    }
    let parts = match obj.get("content") {
        None | Some(Value::Null) => return Err(bad(&format!("{at}.content"), format!("{at} has no content"))),
        Some(Value::String(s)) => {
            if s.trim().is_empty() && role != Role::Assistant {
                return Err(bad(&format!("{at}.content"), format!("{at}.content is empty")));
            }
            vec![Part::Text(s.clone())]
        }
        Some(Value::Array(parts)) => {
            if parts.is_empty() {
                return Err(bad(&format!("{at}.content"), format!("{at}.content is empty")));
            }
            parts.iter().enumerate().map(|(j, p)| part(&format!("{at}.content[{j}]"), p)).collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err(bad(&format!("{at}.content"), format!("{at}.content must be a string or a list of parts"))),
    };
    Ok(Message { role, parts })
}

fn part(at: &str, p: &Value) -> Result<Part, Failure> {
    let field = |obj: &Value, outer: &str, inner: &str| -> Result<String, Failure> {
        obj.get(outer)
            .and_then(|o| o.get(inner))
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| bad(at, format!("{at}: a {outer} part needs {{\"{outer}\": {{\"{inner}\": \"...\"}}}}")))
    };
    match p.get("type").and_then(Value::as_str) {
        Some("text") => p
            .get("text")
            .and_then(Value::as_str)
            .map(|t| Part::Text(t.to_string()))
            .ok_or_else(|| bad(at, format!("{at}: a text part needs \"text\""))),
        Some("molecule") => Ok(Part::Molecule(field(p, "molecule", "smiles")?)),
        Some("protein") => Ok(Part::Protein(field(p, "protein", "sequence")?)),
        Some(other) => Err(bad(at, format!("{at}: part type `{other}` is not supported (text, molecule, protein)"))),
        None => Err(bad(at, format!("{at}: a content part needs a type"))),
    }
}

impl CompletionRequest {
    pub fn prompt(&self) -> Result<PromptSpec, Failure> {
        if self.echo {
            return Err(bad("echo", "echo is not supported"));
        }
        if self.suffix.is_some() {
            return Err(bad("suffix", "suffix is not supported"));
        }
        match &self.prompt {
            Some(Value::String(s)) if !s.is_empty() => Ok(PromptSpec::Text(s.clone())),
            Some(Value::String(_)) => Err(bad("prompt", "prompt is empty")),
            Some(Value::Array(v)) if v.len() == 1 && v[0].is_string() => Ok(PromptSpec::Text(v[0].as_str().unwrap_or_default().to_string())),
            Some(Value::Array(_)) => Err(bad("prompt", "prompt must be one string (lists of prompts and token ids are not supported)")),
            Some(_) => Err(bad("prompt", "prompt must be a string")),
            None => Err(bad("prompt", "prompt is required")),
        }
    }

    pub fn logprobs(&self) -> Result<Option<usize>, Failure> {
        match self.logprobs {
            Some(k) if k > 5 => Err(bad("logprobs", "logprobs must be at most 5")),
            Some(k) => Ok(Some(k as usize)),
            None => Ok(None),
        }
    }
}

impl EmbeddingRequest {
    pub fn inputs(&self) -> Result<Vec<EmbedInput>, Failure> {
        if let Some(f) = &self.encoding_format
            && f != "float"
        {
            return Err(bad("encoding_format", format!("encoding_format `{f}` is not supported (float)")));
        }
        let items = match &self.input {
            Some(Value::Array(v)) if v.is_empty() => return Err(bad("input", "input is empty")),
            Some(Value::Array(v)) => v.clone(),
            Some(v @ Value::Object(_)) => vec![v.clone()],
            Some(Value::String(_)) => {
                return Err(bad("input", "text embeddings are not offered: give molecule or protein items, {\"type\": \"molecule\", \"molecule\": {\"smiles\": \"...\"}}"));
            }
            _ => return Err(bad("input", "input is required: a molecule or protein item, or a list of them")),
        };
        const MAX_INPUTS: usize = 256;
        if items.len() > MAX_INPUTS {
            return Err(bad("input", format!("at most {MAX_INPUTS} inputs per request, not {}", items.len())));
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| match part(&format!("input[{i}]"), item)? {
                Part::Molecule(s) => Ok(EmbedInput::Molecule(s)),
                Part::Protein(s) => Ok(EmbedInput::Protein(s)),
                Part::Text(_) => Err(bad(&format!("input[{i}]"), format!("input[{i}]: text embeddings are not offered (molecule or protein)"))),
            })
            .collect()
    }
}

/// OpenAI's error body.
pub fn error_body(f: &Failure) -> Value {
    let kind = match f.status {
        400 | 404 | 413 => "invalid_request_error",
        401 => "authentication_error",
        429 => "rate_limit_error",
        503 => "service_unavailable",
        504 => "timeout",
        _ => "server_error",
    };
    json!({"error": {"message": f.message, "type": kind, "param": f.param, "code": Value::Null}})
}

/// OpenAI's `usage`, with the prompt positions the prefix cache supplied as
/// `prompt_tokens_details.cached_tokens`.
pub fn usage(prompt: usize, cached: usize, completion: usize) -> Value {
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": cached}})
}

/// Chat logprobs content entries.
pub fn chat_logprobs(entries: &[TokenLogprob]) -> Value {
    json!({"content": entries.iter().map(|e| json!({
        "token": e.token,
        "logprob": e.logprob,
        "bytes": e.bytes,
        "top_logprobs": e.top.iter().map(|(t, b, l)| json!({"token": t, "logprob": l, "bytes": b})).collect::<Vec<_>>(),
    })).collect::<Vec<_>>()})
}

/// Legacy completions logprobs (`tokens`, `token_logprobs`, `top_logprobs`).
pub fn completion_logprobs(entries: &[TokenLogprob]) -> Value {
    json!({
        "tokens": entries.iter().map(|e| e.token.clone()).collect::<Vec<_>>(),
        "token_logprobs": entries.iter().map(|e| e.logprob).collect::<Vec<_>>(),
        "top_logprobs": entries.iter().map(|e| e.top.iter().map(|(t, _, l)| (t.clone(), json!(l))).collect::<serde_json::Map<_, _>>()).collect::<Vec<_>>(),
    })
}

/// llama-server's `POST /tokenize`: `content`, with BOS when `add_special`, each id with its text
/// when `with_pieces`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenizeRequest {
    pub content: String,
    #[serde(default)]
    pub add_special: bool,
    #[serde(default)]
    pub with_pieces: bool,
}

/// llama-server's `POST /detokenize`: the text of `tokens` (special tokens kept).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DetokenizeRequest {
    pub tokens: Vec<u64>,
}
