//! Plain-text tables and key/value blocks with aligned columns.

/// How a column's cells are padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    Left,
    Right,
}

/// A table of text cells rendered with columns separated by two spaces.
#[derive(Debug)]
pub struct Table {
    headers: Vec<String>,
    aligns: Vec<Align>,
    rows: Vec<Vec<String>>,
}

/// Space between two columns.
const GAP: &str = "  ";

impl Table {
    /// A table with the given columns; each header comes with its cells' alignment.
    pub fn new(columns: &[(&str, Align)]) -> Self {
        Table {
            headers: columns.iter().map(|(h, _)| h.to_string()).collect(),
            aligns: columns.iter().map(|(_, a)| *a).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are left empty and extra cells are dropped.
    pub fn row(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text: a header line, then one line per row, each ending in `\n`.
    /// Trailing spaces are trimmed from every line.
    pub fn render(&self) -> String {
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, cell) in line.iter().enumerate() {
                if i > 0 {
                    text.push_str(GAP);
                }
                let pad = widths[i].saturating_sub(cell.chars().count());
                match self.aligns[i] {
                    Align::Left => {
                        text.push_str(cell);
                        text.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        text.extend(std::iter::repeat_n(' ', pad));
                        text.push_str(cell);
                    }
                }
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines with the values aligned, each ending in `\n`.
pub fn key_values(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.chars().count() + 1).max().unwrap_or(0);
    let mut out = String::new();
    for (key, value) in pairs {
        let label = format!("{key}:");
        let line = format!("{label:<width$}{GAP}{value}");
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_are_aligned_to_the_widest_cell() {
        let mut t = Table::new(&[("NAME", Align::Left), ("LAG", Align::Right), ("ROLE", Align::Left)]);
        t.row(vec!["eu-west".into(), "0".into(), "leader".into()]);
        t.row(vec!["us".into(), "1234".into(), "learner".into()]);
        assert_eq!(
            t.render(),
            "NAME      LAG  ROLE\n\
             eu-west     0  leader\n\
             us       1234  learner\n"
        );
    }

    #[test]
    fn header_wider_than_cells_sets_the_width() {
        let mut t = Table::new(&[("REACHABLE", Align::Left), ("X", Align::Left)]);
        t.row(vec!["yes".into(), "a".into()]);
        assert_eq!(t.render(), "REACHABLE  X\nyes        a\n");
    }

    #[test]
    fn empty_table_is_just_the_header() {
        let t = Table::new(&[("NAME", Align::Left), ("NODE", Align::Right)]);
        assert_eq!(t.render(), "NAME  NODE\n");
    }

    #[test]
    fn short_rows_are_padded_and_lines_trimmed() {
        let mut t = Table::new(&[("A", Align::Left), ("B", Align::Left)]);
        t.row(vec!["long-value".into()]);
        t.row(vec!["x".into(), "y".into(), "dropped".into()]);
        assert_eq!(t.render(), "A           B\nlong-value\nx           y\n");
    }

    #[test]
    fn non_ascii_cells_are_measured_in_characters() {
        let mut t = Table::new(&[("NAME", Align::Left), ("N", Align::Left)]);
        t.row(vec!["zürich".into(), "1".into()]);
        assert_eq!(t.render(), "NAME    N\nzürich  1\n");
    }

    #[test]
    fn key_values_align_values() {
        let out = key_values(&[("cluster", "prod".into()), ("last applied", "42".into()), ("leader", String::new())]);
        assert_eq!(out, "cluster:       prod\nlast applied:  42\nleader:\n");
    }
}
