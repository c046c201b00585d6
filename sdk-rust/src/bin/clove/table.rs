//! Plain-text tables and durations for humans: what `clove ps` and `clove demo` print.
//!
//! Columns are left-aligned and separated by two spaces, as `ps` and `docker ps` do, so the
//! output stays readable in a terminal and splittable with `awk`. Widths count characters,
//! not bytes (`µs` is one column wide).

/// A table: a header row and data rows, rendered with aligned columns.
#[derive(Debug, Clone)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(headers: &[&str]) -> Table {
        Table {
            headers: headers.iter().map(|h| (*h).to_owned()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row; missing cells are empty, extra cells are dropped.
    pub fn push(&mut self, cells: Vec<String>) {
        let mut cells = cells;
        cells.resize(self.headers.len(), String::new());
        self.rows.push(cells);
    }

    /// The table as text: one line per row, each ending in a newline. Cells are padded to
    /// their column's widest cell; the last column is not padded, so no line ends in spaces.
    /// A line break inside a cell would break the columns, so it is shown as a space.
    pub fn render(&self) -> String {
        let clean = |cell: &str| cell.replace(['\n', '\r'], " ");
        let lines: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|row| row.iter().map(|c| clean(c)).collect())
            .collect();
        let mut widths = vec![0usize; self.headers.len()];
        for row in &lines {
            for (w, cell) in widths.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &lines {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = w.saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// An uptime in the two most significant units: `850ms`, `42s`, `3m07s`, `2h05m`, `3d04h`.
pub fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell_without_trailing_spaces() {
        let mut t = Table::new(&["ID", "NAME", "STATE"]);
        t.push(vec!["7".into(), "worker".into(), "RUNNING".into()]);
        t.push(vec!["12".into(), "µ".into(), String::new()]);
        t.push(vec!["3".into()]);
        assert_eq!(
            t.render(),
            "ID  NAME    STATE\n\
             7   worker  RUNNING\n\
             12  µ\n\
             3\n"
        );
    }

    #[test]
    fn line_breaks_in_cells_do_not_break_rows() {
        let mut t = Table::new(&["A", "B"]);
        t.push(vec!["x\ny".into(), "z".into()]);
        assert_eq!(t.render(), "A    B\nx y  z\n");
    }

    #[test]
    fn uptimes_use_two_units() {
        assert_eq!(uptime(850), "850ms");
        assert_eq!(uptime(42_000), "42s");
        assert_eq!(uptime(187_000), "3m07s");
        assert_eq!(uptime(7_500_000), "2h05m");
        assert_eq!(uptime(3 * 86_400_000 + 4 * 3_600_000 + 5), "3d04h");
    }
}
