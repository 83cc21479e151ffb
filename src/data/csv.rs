//! CSV tables: RFC 4180 records, numeric and time-like columns, missing
//! cells, and the choice of feature and target columns.

use super::*;

/// A comma-separated table with a header line, read as RFC 4180 says: a
/// field in double quotes may hold commas, line breaks and quotes (written
/// twice, `""`). Fields are trimmed (inside quotes too); blank lines are
/// skipped; `\r\n` line ends and a byte-order mark are accepted.
#[derive(Clone, Debug)]
pub struct CsvTable {
    /// Where the table came from (used in error messages).
    pub source: PathBuf,
    /// Column names.
    pub header: Vec<String>,
    /// The cells of every data row, row after row, unquoted and trimmed.
    cells: String,
    /// Byte range in `cells` of cell (r, c), at `r · columns + c`.
    spans: Vec<Range<usize>>,
    /// The 1-based line on which each data row starts.
    lines: Vec<usize>,
}

pub(super) fn parse_number(cell: &str) -> Option<f64> {
    cell.parse::<f64>().ok()
}

/// Splits CSV text into records (RFC 4180 quoting) and hands each to
/// `each` with the line it starts on and its fields (unquoted, trimmed);
/// an unclosed quote or text after a closing quote is an error naming its
/// line.
pub(super) fn csv_records(
    text: &str,
    source: &Path,
    mut each: impl FnMut(usize, Vec<String>) -> Result<()>,
) -> Result<()> {
    let bad = |msg: String| Error::file(source, msg);
    let mut it = text.chars().peekable();
    let mut line = 1usize;
    while it.peek().is_some() {
        let start = line;
        let mut fields = Vec::new();
        let mut quoted_any = false;
        loop {
            while it.next_if(|c| *c == ' ' || *c == '\t').is_some() {}
            let mut f = String::new();
            if it.next_if_eq(&'"').is_some() {
                quoted_any = true;
                let opened = line;
                loop {
                    match it.next() {
                        None => {
                            return Err(bad(format!(
                                "line {opened}: a quoted field is never closed (a quote inside \
                                 quotes is written twice, \"\")"
                            )));
                        }
                        Some('"') if it.next_if_eq(&'"').is_some() => f.push('"'),
                        Some('"') => break,
                        Some(c) => {
                            line += usize::from(c == '\n');
                            f.push(c);
                        }
                    }
                }
                while it.next_if(|c| c.is_whitespace() && *c != '\n').is_some() {}
                if !matches!(it.peek(), None | Some(',') | Some('\n')) {
                    return Err(bad(format!(
                        "line {line}: field {} has text after its closing quote (a quote inside \
                         quotes is written twice, \"\")",
                        fields.len() + 1
                    )));
                }
            } else {
                while let Some(c) = it.next_if(|c| *c != ',' && *c != '\n') {
                    f.push(c);
                }
            }
            fields.push(f.trim().to_string());
            match it.next() {
                Some(',') => {}
                Some(_) => {
                    line += 1;
                    break;
                }
                None => break,
            }
        }
        // A line of nothing but whitespace is no record.
        if quoted_any || fields.len() > 1 || !fields[0].is_empty() {
            each(start, fields)?;
        }
    }
    Ok(())
}

/// Refuses a header with an empty or repeated name.
pub(super) fn check_header(source: &Path, line: usize, names: &[String]) -> Result<()> {
    for (j, n) in names.iter().enumerate() {
        if n.is_empty() {
            return Err(Error::file(
                source,
                format!("line {line}: column {} of the header has no name", j + 1),
            ));
        }
        if let Some(k) = names[..j].iter().position(|m| m == n) {
            return Err(Error::file(
                source,
                format!(
                    "line {line}: columns {} and {} of the header are both named `{n}`",
                    k + 1,
                    j + 1
                ),
            ));
        }
    }
    Ok(())
}

impl CsvTable {
    /// Parses CSV text; `source` names it in errors. Every data row must
    /// have as many fields as the header.
    pub fn parse(text: &str, source: impl Into<PathBuf>) -> Result<Self> {
        let source = source.into();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut header: Option<(usize, Vec<String>)> = None;
        let (mut cells, mut spans, mut lines) = (String::new(), Vec::new(), Vec::new());
        csv_records(text, &source, |line, fields| {
            let Some((header_line, names)) = &header else {
                check_header(&source, line, &fields)?;
                header = Some((line, fields));
                return Ok(());
            };
            if fields.len() != names.len() {
                return Err(Error::file(
                    &source,
                    format!(
                        "line {line}: {} fields, but the header (line {header_line}) has {} \
                         columns",
                        fields.len(),
                        names.len()
                    ),
                ));
            }
            for f in &fields {
                spans.push(cells.len()..cells.len() + f.len());
                cells.push_str(f);
            }
            lines.push(line);
            Ok(())
        })?;
        let Some((header_line, names)) = header else {
            return Err(Error::file(&source, "empty file: expected a header line"));
        };
        if lines.is_empty() {
            return Err(Error::file(
                &source,
                format!("no data rows after the header (line {header_line})"),
            ));
        }
        Ok(Self {
            source,
            header: names,
            cells,
            spans,
            lines,
        })
    }

    /// Reads and parses a CSV file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = read_text(path)?;
        Self::parse(&text, path)
    }

    /// Data rows.
    pub fn num_rows(&self) -> usize {
        self.lines.len()
    }

    /// Columns.
    pub fn num_columns(&self) -> usize {
        self.header.len()
    }

    /// The 1-based line number on which data row `r` starts.
    pub fn line_of_row(&self, r: usize) -> usize {
        self.lines[r]
    }

    fn row_fields(&self, r: usize) -> impl Iterator<Item = &str> {
        let n = self.num_columns();
        self.spans[r * n..(r + 1) * n]
            .iter()
            .map(|s| &self.cells[s.clone()])
    }

    /// The (trimmed, unquoted) cell of data row `r`, column `c`.
    pub fn cell(&self, r: usize, c: usize) -> &str {
        &self.cells[self.spans[r * self.num_columns() + c].clone()]
    }

    /// The index of the column named `name`.
    pub fn column_index(&self, name: &str) -> Result<usize> {
        self.header.iter().position(|h| h == name).ok_or_else(|| {
            Error::file(
                &self.source,
                format!(
                    "no column `{name}`; the header has: {}",
                    self.header.join(", ")
                ),
            )
        })
    }

    /// Whether a cell stands for a missing value: empty, or `NA`, `N/A`,
    /// `NaN`, `null` or `None` (any case).
    pub fn is_missing(cell: &str) -> bool {
        cell.is_empty()
            || ["na", "n/a", "nan", "null", "none"]
                .iter()
                .any(|m| cell.eq_ignore_ascii_case(m))
    }

    /// The columns that hold numbers: every cell of every row is a number
    /// or missing ([`CsvTable::is_missing`]), and at least one is a number.
    pub fn numeric_column_indices(&self) -> Vec<usize> {
        let mut numeric = vec![true; self.num_columns()];
        let mut seen = vec![false; self.num_columns()];
        for r in 0..self.num_rows() {
            for (c, cell) in self.row_fields(r).enumerate() {
                if !numeric[c] || Self::is_missing(cell) {
                    continue;
                }
                match parse_number(cell) {
                    Some(_) => seen[c] = true,
                    None => numeric[c] = false,
                }
            }
        }
        (0..self.num_columns())
            .filter(|&c| numeric[c] && seen[c])
            .collect()
    }

    /// Why column `c` looks like a time index, if it does: its name is a
    /// time word (date, time, year, timestamp, datetime, month, week, day,
    /// hour, minute, quarter, period), or its cells (three rows or more)
    /// are integers that increase strictly from row to row.
    pub fn time_like(&self, c: usize) -> Option<&'static str> {
        const WORDS: [&str; 12] = [
            "date",
            "time",
            "year",
            "timestamp",
            "datetime",
            "month",
            "week",
            "day",
            "hour",
            "minute",
            "quarter",
            "period",
        ];
        let name = self.header[c].to_ascii_lowercase();
        if name
            .split(|ch: char| !ch.is_ascii_alphanumeric())
            .any(|w| WORDS.contains(&w))
        {
            return Some("named like a time index");
        }
        let mut prev: Option<f64> = None;
        for r in 0..self.num_rows() {
            let v = match parse_number(self.cell(r, c)) {
                Some(v) if v.is_finite() && v.fract() == 0.0 => v,
                _ => return None,
            };
            if prev.is_some_and(|p| v <= p) {
                return None;
            }
            prev = Some(v);
        }
        (self.num_rows() >= 3).then_some("integers increasing row by row")
    }

    /// Parses column `c` as numbers, with `None` for missing cells; a
    /// non-numeric or non-finite cell is an error naming its line and
    /// column.
    fn column_values(&self, c: usize) -> Result<Vec<Option<f64>>> {
        (0..self.num_rows())
            .map(|r| {
                let cell = self.cell(r, c);
                if Self::is_missing(cell) {
                    return Ok(None);
                }
                match parse_number(cell) {
                    Some(v) if v.is_finite() => Ok(Some(v)),
                    Some(_) => Err(Error::file(
                        &self.source,
                        format!("{}: `{}` is not a finite number", self.at(r, c), clip(cell)),
                    )),
                    None => Err(Error::file(
                        &self.source,
                        format!("{}: `{}` is not a number", self.at(r, c), clip(cell)),
                    )),
                }
            })
            .collect()
    }

    /// `line L, column C (`name`)` of data row `r`.
    fn at(&self, r: usize, c: usize) -> String {
        format!(
            "line {}, column {} (`{}`)",
            self.lines[r],
            c + 1,
            self.header[c]
        )
    }

    /// Chooses the feature and target columns by name (missing cells are
    /// an error). See [`CsvTable::select_with`].
    pub fn select(&self, features: Option<&[String]>, target: Option<&str>) -> Result<SeriesTable> {
        let o = SelectOptions {
            features: features.map(<[String]>::to_vec),
            target: target.map(str::to_string),
            ..Default::default()
        };
        Ok(self.select_with(&o)?.table)
    }

    /// Chooses the columns of a series. By default the features are the
    /// numeric columns ([`CsvTable::numeric_column_indices`]) that do not
    /// look like a time index ([`CsvTable::time_like`]), and the target is
    /// the last of them (which is then also a feature). Missing cells of the
    /// chosen columns are handled as `o.missing` says. The time column
    /// (`o.time`, else a non-numeric first column, else the first
    /// time-like column) labels rows in `predict`'s output.
    pub fn select_with(&self, o: &SelectOptions) -> Result<Selection> {
        let numeric = self.numeric_column_indices();
        let time_like: Vec<(usize, &'static str)> = numeric
            .iter()
            .filter_map(|&c| self.time_like(c).map(|why| (c, why)))
            .collect();
        let usable: Vec<usize> = numeric
            .iter()
            .copied()
            .filter(|c| !time_like.iter().any(|t| t.0 == *c))
            .collect();
        let no_numeric = || {
            let mut msg = "no numeric column to use".to_string();
            if !time_like.is_empty() {
                msg += &format!(
                    " (time-like columns are not used unless named: {})",
                    time_like
                        .iter()
                        .map(|(c, _)| format!("`{}`", self.header[*c]))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            Error::file(
                &self.source,
                msg + "; name the columns with --features and --target",
            )
        };
        let feat: Vec<usize> = match &o.features {
            Some(names) if !names.is_empty() => names
                .iter()
                .map(|n| self.column_index(n))
                .collect::<Result<_>>()?,
            _ => {
                if usable.is_empty() {
                    return Err(no_numeric());
                }
                usable.clone()
            }
        };
        for (j, &c) in feat.iter().enumerate() {
            if feat[..j].contains(&c) {
                return Err(Error::Invalid(format!(
                    "feature column `{}` is listed twice",
                    self.header[c]
                )));
            }
        }
        let tgt = match &o.target {
            Some(n) => self.column_index(n)?,
            None => *usable.last().ok_or_else(no_numeric)?,
        };
        let mut cols = feat.clone();
        if !cols.contains(&tgt) {
            cols.push(tgt);
        }
        let raw = cols
            .iter()
            .map(|&c| self.column_values(c))
            .collect::<Result<Vec<_>>>()?;
        let (values, rows) = fill_missing(self, &cols, raw, o.missing)?;
        let time = match &o.time {
            Some(n) => Some(self.column_index(n)?),
            None if !numeric.contains(&0) && !cols.contains(&0) => Some(0),
            None => time_like.iter().map(|t| t.0).find(|c| !cols.contains(c)),
        }
        .map(|c| TimeColumn {
            name: self.header[c].clone(),
            values: rows.iter().map(|&r| self.cell(r, c).to_string()).collect(),
        });
        let unused_time = time_like
            .iter()
            .filter(|(c, _)| !cols.contains(c))
            .map(|(c, why)| (self.header[*c].clone(), *why))
            .collect();
        let mut values = values;
        let target_values = match feat.iter().position(|&c| c == tgt) {
            Some(k) => values[k].clone(),
            None => values.pop().unwrap_or_default(),
        };
        let table = SeriesTable::new(
            feat.iter().map(|&c| self.header[c].clone()).collect(),
            values,
            self.header[tgt].clone(),
            target_values,
        )
        .map_err(|e| Error::file(&self.source, e))?;
        Ok(Selection {
            table,
            time,
            rows: rows.iter().map(|&r| self.lines[r]).collect(),
            unused_time,
        })
    }
}

/// How missing cells of the chosen columns are handled (`--missing`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Missing {
    /// A missing cell is an error naming its line and column.
    #[default]
    Error,
    /// Rows with a missing cell in any chosen column are left out.
    Drop,
    /// A missing cell takes the last value above it (none above: error).
    Ffill,
    /// A missing cell is interpolated linearly between the nearest values
    /// above and below; at either end it takes the nearest value.
    Interpolate,
}

impl Missing {
    /// The `--missing` name.
    pub fn name(self) -> &'static str {
        match self {
            Missing::Error => "error",
            Missing::Drop => "drop",
            Missing::Ffill => "ffill",
            Missing::Interpolate => "interpolate",
        }
    }

    /// Parses a `--missing` name.
    pub fn parse(s: &str) -> Result<Self> {
        [
            Missing::Error,
            Missing::Drop,
            Missing::Ffill,
            Missing::Interpolate,
        ]
        .into_iter()
        .find(|m| m.name() == s)
        .ok_or_else(|| {
            Error::Invalid(format!(
                "--missing {s}: expected error, drop, ffill or interpolate"
            ))
        })
    }
}

/// Fills or drops the missing cells of the columns `cols` (values per
/// column, `None` where missing); returns the columns and the data rows
/// kept.
pub(super) fn fill_missing(
    csv: &CsvTable,
    cols: &[usize],
    mut raw: Vec<Vec<Option<f64>>>,
    missing: Missing,
) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
    let n = csv.num_rows();
    let first_missing = || {
        (0..n).find_map(|r| {
            raw.iter()
                .zip(cols)
                .find(|(v, _)| v[r].is_none())
                .map(|(_, &c)| (r, c))
        })
    };
    let mut rows: Vec<usize> = (0..n).collect();
    match missing {
        Missing::Error => {
            if let Some((r, c)) = first_missing() {
                return Err(Error::file(
                    &csv.source,
                    format!(
                        "{}: missing value `{}` (choose --missing drop, ffill or interpolate)",
                        csv.at(r, c),
                        clip(csv.cell(r, c))
                    ),
                ));
            }
        }
        Missing::Drop => {
            rows.retain(|&r| raw.iter().all(|v| v[r].is_some()));
            if rows.is_empty() {
                return Err(Error::file(
                    &csv.source,
                    "--missing drop: every row has a missing value in the chosen columns",
                ));
            }
            for v in &mut raw {
                *v = rows.iter().map(|&r| v[r]).collect();
            }
        }
        Missing::Ffill => {
            for (v, &c) in raw.iter_mut().zip(cols) {
                let mut last = None;
                for (r, x) in v.iter_mut().enumerate() {
                    match x {
                        Some(y) => last = Some(*y),
                        None => {
                            *x = Some(last.ok_or_else(|| {
                                Error::file(
                                    &csv.source,
                                    format!(
                                        "{}: missing value with no value above it to carry \
                                         forward (--missing ffill); use interpolate or drop",
                                        csv.at(r, c)
                                    ),
                                )
                            })?)
                        }
                    }
                }
            }
        }
        Missing::Interpolate => {
            for (v, &c) in raw.iter_mut().zip(cols) {
                let known: Vec<usize> = (0..v.len()).filter(|&r| v[r].is_some()).collect();
                if known.is_empty() {
                    return Err(Error::file(
                        &csv.source,
                        format!("column {} (`{}`) has no value at all", c + 1, csv.header[c]),
                    ));
                }
                let mut k = 0;
                for r in 0..v.len() {
                    while k + 1 < known.len() && known[k + 1] <= r {
                        k += 1;
                    }
                    if v[r].is_some() {
                        continue;
                    }
                    let (a, b) = (known[k], known.get(k + 1).copied());
                    let va = v[a].unwrap_or_default();
                    v[r] = Some(match b {
                        _ if r < a => va,
                        Some(b) => {
                            let vb = v[b].unwrap_or_default();
                            va + (vb - va) * (r - a) as f64 / (b - a) as f64
                        }
                        None => va,
                    });
                }
            }
        }
    }
    let values = raw
        .into_iter()
        .map(|v| v.into_iter().map(Option::unwrap_or_default).collect())
        .collect();
    Ok((values, rows))
}

/// What [`CsvTable::select_with`] chooses by.
#[derive(Clone, Debug, Default)]
pub struct SelectOptions {
    /// Feature columns (default: the numeric, not time-like ones).
    pub features: Option<Vec<String>>,
    /// Target column (default: the last default feature).
    pub target: Option<String>,
    /// Time column naming rows in output (default: see select_with).
    pub time: Option<String>,
    /// Missing cells.
    pub missing: Missing,
}

/// A CSV's time column: its cells of the rows kept.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeColumn {
    /// Column name.
    pub name: String,
    /// One cell per row of the series.
    pub values: Vec<String>,
}

/// The columns of a series chosen from a CSV.
#[derive(Clone, Debug)]
pub struct Selection {
    /// Features and target, in row order.
    pub table: SeriesTable,
    /// The time column, if any.
    pub time: Option<TimeColumn>,
    /// The file's line of each row of `table`.
    pub rows: Vec<usize>,
    /// Time-like columns left out of the defaults, with the reason.
    pub unused_time: Vec<(String, &'static str)>,
}
