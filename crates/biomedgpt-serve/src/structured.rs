//! Structured output (`response_format`): answers held to JSON, or to a JSON schema, while they
//! are decoded, with llguidance (the library vLLM, mistral.rs and llama.cpp use). At every step
//! the grammar's matcher says which tokens may come next; the others get -inf before the token
//! is chosen (greedy, sampling and the penalties unchanged otherwise), and end-of-sequence is
//! allowed only where the JSON is complete. The matcher reads tokens as bytes, built once per
//! model from its `tokenizer.json` (llguidance's own reader of that format: byte-level BPE,
//! SentencePiece with byte fallback); special tokens are never allowed inside the JSON.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};
use llguidance::{Matcher, ParserFactory};
use serde_json::Value;

/// What `response_format` asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum ResponseFormat {
    /// `{"type": "json_object"}`: any JSON object.
    JsonObject,
    /// `{"type": "json_schema", "json_schema": {"schema": ...}}`.
    JsonSchema(Value),
}

/// What an answer is held to: `response_format`, or function calls (`tools`).
#[derive(Debug, Clone, Copy)]
pub enum Grammar<'a> {
    Format(&'a ResponseFormat),
    Tools(&'a crate::tools::Tools),
}

/// JSON as `json.dumps` writes it (", " and ": ", no other whitespace), unless the schema says
/// otherwise in llguidance's `x-guidance`: free whitespace lets a model pad an answer with blanks
/// until it runs out of tokens.
fn compact(mut schema: Value) -> Value {
    if schema.is_object() && schema.get("x-guidance").is_none() {
        let compact = llguidance::JsonCompileOptions {
            item_separator: ", ".into(),
            key_separator: ": ".into(),
            whitespace_flexible: false,
            ..Default::default()
        };
        compact.apply_to(&mut schema);
    }
    schema
}

/// The tokens as the matcher sees them: a trie of their bytes.
struct Env {
    trie: TokTrie,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    /// Only for text the grammar forces (never with these grammars): the trie's greedy split.
    fn tokenize_bytes(&self, s: &[u8]) -> Vec<u32> {
        self.trie.greedy_tokenize(s)
    }
}

/// Compiles grammars for one model's vocabulary.
pub struct Grammars {
    factory: ParserFactory,
}

impl Grammars {
    /// `vocab_rows`: the model's logits (rows past the tokenizer are never allowed); `eos`: the
    /// token that ends an answer.
    pub fn new(tokenizer: &biomedgpt_llama::LlamaTokenizer, vocab_rows: usize, eos: u32) -> Result<Self, String> {
        let spec: Value = serde_json::from_str(&tokenizer.inner().to_string(false).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        let mut words = llguidance::token_bytes_from_tokenizer_json(&spec).map_err(|e| format!("the tokenizer: {e}"))?;
        words.resize(vocab_rows.max(words.len()), Vec::new());
        let info = TokRxInfo::new(words.len() as u32, eos);
        let env: TokEnv = Arc::new(Env { trie: TokTrie::from(&info, &words) });
        let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        factory.set_stderr_log_level(0);
        Ok(Grammars { factory })
    }

    /// A matcher for one answer; a schema llguidance cannot compile is an error naming why.
    pub fn constraint(&self, grammar: Grammar) -> Result<Constraint, String> {
        let top = match grammar {
            Grammar::Format(ResponseFormat::JsonObject) => TopLevelGrammar::from_json_schema(compact(serde_json::json!({"type": "object"}))),
            Grammar::Format(ResponseFormat::JsonSchema(schema)) => TopLevelGrammar::from_json_schema(compact(schema.clone())),
            Grammar::Tools(tools) => TopLevelGrammar::from_lark(tools.lark(&compact(tools.call_schema()))),
        };
        let parser = self.factory.create_parser(top).map_err(|e| e.to_string())?;
        let matcher = Matcher::new(Ok(parser));
        match matcher.get_error() {
            Some(e) => Err(e),
            None => Ok(Constraint(matcher)),
        }
    }
}

/// One answer's grammar state.
pub struct Constraint(Matcher);

impl Constraint {
    /// -inf for every token the grammar does not allow next.
    pub fn mask(&mut self, scores: &mut [f32]) -> Result<(), String> {
        let allowed = self.0.compute_mask_or_eos().map_err(|e| e.to_string())?;
        for (id, score) in scores.iter_mut().enumerate() {
            if !allowed.is_allowed(id as u32) {
                *score = f32::NEG_INFINITY;
            }
        }
        Ok(())
    }

    pub fn consume(&mut self, token: u32) -> Result<(), String> {
        self.0.consume_token(token).map_err(|e| e.to_string())
    }

    /// The grammar is complete and allows nothing more: the answer ends here.
    pub fn is_stopped(&self) -> bool {
        self.0.is_stopped()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::{Function, ToolChoice, Tools};
    use biomedgpt_llama::LlamaTokenizer;
    use serde_json::json;

    fn tokenizer() -> LlamaTokenizer {
        LlamaTokenizer::from_file(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/demo/llm/tokenizer.json"), Some(1)).unwrap()
    }

    fn tools(choice: ToolChoice) -> Tools {
        let weight = json!({"type": "object", "properties": {"smiles": {"type": "string"}}, "required": ["smiles"]});
        Tools { functions: vec![Function { name: "molecular_weight".into(), description: None, parameters: weight }, Function { name: "search".into(), description: None, parameters: json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}) }], choice }
    }

    /// Whether the grammar takes `text` (as the tokenizer splits it) as a whole answer.
    fn takes(grammars: &Grammars, tokenizer: &LlamaTokenizer, tools: &Tools, text: &str) -> bool {
        let mut c = grammars.constraint(Grammar::Tools(tools)).unwrap();
        let ids = tokenizer.encode(text, false).unwrap();
        c.0.validate_tokens(&ids).unwrap() == ids.len() && c.0.consume_tokens(&ids).is_ok() && c.0.is_accepting().unwrap()
    }

    /// The tool grammars take well-formed calls of the callable functions (and, for `auto`, text)
    /// and nothing else: wrong names, arguments off their schema, text where a call is required.
    #[test]
    fn tool_grammars_take_calls_of_the_functions_and_nothing_else() {
        let tok = tokenizer();
        let grammars = Grammars::new(&tok, 32001, 2).unwrap();
        let call = r#"<tool_call>{"name": "molecular_weight", "arguments": {"smiles": "CCO"}}</tool_call>"#;
        let two = format!("{call}\n<tool_call>{{\"name\": \"search\", \"arguments\": {{\"query\": \"ethanol\"}}}}</tool_call>");
        let (auto, required, named) = (tools(ToolChoice::Auto), tools(ToolChoice::Required), tools(ToolChoice::Named("search".into())));
        for t in [&auto, &required] {
            assert!(takes(&grammars, &tok, t, call), "{:?}: one call", t.choice);
            assert!(takes(&grammars, &tok, t, &two), "{:?}: two calls", t.choice);
            for wrong in [r#"<tool_call>{"name": "other", "arguments": {}}</tool_call>"#, r#"<tool_call>{"name": "molecular_weight", "arguments": {"smiles": 3}}</tool_call>"#, r#"<tool_call>{"name": "molecular_weight", "arguments": {}}</tool_call>"#, "<b>bold</b>"] {
                assert!(!takes(&grammars, &tok, t, wrong), "{:?} takes {wrong}", t.choice);
            }
        }
        assert!(takes(&grammars, &tok, &auto, "Ethanol is an alcohol."), "auto takes text");
        assert!(!takes(&grammars, &tok, &required, "Ethanol is an alcohol."), "required takes no text");
        assert!(!takes(&grammars, &tok, &named, call), "named: another function");
        assert!(!takes(&grammars, &tok, &named, &two), "named: one call");
        assert!(takes(&grammars, &tok, &named, r#"<tool_call>{"name": "search", "arguments": {"query": "ethanol"}}</tool_call>"#));
    }
}
