//! The reference chats' prompts: BioMedGPT-10B's (OpenBioMed `Conversation`) and BioMedGPT-R1's
//! (`BioMedGPTR14Chat.compose_context`); the string, and its split at the modality placeholders.

/// BioMedGPT-10B's default system prompt (trailing space included).
pub const DEFAULT_SYSTEM_PROMPT: &str = "You are working as an excellent assistant in chemistry and molecule discovery. \
Below a human expert gives the representation of a molecule or a protein. Answer questions about it. ";

pub const MOLECULE_PLACEHOLDER: &str = "<moleculeHere>";
pub const PROTEIN_PLACEHOLDER: &str = "<proteinHere>";
const SEP: &str = "###";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Human,
    Assistant,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Human => "Human",
            Role::Assistant => "Assistant",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Modality {
    Molecule,
    Protein,
}

impl Modality {
    fn tag(self) -> &'static str {
        match self {
            Modality::Molecule => "molecule",
            Modality::Protein => "protein",
        }
    }
}

/// Which reference chat a prompt follows.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptStyle {
    /// BioMedGPT-10B: `system###␠Human: ... ###␠Assistant:␠`, one message per molecule or protein.
    BioMedGpt10B,
    /// BioMedGPT-R1: `<｜User｜>` + sep + text + sep per turn, then `<｜Assistant｜><think>\n`; a
    /// turn's molecules and proteins and its question are one message.
    R1 { sep: String },
}

pub const R1_USER: &str = "<\u{ff5c}User\u{ff5c}>";
pub const R1_ASSISTANT: &str = "<\u{ff5c}Assistant\u{ff5c}>";

/// Messages of a chat, in the reference's string form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPrompt {
    /// BioMedGPT-10B's system prompt (R1 has none).
    pub system: String,
    pub messages: Vec<(Role, String)>,
    pub style: PromptStyle,
}

impl ChatPrompt {
    /// A BioMedGPT-10B prompt.
    pub fn new(system: impl Into<String>) -> Self {
        ChatPrompt { system: system.into(), messages: Vec::new(), style: PromptStyle::BioMedGpt10B }
    }

    /// A BioMedGPT-R1 prompt with `sep` (config.yaml's `sep_tokens`) around each turn's text.
    pub fn r1(sep: impl Into<String>) -> Self {
        ChatPrompt { system: String::new(), messages: Vec::new(), style: PromptStyle::R1 { sep: sep.into() } }
    }

    /// A molecule (given as `smiles`) or a protein: BioMedGPT-10B's human message
    /// `<molecule><moleculeHere></molecule>`; R1's markup
    /// `<molecule><representation><moleculeHere></representation><SMILES>CCO</SMILES></molecule>␠`
    /// or `<protein><proteinHere></protein>␠`, added to the user's turn.
    pub fn push_modality(&mut self, modality: Modality, smiles: &str) {
        let tag = modality.tag();
        let placeholder = match modality {
            Modality::Molecule => MOLECULE_PLACEHOLDER,
            Modality::Protein => PROTEIN_PLACEHOLDER,
        };
        match self.style {
            PromptStyle::BioMedGpt10B => self.messages.push((Role::Human, format!("<{tag}>{placeholder}</{tag}>"))),
            PromptStyle::R1 { .. } => {
                let markup = match modality {
                    Modality::Molecule => format!("<molecule><representation>{placeholder}</representation><SMILES>{smiles}</SMILES></molecule> "),
                    Modality::Protein => format!("<protein>{placeholder}</protein> "),
                };
                self.push_user_text(&markup);
            }
        }
    }

    /// R1: text joins the user's turn if it is open, else opens one.
    fn push_user_text(&mut self, text: &str) {
        match self.messages.last_mut() {
            Some((Role::Human, last)) => last.push_str(text),
            _ => self.messages.push((Role::Human, text.to_string())),
        }
    }

    /// A human question. BioMedGPT-10B: right after a molecule or protein it joins that message
    /// with a space. R1: it ends the user's turn (after its molecules and proteins, no space added).
    pub fn push_question(&mut self, text: &str) {
        if matches!(self.style, PromptStyle::R1 { .. }) {
            self.push_user_text(text);
            return;
        }
        if let Some((Role::Human, last)) = self.messages.last_mut()
            && (last.ends_with("</molecule>") || last.ends_with("</protein>"))
        {
            last.push(' ');
            last.push_str(text);
            return;
        }
        self.messages.push((Role::Human, text.to_string()));
    }

    pub fn push_answer(&mut self, text: &str) {
        self.messages.push((Role::Assistant, text.to_string()));
    }

    /// BioMedGPT-10B: `system###␠` then `Role: message ###␠` per message, ending with
    /// `Assistant: `. R1: `role + sep + message + sep` per message (an empty message is left out,
    /// as the reference does), ending with `<｜Assistant｜><think>\n`.
    pub fn render(&self) -> String {
        match &self.style {
            PromptStyle::BioMedGpt10B => {
                let mut out = format!("{}{SEP} ", self.system);
                for (role, message) in &self.messages {
                    out.push_str(&format!("{}: {message} {SEP} ", role.name()));
                }
                out.push_str("Assistant: ");
                out
            }
            PromptStyle::R1 { sep } => {
                let mut out = String::new();
                for (role, message) in self.messages.iter().filter(|(_, m)| !m.is_empty()) {
                    let tag = match role {
                        Role::Human => R1_USER,
                        Role::Assistant => R1_ASSISTANT,
                    };
                    out.push_str(&format!("{tag}{sep}{message}{sep}"));
                }
                out.push_str(R1_ASSISTANT);
                out.push_str("<think>\n");
                out
            }
        }
    }
}

/// Splits a rendered prompt at the placeholders: `n + 1` text segments around `n` modalities.
pub fn split_at_placeholders(prompt: &str) -> (Vec<&str>, Vec<Modality>) {
    let mut segments = Vec::new();
    let mut slots = Vec::new();
    let mut rest = prompt;
    loop {
        let next = [(MOLECULE_PLACEHOLDER, Modality::Molecule), (PROTEIN_PLACEHOLDER, Modality::Protein)]
            .into_iter()
            .filter_map(|(p, m)| rest.find(p).map(|at| (at, p.len(), m)))
            .min_by_key(|&(at, _, _)| at);
        match next {
            Some((at, len, modality)) => {
                segments.push(&rest[..at]);
                slots.push(modality);
                rest = &rest[at + len..];
            }
            None => {
                segments.push(rest);
                return (segments, slots);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn question_joins_the_modality_message() {
        let mut chat = ChatPrompt::new("S ");
        chat.push_modality(Modality::Molecule, "CCO");
        chat.push_question("Describe it.");
        assert_eq!(chat.render(), "S ### Human: <molecule><moleculeHere></molecule> Describe it. ### Assistant: ");
        chat.push_answer("A drug.");
        chat.push_question("More?");
        assert_eq!(
            chat.render(),
            "S ### Human: <molecule><moleculeHere></molecule> Describe it. ### Assistant: A drug. ### Human: More? ### Assistant: "
        );
    }

    #[test]
    fn r1_turns_hold_markup_then_the_question() {
        let mut chat = ChatPrompt::r1("\n");
        chat.push_modality(Modality::Molecule, "CCO");
        chat.push_modality(Modality::Protein, "");
        chat.push_question("Does it bind?");
        assert_eq!(
            chat.render(),
            "<\u{ff5c}User\u{ff5c}>\n<molecule><representation><moleculeHere></representation><SMILES>CCO</SMILES></molecule> \
             <protein><proteinHere></protein> Does it bind?\n<\u{ff5c}Assistant\u{ff5c}><think>\n"
        );
        chat.push_answer("Hmm.</think>No.");
        chat.push_question("Why?");
        assert!(chat.render().ends_with("Does it bind?\n<\u{ff5c}Assistant\u{ff5c}>\nHmm.</think>No.\n<\u{ff5c}User\u{ff5c}>\nWhy?\n<\u{ff5c}Assistant\u{ff5c}><think>\n"));
    }

    #[test]
    fn split_finds_both_placeholders_in_order() {
        let (segments, slots) = split_at_placeholders("a<proteinHere>b<moleculeHere>c");
        assert_eq!(segments, ["a", "b", "c"]);
        assert_eq!(slots, [Modality::Protein, Modality::Molecule]);
        assert_eq!(split_at_placeholders("plain").0, ["plain"]);
    }
}
