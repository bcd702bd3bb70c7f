//! Function calling (`tools`, `tool_choice`) in OpenAI's shape, for models whose chat has no tool
//! template of its own (BioMedGPT-10B's reference chat has none). The template is ours, in the
//! form Hermes-style models (Qwen2.5, NousResearch) are trained on:
//!
//! - the functions are described after the system prompt: an instruction, then one JSON object
//!   per function (`{"name", "description", "parameters"}`) between `<tools>` and `</tools>`;
//! - a call is the whole answer: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
//!   (several calls follow each other); an earlier turn's `tool_calls` are written back so;
//! - a `tool` message (a call's result) is a user turn `<tool_response>...</tool_response>`.
//!
//! Decoding holds the answer to that form ([`crate::structured`]): with `tool_choice` `required`
//! or a named function, the answer is one or more calls whose `arguments` follow the function's
//! `parameters` schema; with `auto`, either calls so held or free text that does not begin with
//! `<`. The server turns calls back into `message.tool_calls` with `finish_reason:
//! "tool_calls"`.

use serde_json::{Value, json};

/// A function the model may call.
#[derive(Debug, Clone, PartialEq)]
pub struct Function {
    pub name: String,
    pub description: Option<String>,
    /// A JSON schema of the arguments object.
    pub parameters: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ToolChoice {
    /// A call or a text answer, as the model decides.
    Auto,
    /// At least one call, of any of the functions.
    Required,
    /// One call of this function.
    Named(String),
}

/// The functions of a request and how they may be called (`tool_choice: "none"` is no `Tools`).
#[derive(Debug, Clone, PartialEq)]
pub struct Tools {
    pub functions: Vec<Function>,
    pub choice: ToolChoice,
}

/// One parsed call: the function's name and its arguments as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub name: String,
    pub arguments: String,
}

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";

impl Tools {
    /// What follows the system prompt: how to call, and the functions.
    pub fn instructions(&self) -> String {
        let mut text = String::from(
            "You may call functions to help answer. To call one, answer only with <tool_call>{\"name\": <function name>, \"arguments\": <arguments object>}</tool_call>; the results come back as <tool_response>. The functions:\n<tools>\n",
        );
        for f in &self.functions {
            let mut described = json!({"name": f.name, "parameters": f.parameters});
            if let Some(d) = &f.description {
                described["description"] = d.clone().into();
            }
            text.push_str(&described.to_string());
            text.push('\n');
        }
        text.push_str("</tools>");
        text
    }

    /// The functions a call may name: all of them, or the one `tool_choice` names.
    fn callable(&self) -> impl Iterator<Item = &Function> {
        self.functions.iter().filter(move |f| match &self.choice {
            ToolChoice::Named(name) => &f.name == name,
            _ => true,
        })
    }

    /// The JSON schema of one call's object: the name one of the callable functions', the
    /// arguments that function's parameters.
    pub fn call_schema(&self) -> Value {
        let options: Vec<Value> = self
            .callable()
            .map(|f| {
                json!({"type": "object", "properties": {"name": {"const": f.name}, "arguments": f.parameters},
                    "required": ["name", "arguments"], "additionalProperties": false})
            })
            .collect();
        if options.len() == 1 { options.into_iter().next().expect("one") } else { json!({"anyOf": options}) }
    }

    /// The answer's grammar in llguidance's Lark: calls (a named function: exactly one), or for
    /// `auto` also free text whose first visible character is not `<`. `call_schema` is
    /// [`Self::call_schema`] as the caller compiles it (with its JSON separators).
    pub fn lark(&self, call_schema: &Value) -> String {
        // A SentencePiece answer may start with its word-start space.
        let start = if self.choice == ToolChoice::Auto { "calls | \" \" calls | text" } else { "calls | \" \" calls" };
        let calls = if matches!(self.choice, ToolChoice::Named(_)) { "call" } else { "call (\"\\n\" call)*" };
        let mut lark = format!("start: {start}\ncalls: {calls}\ncall: \"{OPEN}\" call_object \"{CLOSE}\"\ncall_object: %json {call_schema}\n");
        if self.choice == ToolChoice::Auto {
            lark.push_str("text: /\\s*[^<\\s](?s:.*)/\n");
        }
        lark
    }

    /// The calls an answer makes, `None` when it is text (or a call cut short). Names must be
    /// callable functions and arguments JSON objects, as the grammar holds them.
    pub fn parse(&self, answer: &str) -> Option<Vec<Call>> {
        let mut rest = answer.trim();
        if !rest.starts_with(OPEN) {
            return None;
        }
        let mut calls = Vec::new();
        while let Some(after) = rest.strip_prefix(OPEN) {
            let end = after.find(CLOSE)?;
            let object: Value = serde_json::from_str(after[..end].trim()).ok()?;
            let name = object.get("name")?.as_str()?;
            let arguments = object.get("arguments").filter(|a| a.is_object())?;
            if !self.callable().any(|f| f.name == name) {
                return None;
            }
            calls.push(Call { name: name.to_string(), arguments: arguments.to_string() });
            rest = after[end + CLOSE.len()..].trim_start();
        }
        rest.is_empty().then_some(calls)
    }
}

/// An earlier assistant turn's calls, as the template writes them.
pub fn render_calls(calls: &[Call]) -> String {
    calls
        .iter()
        .map(|c| {
            let arguments: Value = serde_json::from_str(&c.arguments).unwrap_or_else(|_| Value::String(c.arguments.clone()));
            format!("{OPEN}{}{CLOSE}", json!({"name": c.name, "arguments": arguments}))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A `tool` message's content, as the template writes it.
pub fn render_response(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools(choice: ToolChoice) -> Tools {
        Tools {
            functions: vec![
                Function { name: "molecular_weight".into(), description: Some("Weight of a molecule".into()), parameters: json!({"type": "object", "properties": {"smiles": {"type": "string"}}, "required": ["smiles"]}) },
                Function { name: "search".into(), description: None, parameters: json!({"type": "object"}) },
            ],
            choice,
        }
    }

    #[test]
    fn calls_are_parsed_and_written_back_alike() {
        let t = tools(ToolChoice::Auto);
        let answer = "<tool_call>{\"name\": \"molecular_weight\", \"arguments\": {\"smiles\": \"CCO\"}}</tool_call>\n<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call>";
        let calls = t.parse(answer).unwrap();
        assert_eq!(calls, vec![Call { name: "molecular_weight".into(), arguments: "{\"smiles\":\"CCO\"}".into() }, Call { name: "search".into(), arguments: "{}".into() }]);
        assert_eq!(t.parse(&render_calls(&calls)).unwrap(), calls);
        for text in ["Ethanol.", "<tool_call>{\"name\": \"molecular_weight\", \"arguments\": {}", "<tool_call>{\"name\": \"other\", \"arguments\": {}}</tool_call>", "<tool_call>{\"name\": \"search\"}</tool_call>", "<tool_call>{\"name\": \"search\", \"arguments\": {}}</tool_call> and text"] {
            assert_eq!(t.parse(text), None, "{text}");
        }
        let named = tools(ToolChoice::Named("search".into()));
        assert_eq!(named.parse(answer), None, "a named choice calls only that function");
        assert!(named.call_schema()["properties"]["name"]["const"] == "search");
        assert_eq!(tools(ToolChoice::Required).call_schema()["anyOf"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn the_instructions_describe_every_function() {
        let text = tools(ToolChoice::Auto).instructions();
        assert!(text.contains("\"name\":\"molecular_weight\"") && text.contains("\"description\":\"Weight of a molecule\"") && text.contains("\"required\":[\"smiles\"]"), "{text}");
        assert!(text.contains("\"name\":\"search\"") && text.ends_with("</tools>"));
        assert_eq!(render_response("42"), "<tool_response>\n42\n</tool_response>");
    }
}
