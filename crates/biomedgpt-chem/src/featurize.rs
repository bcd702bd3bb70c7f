//! SMILES -> [`MolGraph`] with RDKit, exactly as GraphMVP's `mol_to_graph_data_obj_simple`.

use petgraph::graph::NodeIndex;

use crate::rdkit::ffi;
use crate::{Atom, Bond, MolGraph, Molecule};

/// Errors name the SMILES as [`shown`] writes it: at most [`SHOWN_CHARS`] characters, control
/// characters escaped, so a 3 MB input does not come back as a 3 MB message (issue 39, D24).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FeaturizeError {
    #[error("invalid SMILES `{smiles}`: {reason}")]
    Invalid { smiles: String, reason: String },
    #[error("SMILES `{smiles}`: atom {atom} has chirality {tag}, which the model cannot represent (it knows unspecified, CW and CCW)")]
    Chirality { smiles: String, atom: usize, tag: &'static str },
    #[error("SMILES `{smiles}`: bond {bond} ({begin}-{end}) is {kind}, which the model cannot represent (it knows single, double, triple, aromatic)")]
    BondType { smiles: String, bond: usize, begin: u32, end: u32, kind: &'static str },
    #[error("SMILES `{smiles}`: bond {bond} ({begin}-{end}) has direction {dir}, which the model cannot represent (it knows none, end-up-right, end-down-right)")]
    BondDir { smiles: String, bond: usize, begin: u32, end: u32, dir: &'static str },
    #[error("SMILES of {atoms} atoms: at most {max} are read (BioMedGPT's reference graphs hold 256; RDKit's stereo perception grows faster than linearly, 5,000 atoms took over a minute)")]
    TooLarge { atoms: usize, max: usize },
    #[error("SMILES of {bytes} bytes: at most {max} are read (RDKit's parse time grows with the square of the ring-closure digits)")]
    TooLong { bytes: usize, max: usize },
    #[error("SMILES `{smiles}` has {count} dummy atoms (`*`) that can sit in rings; at most {max} are read (RDKit's kekulization tries every subset of those in an aromatic system: 16 took 6 s, each one more doubles it)")]
    RingDummies { smiles: String, count: usize, max: usize },
    #[error("SMILES `{smiles}` has a fused system of {count} rings that may be aromatic; at most {max} are read (RDKit's aromaticity perception may try their combinations: 50 fused eight-membered rings took 6 s, 120 would take days)")]
    FusedRings { smiles: String, count: usize, max: usize },
}

/// Most characters of a SMILES quoted in an error.
pub const SHOWN_CHARS: usize = 80;

/// Longest SMILES given to RDKit: 1,000 atoms written with brackets and ring closures fit; 200 KB
/// of ring-closure digits took RDKit 16 s (issue 39, D2), 20 KB takes a fraction of a second.
pub const MAX_SMILES_BYTES: usize = 20_000;

/// `smiles` for an error message: control characters escaped (`\u{0}`), cut after
/// [`SHOWN_CHARS`] characters with the full length said.
pub fn shown(smiles: &str) -> String {
    let mut out: String = smiles.chars().take(SHOWN_CHARS).flat_map(char::escape_debug).collect();
    let total = smiles.chars().count();
    if total > SHOWN_CHARS {
        out.push_str(&format!("... ({} characters)", total));
    }
    out
}

/// Most dummy atoms that can sit in rings: RDKit's kekulization of an aromatic system it cannot
/// kekulize as written tries all 2^n subsets of its dummies (a 907-atom system with 16 took
/// 6.3 s, 12 took 0.45 s, 8 under 0.1 s here; issue 39's fuzzing found it). Attachment points
/// (`*` with one neighbour) are not counted: they cannot be in a ring.
pub const MAX_RING_DUMMIES: usize = 8;

/// Most rings in one fused system that may be aromatic (no sp3 carbon): RDKit 2022.09's
/// aromaticity perception enumerates combinations of up to six of them until every ring is
/// aromatic, so where the rings are not aromatic one by one its time grows with the sixth power
/// of their count (a ladder of 30 fused eight-membered rings took 0.19 s, 40 1.2 s, 50 6.2 s
/// here: 40 is the second or so [`MAX_ATOMS`] allows too). Systems aromatic ring by ring are
/// fast (fullerene C70's 36 rings: 4 ms; a 90-ring acene: 16 ms), but the count cannot tell them
/// from the slow ones without running the perception, so benzenoid systems of more than 40 rings
/// are refused too.
pub const MAX_FUSED_RINGS: usize = 40;

/// What is refused before RDKit sanitizes it: a SMILES is printable text (a NUL would end it
/// early in C++, a silent truncation, issue 39, D9) of bounded length, writing a bounded number
/// of atoms, without the shapes whose sanitization time explodes (see [`MAX_RING_DUMMIES`] and
/// [`MAX_FUSED_RINGS`]; measured on the molecule parsed unsanitized, which takes linear time).
pub(crate) fn check_text(smiles: &str) -> Result<(), FeaturizeError> {
    if smiles.len() > MAX_SMILES_BYTES {
        return Err(FeaturizeError::TooLong { bytes: smiles.len(), max: MAX_SMILES_BYTES });
    }
    if let Some((at, c)) = smiles.char_indices().find(|(_, c)| c.is_control()) {
        return Err(FeaturizeError::Invalid {
            smiles: shown(smiles),
            reason: format!("control character U+{:04X} at byte {at} (a SMILES is printable text)", c as u32),
        });
    }
    // Bounded before RDKit sees it (issue 26, D6).
    let atoms = count_atoms(smiles);
    if atoms > MAX_ATOMS {
        return Err(FeaturizeError::TooLarge { atoms, max: MAX_ATOMS });
    }
    let shape = ffi::measure_smiles(smiles).map_err(|e| FeaturizeError::Invalid { smiles: shown(smiles), reason: clean_reason(e.what()) })?;
    let (dummies, fused) = (shape.ring_dummies as usize, shape.fused_rings as usize);
    if dummies > MAX_RING_DUMMIES {
        return Err(FeaturizeError::RingDummies { smiles: shown(smiles), count: dummies, max: MAX_RING_DUMMIES });
    }
    if fused > MAX_FUSED_RINGS {
        return Err(FeaturizeError::FusedRings { smiles: shown(smiles), count: fused, max: MAX_FUSED_RINGS });
    }
    Ok(())
}

/// Most atoms of a SMILES given to RDKit (about a second of parsing).
pub const MAX_ATOMS: usize = 1000;

/// The atoms a SMILES writes, counted from its characters without RDKit: a bracket atom, an
/// organic-subset element (`Cl` and `Br` one atom), an aromatic one, or `*`.
pub fn count_atoms(smiles: &str) -> usize {
    let b = smiles.as_bytes();
    let (mut n, mut i) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'[' => {
                n += 1;
                while i < b.len() && b[i] != b']' {
                    i += 1;
                }
            }
            b'C' if b.get(i + 1) == Some(&b'l') => {
                n += 1;
                i += 1;
            }
            b'B' if b.get(i + 1) == Some(&b'r') => {
                n += 1;
                i += 1;
            }
            c if c.is_ascii_uppercase() || matches!(c, b'b' | b'c' | b'n' | b'o' | b'p' | b's' | b'*') => n += 1,
            _ => {}
        }
        i += 1;
    }
    n
}

// RDKit 2022.09 enum values (GraphMol/Atom.h, GraphMol/Bond.h).
const CHIRAL_NAMES: [&str; 9] = [
    "CHI_UNSPECIFIED", "CHI_TETRAHEDRAL_CW", "CHI_TETRAHEDRAL_CCW", "CHI_OTHER", "CHI_TETRAHEDRAL",
    "CHI_ALLENE", "CHI_SQUAREPLANAR", "CHI_TRIGONALBIPYRAMIDAL", "CHI_OCTAHEDRAL",
];

fn bond_type_index(rdkit: i32) -> Result<u8, &'static str> {
    match rdkit {
        1 => Ok(0),  // SINGLE
        2 => Ok(1),  // DOUBLE
        3 => Ok(2),  // TRIPLE
        12 => Ok(3), // AROMATIC
        0 => Err("UNSPECIFIED"),
        4..=11 => Err("a fractional or higher-order bond"),
        13 => Err("IONIC"),
        17 => Err("DATIVE"),
        14..=16 | 18..=20 => Err("a query or dative variant"),
        _ => Err("an unknown bond type"),
    }
}

fn bond_dir_index(rdkit: i32) -> Result<u8, &'static str> {
    match rdkit {
        0 => Ok(0), // NONE
        4 => Ok(1), // ENDUPRIGHT
        3 => Ok(2), // ENDDOWNRIGHT
        1 => Err("BEGINWEDGE"),
        2 => Err("BEGINDASH"),
        5 => Err("EITHERDOUBLE"),
        _ => Err("UNKNOWN"),
    }
}

/// Parses `smiles` with RDKit's default sanitization into a [`Molecule`]: node `i` is RDKit's
/// atom `i`, edge `k` its bond `k`. Tags and bonds the model has no index for are errors here.
pub fn parse_molecule(smiles: &str) -> Result<Molecule, FeaturizeError> {
    check_text(smiles)?;
    let raw = ffi::parse_smiles(smiles).map_err(|e| FeaturizeError::Invalid { smiles: shown(smiles), reason: clean_reason(e.what()) })?;
    let mut mol = Molecule::with_capacity(raw.atoms.len(), raw.bonds.len());
    for (i, a) in raw.atoms.iter().enumerate() {
        if !(0..=2).contains(&a.chiral_tag) {
            let tag = CHIRAL_NAMES.get(a.chiral_tag as usize).copied().unwrap_or("unknown");
            return Err(FeaturizeError::Chirality { smiles: shown(smiles), atom: i, tag });
        }
        mol.add_node(Atom { atomic_num: a.atomic_num as u32, chirality: a.chiral_tag as u8 });
    }
    for (i, b) in raw.bonds.iter().enumerate() {
        let (begin, end) = (b.begin, b.end);
        let bond_type = bond_type_index(b.bond_type)
            .map_err(|kind| FeaturizeError::BondType { smiles: shown(smiles), bond: i, begin, end, kind })?;
        let direction = bond_dir_index(b.bond_dir)
            .map_err(|dir| FeaturizeError::BondDir { smiles: shown(smiles), bond: i, begin, end, dir })?;
        mol.add_edge(NodeIndex::new(begin as usize), NodeIndex::new(end as usize), Bond { bond_type, direction });
    }
    Ok(mol)
}

/// Parses `smiles` with RDKit's default sanitization and builds the model's graph.
pub fn featurize(smiles: &str) -> Result<MolGraph, FeaturizeError> {
    parse_molecule(smiles).map(|mol| MolGraph::from_molecule(&mol))
}

/// RDKit log lines start with a `[hh:mm:ss] ` stamp and may repeat, and they echo the input
/// (`for input: '...'`, `while parsing: ...`, `Failed parsing SMILES '...'`), which the error
/// already quotes once; keep the messages.
pub(crate) fn clean_reason(raw: &str) -> String {
    let mut lines: Vec<&str> = Vec::new();
    for line in raw.lines() {
        let line = if line.starts_with('[') { line.split_once("] ").map_or(line, |(_, rest)| rest) } else { line };
        let line = [" for input: '", " while parsing: "].iter().fold(line, |l, echo| l.find(echo).map_or(l, |i| &l[..i]));
        let line = line.trim();
        if line.is_empty() || line.contains("Failed parsing SMILES") || lines.contains(&line) {
            continue;
        }
        lines.push(line);
    }
    if lines.is_empty() { "RDKit could not parse it".into() } else { lines.join("; ") }
}

#[cfg(test)]
mod size_tests {
    use super::*;

    #[test]
    fn atoms_are_counted_and_huge_molecules_refused_fast() {
        assert_eq!(count_atoms("CC(=O)Oc1ccccc1C(=O)O"), 13);
        assert_eq!(count_atoms("ClCBr"), 3);
        assert_eq!(count_atoms("[NH4+].[Cl-]"), 2);
        assert_eq!(count_atoms("C1CC[C@H](N)C1"), 6);
        let started = std::time::Instant::now();
        let e = featurize(&"C".repeat(5000)).unwrap_err().to_string();
        assert!(e.contains("5000 atoms") && e.contains("at most 1000"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
        assert_eq!(featurize(&"C".repeat(300)).unwrap().num_atoms(), 300);
    }

    /// A ladder of `rings` fused eight-membered rings, written aromatic (labels 1-9, then %10...):
    /// no ring is aromatic alone, so RDKit tries combinations of them.
    fn ladder(rings: usize) -> String {
        let label = |i: usize| if i < 10 { i.to_string() } else { format!("%{i}") };
        let mut s = format!("c{}ccc", label(1));
        for r in 2..=rings {
            s += &format!("c{}c", label(r));
        }
        s.pop();
        s += "cccc";
        for r in (2..=rings).rev() {
            s += &format!("c{}c", label(r));
        }
        s + &format!("c{}", label(1))
    }

    /// Issue 39: shapes whose sanitization time explodes in RDKit are refused before it runs,
    /// quickly, and those at the bounds still parse, within about a second (release build).
    #[test]
    fn explosive_shapes_are_refused_before_sanitization() {
        let quick = std::time::Duration::from_millis(200);
        // Fuzzing found it: 907 atoms in one ring with 16 dummies RDKit cannot kekulize; it tried
        // all 65,536 subsets of the dummies (6.3 s).
        let found = include_str!("../../../fuzz/regressions/molecule_list/kekulize_6s.smi").trim();
        let started = std::time::Instant::now();
        let e = featurize(found).unwrap_err();
        assert!(matches!(e, FeaturizeError::RingDummies { count: 16, max: MAX_RING_DUMMIES, .. }), "{e}");
        assert!(started.elapsed() < quick);
        // Dummies with one neighbour (attachment points) are not counted; those in rings are.
        assert!(featurize(&format!("c1ccccc1{}", "C(*)".repeat(12))).is_ok());
        let ring = format!("c1ccc{}c1", "*".repeat(9));
        assert!(matches!(featurize(&ring), Err(FeaturizeError::RingDummies { count: 9, .. })));
        assert!(!matches!(featurize(&format!("c1ccc{}c1", "*".repeat(8))), Err(FeaturizeError::RingDummies { .. })));

        assert_eq!(featurize("c1ccc2cc3ccccc3cc2c1").unwrap().num_atoms(), 14, "anthracene");
        let started = std::time::Instant::now();
        // (Labels go up to %99: 90 rings.)
        let e = featurize(&ladder(90)).unwrap_err();
        assert!(matches!(e, FeaturizeError::FusedRings { count: 90, max: MAX_FUSED_RINGS, .. }), "{e}");
        assert!(e.to_string().contains(" characters)`"), "the SMILES is quoted shortly: {e}");
        assert!(started.elapsed() < quick);
        let started = std::time::Instant::now();
        assert_eq!(featurize(&ladder(MAX_FUSED_RINGS)).unwrap().num_atoms(), 4 * MAX_FUSED_RINGS + 4);
        assert!(started.elapsed() < std::time::Duration::from_secs(if cfg!(debug_assertions) { 60 } else { 5 }));
        // Rings with an sp3 carbon cannot be aromatic: a long fused alicyclic system is read.
        let alicyclic = ladder(60).to_uppercase();
        assert!(!matches!(featurize(&alicyclic), Err(FeaturizeError::FusedRings { .. })));
        // Fullerene C60: 31 rings, aromatic one by one.
        let c60 = "c12c3c4c5c1c1c6c7c2c2c8c3c3c9c4c4c%10c5c5c1c1c6c6c%11c7c2c2c7c8c3c3c8c9c4c4c9c%10c5c5c1c1c6c6c%11c2c2c7c3c3c8c4c4c9c5c1c1c6c2c3c41";
        assert_eq!(featurize(c60).unwrap().num_atoms(), 60);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_lose_their_timestamps() {
        assert_eq!(
            clean_reason("[03:04:08] SMILES Parse Error: syntax error\n[03:04:08] Failed parsing SMILES 'X'\n"),
            "SMILES Parse Error: syntax error"
        );
    }

    /// RDKit's own words, once, without the echoes of the input (issue 39, D24).
    #[test]
    fn reasons_do_not_echo_the_input() {
        let raw = "[10:00:00] SMILES Parse Error: syntax error while parsing: CXC\n[10:00:00] SMILES Parse Error: Failed parsing SMILES 'CXC' for input: 'CXC'\n";
        assert_eq!(clean_reason(raw), "SMILES Parse Error: syntax error");
        assert_eq!(clean_reason("SMILES Parse Error: unclosed ring for input: 'C1CC'"), "SMILES Parse Error: unclosed ring");
        let big = format!("C{}", "=".repeat(15_000));
        let e = featurize(&big).unwrap_err().to_string();
        assert!(e.len() < 400 && e.contains("15001 characters"), "{e}");
    }

    /// A NUL or other control character is refused by name and position, not cut off by C++ (D9).
    #[test]
    fn control_characters_are_refused_and_escaped() {
        let e = featurize("CC\0O").unwrap_err().to_string();
        assert!(e.contains("U+0000 at byte 2") && e.contains("CC\\0O"), "{e}");
        let e = featurize("C\u{1}C").unwrap_err().to_string();
        assert!(e.contains("U+0001") && !e.contains('\u{1}'), "{e}");
    }

    /// Length is bounded before RDKit: 200 KB of ring-closure digits (16 s in RDKit) is refused at once (D2).
    #[test]
    fn ring_closure_floods_are_refused_fast() {
        let started = std::time::Instant::now();
        let e = featurize(&format!("{}{}", "C".repeat(999), "1".repeat(200_000))).unwrap_err().to_string();
        assert!(e.contains("at most 20000"), "{e}");
        assert!(started.elapsed() < std::time::Duration::from_millis(100));
    }
}
