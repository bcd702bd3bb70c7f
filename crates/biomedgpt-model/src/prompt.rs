//! The reference chat's prompt (OpenBioMed `Conversation`): the string, and its split at the
//! modality placeholders.

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

/// Messages of a chat, in the reference's string form.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPrompt {
    pub system: String,
    pub messages: Vec<(Role, String)>,
}

impl ChatPrompt {
    pub fn new(system: impl Into<String>) -> Self {
        ChatPrompt { system: system.into(), messages: Vec::new() }
    }

    /// A human message `<molecule><moleculeHere></molecule>` (or the protein form).
    pub fn push_modality(&mut self, modality: Modality) {
        let tag = modality.tag();
        let placeholder = match modality {
            Modality::Molecule => MOLECULE_PLACEHOLDER,
            Modality::Protein => PROTEIN_PLACEHOLDER,
        };
        self.messages.push((Role::Human, format!("<{tag}>{placeholder}</{tag}>")));
    }

    /// A human question; right after a molecule or protein it joins that message with a space.
    pub fn push_question(&mut self, text: &str) {
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

    /// `system###␠` then `Role: message ###␠` per message, ending with `Assistant: `.
    pub fn render(&self) -> String {
        let mut out = format!("{}{SEP} ", self.system);
        for (role, message) in &self.messages {
            out.push_str(&format!("{}: {message} {SEP} ", role.name()));
        }
        out.push_str("Assistant: ");
        out
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
        chat.push_modality(Modality::Molecule);
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
    fn split_finds_both_placeholders_in_order() {
        let (segments, slots) = split_at_placeholders("a<proteinHere>b<moleculeHere>c");
        assert_eq!(segments, ["a", "b", "c"]);
        assert_eq!(slots, [Modality::Protein, Modality::Molecule]);
        assert_eq!(split_at_placeholders("plain").0, ["plain"]);
    }
}
