//! NLTK's `PorterStemmer()` in its default `NLTK_EXTENSIONS` mode, the stemmer of METEOR's stem
//! stage. Neither the original 1980 algorithm nor Snowball's Porter2 (what `rust-stemmers` does)
//! gives the same stems, so METEOR would differ; this follows nltk/stem/porter.py rule by rule.
//! Words are handled as Unicode scalar sequences, as Python indexes `str`.

const VOWELS: [char; 5] = ['a', 'e', 'i', 'o', 'u'];

fn is_vowel(c: char) -> bool {
    VOWELS.contains(&c)
}

/// The irregular forms NLTK maps directly.
fn irregular(word: &str) -> Option<&'static str> {
    Some(match word {
        "sky" | "skies" => "sky",
        "dying" => "die",
        "lying" => "lie",
        "tying" => "tie",
        "news" => "news",
        "innings" | "inning" => "inning",
        "outings" | "outing" => "outing",
        "cannings" | "canning" => "canning",
        "howe" => "howe",
        "proceed" => "proceed",
        "exceed" => "exceed",
        "succeed" => "succeed",
        _ => return None,
    })
}

type Word = Vec<char>;

fn is_consonant(word: &[char], mut i: usize) -> bool {
    if is_vowel(word[i]) {
        return false;
    }
    if word[i] == 'y' {
        let mut negate = false;
        while i > 0 && word[i] == 'y' {
            negate = !negate;
            i -= 1;
        }
        return !is_vowel(word[i]) != negate;
    }
    true
}

fn consonant_flags(word: &[char]) -> Vec<bool> {
    let mut flags: Vec<bool> = Vec::with_capacity(word.len());
    for (i, &c) in word.iter().enumerate() {
        let flag = if is_vowel(c) {
            false
        } else if c == 'y' {
            i == 0 || !flags[i - 1]
        } else {
            true
        };
        flags.push(flag);
    }
    flags
}

/// Number of vowel-consonant sequences ("vc" in the c/v pattern).
fn measure(stem: &[char]) -> usize {
    let flags = consonant_flags(stem);
    flags.windows(2).filter(|w| !w[0] && w[1]).count()
}

fn has_positive_measure(stem: &[char]) -> bool {
    measure(stem) > 0
}

fn contains_vowel(stem: &[char]) -> bool {
    !consonant_flags(stem).iter().all(|&c| c)
}

fn ends_double_consonant(word: &[char]) -> bool {
    let n = word.len();
    n >= 2 && word[n - 1] == word[n - 2] && is_consonant(word, n - 1)
}

fn ends_cvc(word: &[char]) -> bool {
    let n = word.len();
    (n >= 3
        && is_consonant(word, n - 3)
        && !is_consonant(word, n - 2)
        && is_consonant(word, n - 1)
        && !matches!(word[n - 1], 'w' | 'x' | 'y'))
        || (n == 2 && !is_consonant(word, 0) && is_consonant(word, 1))
}

fn ends_with(word: &[char], suffix: &str) -> bool {
    let suffix: Vec<char> = suffix.chars().collect();
    word.len() >= suffix.len() && word[word.len() - suffix.len()..] == suffix[..]
}

fn strip(word: &[char], suffix: &str) -> Word {
    word[..word.len() - suffix.chars().count()].to_vec()
}

fn join(stem: &[char], tail: &str) -> Word {
    stem.iter().copied().chain(tail.chars()).collect()
}

enum Condition<'a> {
    Always,
    When(&'a dyn Fn(&[char]) -> bool),
}

/// A rule: suffix, replacement, condition on the stem. `"*d"` is a double consonant ending.
struct Rule<'a>(&'a str, String, Condition<'a>);

fn rule<'a>(suffix: &'a str, replacement: &str, condition: &'a dyn Fn(&[char]) -> bool) -> Rule<'a> {
    Rule(suffix, replacement.to_string(), Condition::When(condition))
}

/// The first rule whose suffix matches decides: replaced if its condition holds, else unchanged.
fn apply_rules(word: &[char], rules: &[Rule]) -> Word {
    for Rule(suffix, replacement, condition) in rules {
        let holds = |stem: &[char]| match condition {
            Condition::Always => true,
            Condition::When(f) => f(stem),
        };
        if *suffix == "*d" && ends_double_consonant(word) {
            let stem = &word[..word.len() - 2];
            return if holds(stem) { join(stem, replacement) } else { word.to_vec() };
        }
        if ends_with(word, suffix) {
            let stem = strip(word, suffix);
            return if holds(&stem) { join(&stem, replacement) } else { word.to_vec() };
        }
    }
    word.to_vec()
}

fn step1a(word: &[char]) -> Word {
    if ends_with(word, "ies") && word.len() == 4 {
        return join(&strip(word, "ies"), "ie");
    }
    let rules = [
        Rule("sses", "ss".into(), Condition::Always),
        Rule("ies", "i".into(), Condition::Always),
        Rule("ss", "ss".into(), Condition::Always),
        Rule("s", "".into(), Condition::Always),
    ];
    apply_rules(word, &rules)
}

fn step1b(word: &[char]) -> Word {
    if ends_with(word, "ied") {
        let tail = if word.len() == 4 { "ie" } else { "i" };
        return join(&strip(word, "ied"), tail);
    }
    if ends_with(word, "eed") {
        let stem = strip(word, "eed");
        return if measure(&stem) > 0 { join(&stem, "ee") } else { word.to_vec() };
    }
    let Some(stem) = ["ed", "ing"]
        .iter()
        .filter(|suffix| ends_with(word, suffix))
        .map(|suffix| strip(word, suffix))
        .find(|stem| contains_vowel(stem))
    else {
        return word.to_vec();
    };
    let last = *stem.last().expect("a stem with a vowel is not empty");
    let not_lsz = move |_: &[char]| !matches!(last, 'l' | 's' | 'z');
    let cvc = |s: &[char]| measure(s) == 1 && ends_cvc(s);
    let rules = [
        Rule("at", "ate".into(), Condition::Always),
        Rule("bl", "ble".into(), Condition::Always),
        Rule("iz", "ize".into(), Condition::Always),
        rule("*d", &last.to_string(), &not_lsz),
        rule("", "e", &cvc),
    ];
    apply_rules(&stem, &rules)
}

fn step1c(word: &[char]) -> Word {
    let condition = |stem: &[char]| stem.len() > 1 && is_consonant(stem, stem.len() - 1);
    apply_rules(word, &[rule("y", "i", &condition)])
}

fn step2(word: &[char]) -> Word {
    if ends_with(word, "alli") && has_positive_measure(&strip(word, "alli")) {
        return step2(&join(&strip(word, "alli"), "al"));
    }
    let m = &has_positive_measure;
    let word_owned = word.to_vec();
    let logi = move |_: &[char]| has_positive_measure(&word_owned[..word_owned.len() - 3]);
    let rules = [
        rule("ational", "ate", m),
        rule("tional", "tion", m),
        rule("enci", "ence", m),
        rule("anci", "ance", m),
        rule("izer", "ize", m),
        rule("bli", "ble", m),
        rule("alli", "al", m),
        rule("entli", "ent", m),
        rule("eli", "e", m),
        rule("ousli", "ous", m),
        rule("ization", "ize", m),
        rule("ation", "ate", m),
        rule("ator", "ate", m),
        rule("alism", "al", m),
        rule("iveness", "ive", m),
        rule("fulness", "ful", m),
        rule("ousness", "ous", m),
        rule("aliti", "al", m),
        rule("iviti", "ive", m),
        rule("biliti", "ble", m),
        rule("fulli", "ful", m),
        rule("logi", "log", &logi),
    ];
    apply_rules(word, &rules)
}

fn step3(word: &[char]) -> Word {
    let m = &has_positive_measure;
    let rules = [
        rule("icate", "ic", m),
        rule("ative", "", m),
        rule("alize", "al", m),
        rule("iciti", "ic", m),
        rule("ical", "ic", m),
        rule("ful", "", m),
        rule("ness", "", m),
    ];
    apply_rules(word, &rules)
}

fn step4(word: &[char]) -> Word {
    let gt1 = |stem: &[char]| measure(stem) > 1;
    let ion = |stem: &[char]| measure(stem) > 1 && matches!(stem.last(), Some('s' | 't'));
    let rules: Vec<Rule> = [
        "al", "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent",
    ]
    .into_iter()
    .map(|s| rule(s, "", &gt1))
    .chain(std::iter::once(rule("ion", "", &ion)))
    .chain(["ou", "ism", "ate", "iti", "ous", "ive", "ize"].into_iter().map(|s| rule(s, "", &gt1)))
    .collect();
    apply_rules(word, &rules)
}

fn step5a(word: &[char]) -> Word {
    if ends_with(word, "e") {
        let stem = strip(word, "e");
        let m = measure(&stem);
        if m > 1 || (m == 1 && !ends_cvc(&stem)) {
            return stem;
        }
    }
    word.to_vec()
}

fn step5b(word: &[char]) -> Word {
    let word_owned = word.to_vec();
    let condition = move |_: &[char]| measure(&word_owned[..word_owned.len() - 1]) > 1;
    apply_rules(word, &[rule("ll", "l", &condition)])
}

/// `PorterStemmer().stem(word)`: lowercases, then the NLTK-extended Porter steps.
pub fn stem(word: &str) -> String {
    let lower = word.to_lowercase();
    if let Some(base) = irregular(&lower) {
        return base.to_string();
    }
    if word.chars().count() <= 2 {
        return lower;
    }
    let mut w: Word = lower.chars().collect();
    for step in [step1a, step1b, step1c, step2, step3, step4, step5a, step5b] {
        w = step(&w);
    }
    w.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::stem;

    /// Stems printed by nltk 3.10.4 `PorterStemmer().stem`.
    #[test]
    fn matches_nltk_on_classic_words() {
        let cases = [
            ("caresses", "caress"),
            ("ponies", "poni"),
            ("ties", "tie"),
            ("cats", "cat"),
            ("feed", "feed"),
            ("agreed", "agre"),
            ("plastered", "plaster"),
            ("motoring", "motor"),
            ("sing", "sing"),
            ("conflated", "conflat"),
            ("troubled", "troubl"),
            ("sized", "size"),
            ("hopping", "hop"),
            ("falling", "fall"),
            ("filing", "file"),
            ("happy", "happi"),
            ("relational", "relat"),
            ("generalization", "gener"),
            ("electrical", "electr"),
            ("adjustment", "adjust"),
            ("controlling", "control"),
            ("dying", "die"),
            ("skies", "sky"),
            ("analogies", "analog"),
            ("hydroxylation", "hydroxyl"),
            ("is", "is"),
        ];
        for (word, expected) in cases {
            assert_eq!(stem(word), expected, "{word}");
        }
    }
}
