//! A reasoning model's streamed answer split as DeepSeek's API and vLLM's reasoning parsers split
//! it: what comes before `</think>` is `reasoning_content`, what follows is `content`. The prompt
//! opened `<think>`, so the answer starts inside the thinking.
//!
//! Pieces arrive as the text tracker releases them, so `</think>` may be cut across two pieces:
//! a tail that could begin it is held back, and so is trailing whitespace of the thinking and
//! leading whitespace of the content, so that the streamed parts add up to what
//! [`biomedgpt_model::split_reasoning`] gives for the whole text (both parts trimmed).

const END: &str = "</think>";

#[derive(Default)]
pub struct ReasoningSplitter {
    /// `</think>` was seen: everything now is content.
    ended: bool,
    /// Thinking not sent yet (a possible start of `</think>`, trailing whitespace).
    held: String,
    /// Some non-whitespace content was sent.
    content_started: bool,
}

impl ReasoningSplitter {
    /// The next piece of the answer; returns the reasoning and the content to send now.
    pub fn push(&mut self, piece: &str) -> (String, String) {
        if self.ended {
            return (String::new(), self.content(piece));
        }
        self.held.push_str(piece);
        if let Some(at) = self.held.find(END) {
            let rest = self.held[at + END.len()..].to_string();
            let reasoning = self.held[..at].trim_end().to_string();
            self.held.clear();
            self.ended = true;
            return (reasoning, self.content(&rest));
        }
        // Keep back what may still turn out to be `</think>` or the thinking's trailing space.
        let partial = (1..END.len()).rev().find(|&k| self.held.ends_with(&END[..k])).unwrap_or(0);
        let sendable = self.held[..self.held.len() - partial].trim_end().len();
        let reasoning = self.held[..sendable].to_string();
        self.held.drain(..sendable);
        (reasoning, String::new())
    }

    /// No more text comes: a thinking that never ended is sent whole.
    pub fn finish(&mut self) -> (String, String) {
        if self.ended {
            return (String::new(), String::new());
        }
        (std::mem::take(&mut self.held).trim_end().to_string(), String::new())
    }

    fn content(&mut self, piece: &str) -> String {
        if self.content_started {
            return piece.to_string();
        }
        let piece = piece.trim_start();
        self.content_started = !piece.is_empty();
        piece.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use biomedgpt_model::split_reasoning;

    /// Every way of cutting a text into pieces gives back the whole-text split.
    #[test]
    fn streamed_parts_add_up_to_the_whole_split() {
        for text in ["Okay, so.\n</think>\n\nIt is ethanol.", "still thinking \n", "a</think>b</think>c", "</think>", "x </thi", "<think>y</think>  z "] {
            let (want_r, want_c) = split_reasoning(text.trim());
            let chars: Vec<char> = text.trim().chars().collect();
            for step in 1..=4 {
                let mut s = ReasoningSplitter::default();
                let (mut r, mut c) = (String::new(), String::new());
                for piece in chars.chunks(step) {
                    let (a, b) = s.push(&piece.iter().collect::<String>());
                    r.push_str(&a);
                    c.push_str(&b);
                }
                let (a, b) = s.finish();
                r.push_str(&a);
                c.push_str(&b);
                assert_eq!(r, want_r, "{text:?} in pieces of {step}: reasoning");
                assert_eq!(c, want_c.clone().unwrap_or_default(), "{text:?} in pieces of {step}: content");
            }
        }
    }
}
