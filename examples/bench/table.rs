//! Markdown tables, printed as each section of the benchmark finishes.

/// A titled markdown table.
pub struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with these column headers.
    pub fn new(title: impl Into<String>, headers: &[&str]) -> Table {
        Table {
            title: title.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing cells print empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Prints it (nothing when it has no rows).
    pub fn print(&self) {
        if self.rows.is_empty() {
            return;
        }
        println!("### {}\n", self.title);
        println!("| {} |", self.headers.join(" | "));
        println!("|{}", " --- |".repeat(self.headers.len()));
        for r in &self.rows {
            let mut cells = r.clone();
            cells.resize(self.headers.len(), String::new());
            println!("| {} |", cells.join(" | "));
        }
        println!();
    }
}

/// `x.xx`, or `-` when the ratio has no meaning (a missing or zero denominator).
pub fn ratio(num: f64, den: Option<f64>) -> String {
    match den {
        Some(d) if d > 0.0 && num.is_finite() => format!("{:.2}", num / d),
        _ => "-".into(),
    }
}
