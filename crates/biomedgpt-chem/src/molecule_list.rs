//! Files of molecules: `.smi` (a SMILES, optionally followed by a name, per line; `#` comments)
//! and CSV with a `smiles` column (read with the `csv` crate: quoted fields may hold commas and
//! newlines, as RFC 4180 has them; issue 39, D15).

/// Which format a molecule list is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListFormat {
    Smi,
    Csv,
}

impl ListFormat {
    /// CSV for a `.csv` file, `.smi` otherwise.
    pub fn of(path: &std::path::Path) -> Self {
        if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("csv")) { ListFormat::Csv } else { ListFormat::Smi }
    }
}

/// (line number, SMILES) of every molecule in `text`. A CSV header without a `smiles` column is
/// an error naming the columns it has; a malformed CSV record an error naming its line.
pub fn read_molecule_list(text: &str, format: ListFormat) -> Result<Vec<(usize, String)>, String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    match format {
        ListFormat::Smi => Ok(text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l))
            .filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'))
            .map(|(n, l)| (n, l.split_whitespace().next().unwrap_or("").to_string()))
            .collect()),
        ListFormat::Csv => {
            let mut reader = csv::ReaderBuilder::new().trim(csv::Trim::All).from_reader(text.as_bytes());
            let header = reader.headers().map_err(|e| format!("reading the CSV header: {e}"))?.clone();
            let column = header.iter().position(|c| c.eq_ignore_ascii_case("smiles")).ok_or_else(|| {
                let names: Vec<String> = header.iter().take(20).map(|c| format!("`{}`", crate::shown(c))).collect();
                format!("no `smiles` column in the header (it has {}); name the column of SMILES `smiles`", names.join(", "))
            })?;
            let mut molecules = Vec::new();
            for record in reader.records() {
                let record = record.map_err(|e| format!("reading CSV: {e}"))?;
                let line = record.position().map_or(0, |p| p.line() as usize);
                if record.iter().all(str::is_empty) {
                    continue;
                }
                molecules.push((line, record.get(column).unwrap_or("").to_string()));
            }
            Ok(molecules)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ListFormat, read_molecule_list};

    #[test]
    fn smi_and_csv_lists() {
        let smi = "\u{feff}CCO ethanol\n# a comment\n\nC methane\n";
        assert_eq!(read_molecule_list(smi, ListFormat::Smi).unwrap(), vec![(1, "CCO".into()), (4, "C".into())]);
        let csv = "name,smiles\n\"ester, CO\",CCC\n,\nmethane,C\n";
        assert_eq!(read_molecule_list(csv, ListFormat::Csv).unwrap(), vec![(2, "CCC".into()), (4, "C".into())]);
        let e = read_molecule_list("name,structure\nx,C\n", ListFormat::Csv).unwrap_err();
        assert!(e.contains("no `smiles` column") && e.contains("`structure`"), "{e}");
        let e = read_molecule_list("smiles,n\nC,1\nCC,1,extra\n", ListFormat::Csv).unwrap_err();
        assert!(e.contains("line: 3"), "{e}");
    }
}
