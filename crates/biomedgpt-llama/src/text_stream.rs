//! The answer's text as tokens arrive: what can be sent now, and where a stop string ends it.
//!
//! Text is decoded from all the answer's ids each time (SentencePiece decoding is not
//! token-local: byte-fallback tokens form one character together). What is sent is held back
//! while it may still change or be cut: a trailing U+FFFD while the answer's bytes end inside a
//! UTF-8 character that later bytes may complete (bytes that can begin no character are final
//! and sent at once, as llama-server's `validate_utf8` decides), a tail that
//! could be the beginning of a stop string, and, in a chat, trailing whitespace (the answer is
//! trimmed as `ask` trims it). So the streamed pieces always add up to the non-streamed text.

use crate::LlamaTokenizer;

pub struct TextTracker {
    ids: Vec<u32>,
    /// Bytes of the content already sent.
    sent: usize,
    /// Chat answers are trimmed (as `ask`'s); completions are sent as generated.
    chat: bool,
    stops: Vec<String>,
}

impl TextTracker {
    pub fn new(chat: bool, stops: Vec<String>) -> Self {
        TextTracker { ids: Vec::new(), sent: 0, chat, stops }
    }

    pub fn extend(&mut self, ids: &[u32]) {
        self.ids.extend_from_slice(ids);
    }

    /// The text to send now, and whether a stop string was reached (the text then ends before
    /// it). `finished`: no more tokens come, send everything.
    pub fn update(&mut self, tokenizer: &LlamaTokenizer, finished: bool) -> (String, bool) {
        let decoded = tokenizer.decode(&self.ids).unwrap_or_default();
        let content = if self.chat { decoded.trim_start() } else { decoded.as_str() };
        let stop_at = self.stops.iter().filter_map(|s| content.find(s.as_str())).min();
        let (content, last) = match stop_at {
            Some(at) => (&content[..at], true),
            None => (content, finished),
        };
        let ready = if last {
            if self.chat { content.trim_end().len() } else { content.len() }
        } else {
            // The tokens' bytes are looked at only when there is a U+FFFD to hold back.
            let incomplete = content.ends_with('\u{FFFD}') && ends_inside_a_character(tokenizer, &self.ids);
            self.ready_len(content, incomplete)
        };
        let mut delta = String::new();
        if ready > self.sent && content.is_char_boundary(self.sent) && content.is_char_boundary(ready) {
            delta = content[self.sent..ready].to_string();
            self.sent = ready;
        }
        (delta, stop_at.is_some())
    }

    /// How much of `content` cannot change any more.
    fn ready_len(&self, content: &str, incomplete: bool) -> usize {
        let mut end = if incomplete { content.trim_end_matches('\u{FFFD}').len() } else { content.len() };
        let held = self
            .stops
            .iter()
            .map(|stop| {
                (1..stop.len())
                    .rev()
                    .find(|&k| stop.is_char_boundary(k) && content[..end].ends_with(&stop[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        end -= held;
        if self.chat {
            end = content[..end].trim_end().len();
        }
        end
    }
}

/// Whether the bytes of `ids` (llama.cpp's pieces, [`LlamaTokenizer::token_bytes`]) end inside a
/// UTF-8 character: a lead byte in the last three with fewer continuation bytes after it than
/// it announces, all of them valid so far. Later tokens may then complete the character.
fn ends_inside_a_character(tokenizer: &LlamaTokenizer, ids: &[u32]) -> bool {
    let mut tail: Vec<u8> = Vec::new();
    for &id in ids.iter().rev() {
        let mut bytes = tokenizer.token_bytes(id);
        bytes.extend_from_slice(&tail);
        tail = bytes;
        if tail.len() >= 4 {
            break;
        }
    }
    let n = tail.len();
    match (1..=n.min(3)).find(|&back| tail[n - back] & 0xC0 != 0x80) {
        // An incomplete character: an error at its very start that is the input's end, not an
        // invalid byte.
        Some(back) => std::str::from_utf8(&tail[n - back..]).is_err_and(|e| e.valid_up_to() == 0 && e.error_len().is_none()),
        None => false,
    }
}
