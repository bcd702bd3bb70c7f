//! What the streamed text holds back, with the demo model's LLaMA tokenizer: a stop string's
//! beginning, an incomplete UTF-8 character from byte-fallback tokens, a chat's trailing
//! whitespace; and the pieces always add up to the text sent at the end.

use biomedgpt_llama::LlamaTokenizer;
use biomedgpt_serve::text::TextTracker;

fn tokenizer() -> LlamaTokenizer {
    let path = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/demo/llm/tokenizer.json");
    LlamaTokenizer::from_file(path, Some(1)).unwrap()
}

/// Feeds `text`'s tokens one by one; returns the pieces sent and whether a stop string hit.
fn stream(tok: &LlamaTokenizer, text: &str, chat: bool, stops: &[&str]) -> (Vec<String>, bool) {
    let ids = tok.encode(text, false).unwrap();
    let mut t = TextTracker::new(chat, stops.iter().map(|s| s.to_string()).collect());
    let mut pieces = Vec::new();
    for (i, &id) in ids.iter().enumerate() {
        t.extend(&[id]);
        let (piece, hit) = t.update(tok, i + 1 == ids.len());
        pieces.push(piece);
        if hit {
            return (pieces, true);
        }
    }
    (pieces, false)
}

#[test]
fn pieces_add_up_and_hold_back_what_may_change() {
    let tok = tokenizer();
    // A stop string: the text ends before it, and no piece ever showed part of it.
    let (pieces, hit) = stream(&tok, " It is an alcohol. ### Human: more", true, &["###"]);
    assert!(hit);
    assert_eq!(pieces.concat(), "It is an alcohol.");
    assert!(pieces.iter().all(|p| !p.contains('#')), "{pieces:?}");
    // Several characters of the stop string arrive in separate tokens: still never shown.
    let (pieces, hit) = stream(&tok, "abc END-OF-TEXT def", false, &["END-OF"]);
    assert!(hit);
    assert_eq!(pieces.concat(), "abc ");
    // No stop string: everything arrives, and a chat's answer is trimmed as `ask` trims it.
    let (pieces, hit) = stream(&tok, "  Ethanol is a primary alcohol.  ", true, &["zzz"]);
    assert!(!hit);
    assert_eq!(pieces.concat(), "Ethanol is a primary alcohol.");
    // Completions keep the text as generated.
    let (pieces, _) = stream(&tok, "x = 1\n", false, &[]);
    assert_eq!(pieces.concat(), tok.decode(&tok.encode("x = 1\n", false).unwrap()).unwrap());
    // Characters outside the vocabulary come as byte-fallback tokens: no piece holds half a
    // character (U+FFFD), and the whole text arrives.
    let text = "β-lactam ring, 5′-UTR 🧬";
    let expected = tok.decode(&tok.encode(text, false).unwrap()).unwrap();
    let (pieces, _) = stream(&tok, text, false, &[]);
    assert!(pieces.iter().all(|p| !p.contains('\u{FFFD}')), "{pieces:?}");
    assert_eq!(pieces.concat(), expected);
}

/// A byte that can begin no character is sent at once (as U+FFFD, as llama-server sends it);
/// a character's first bytes are held until it is whole.
#[test]
fn bytes_that_begin_no_character_are_sent_at_once() {
    let tok = tokenizer();
    let byte = |b: u8| tok.token_to_id(&format!("<0x{b:02X}>")).unwrap();
    let word = tok.encode("args", false).unwrap();
    let feed = |ids: &[u32]| {
        let mut t = TextTracker::new(false, Vec::new());
        ids.iter()
            .map(|&id| {
                t.extend(&[id]);
                t.update(&tok, false).0
            })
            .collect::<Vec<_>>()
    };
    // A lone continuation byte, then text: its U+FFFD arrives with it.
    let pieces = feed(&[&[byte(0x80)][..], &word].concat());
    assert_eq!(pieces[0], "\u{FFFD}");
    assert_eq!(pieces.concat(), tok.decode(&[&[byte(0x80)][..], &word].concat()).unwrap());
    // "€" (E2 82 AC) byte by byte: nothing until the last byte.
    assert_eq!(feed(&[byte(0xE2), byte(0x82), byte(0xAC)]), ["", "", "€"]);
    // A lead byte followed by one that cannot continue it: both final once the second arrives.
    let pieces = feed(&[byte(0xE2), byte(0x41)]);
    assert_eq!(pieces[0], "");
    assert!(!pieces[1].is_empty() && pieces[1].starts_with('\u{FFFD}'), "{pieces:?}");
}
