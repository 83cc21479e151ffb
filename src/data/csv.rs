//! CSV time series: an RFC 4180 reader, the choice of feature, target and
//! time columns, and the handling of missing cells.

use super::{SeriesTable, read_text};
use crate::error::{Error, Result, clip};
use std::ops::Range;
use std::path::{Path, PathBuf};

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

fn parse_number(cell: &str) -> Option<f64> {
    cell.parse::<f64>().ok()
}

/// Splits CSV text into records (RFC 4180 quoting) and hands each to
/// `each` with the line it starts on and its fields (unquoted, trimmed);
/// an unclosed quote or text after a closing quote is an error naming its
/// line.
fn csv_records(
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
fn check_header(source: &Path, line: usize, names: &[String]) -> Result<()> {
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

    /// A table of numbers given in memory: `values` row after row,
    /// `header.len()` per row, as if read from a CSV whose cells print them
    /// (Rust's shortest round-trip form, so each reads back the same f64;
    /// NaN is a missing cell). `source` names it in errors, and row r is
    /// "line r + 2" as in a file under a header line.
    pub fn from_values(
        source: impl Into<PathBuf>,
        header: Vec<String>,
        values: &[f64],
    ) -> Result<Self> {
        let source = source.into();
        check_header(&source, 1, &header)?;
        let n = header.len();
        if n == 0 || values.is_empty() || !values.len().is_multiple_of(n) {
            return Err(Error::file(
                &source,
                format!(
                    "{} values do not make rows of the {n} named columns",
                    values.len()
                ),
            ));
        }
        let (mut cells, mut spans) = (String::new(), Vec::with_capacity(values.len()));
        for v in values {
            let at = cells.len();
            cells.push_str(&v.to_string());
            spans.push(at..cells.len());
        }
        Ok(Self {
            source,
            header,
            cells,
            spans,
            lines: (2..values.len() / n + 2).collect(),
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

    /// The feature columns and the target column: the ones `o` names, else
    /// the numeric columns that are not time-like (`time_like`, with the
    /// reason), the target being the last of them. A feature named twice is
    /// an error.
    fn feature_and_target(
        &self,
        o: &SelectOptions,
        numeric: &[usize],
        time_like: &[(usize, &'static str)],
    ) -> Result<(Vec<usize>, usize)> {
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
        Ok((feat, tgt))
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
        let (feat, tgt) = self.feature_and_target(o, &numeric, &time_like)?;
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
fn fill_missing(
    csv: &CsvTable,
    cols: &[usize],
    mut raw: Vec<Vec<Option<f64>>>,
    missing: Missing,
) -> Result<(Vec<Vec<f64>>, Vec<usize>)> {
    let mut rows: Vec<usize> = (0..csv.num_rows()).collect();
    match missing {
        Missing::Error => refuse_missing(csv, cols, &raw)?,
        Missing::Drop => rows = drop_missing(csv, &mut raw)?,
        Missing::Ffill => {
            for (v, &c) in raw.iter_mut().zip(cols) {
                forward_fill(csv, c, v)?;
            }
        }
        Missing::Interpolate => {
            for (v, &c) in raw.iter_mut().zip(cols) {
                interpolate(csv, c, v)?;
            }
        }
    }
    let values = raw
        .into_iter()
        .map(|v| v.into_iter().map(Option::unwrap_or_default).collect())
        .collect();
    Ok((values, rows))
}

/// `--missing error`: the first missing cell (row by row, then column by
/// column) is an error naming its line and column.
fn refuse_missing(csv: &CsvTable, cols: &[usize], raw: &[Vec<Option<f64>>]) -> Result<()> {
    let first_missing = (0..csv.num_rows()).find_map(|r| {
        raw.iter()
            .zip(cols)
            .find(|(v, _)| v[r].is_none())
            .map(|(_, &c)| (r, c))
    });
    match first_missing {
        Some((r, c)) => Err(Error::file(
            &csv.source,
            format!(
                "{}: missing value `{}` (choose --missing drop, ffill or interpolate)",
                csv.at(r, c),
                clip(csv.cell(r, c))
            ),
        )),
        None => Ok(()),
    }
}

/// `--missing drop`: keeps the rows with a value in every column (at least
/// one) and returns them.
fn drop_missing(csv: &CsvTable, raw: &mut [Vec<Option<f64>>]) -> Result<Vec<usize>> {
    let rows: Vec<usize> = (0..csv.num_rows())
        .filter(|&r| raw.iter().all(|v| v[r].is_some()))
        .collect();
    if rows.is_empty() {
        return Err(Error::file(
            &csv.source,
            "--missing drop: every row has a missing value in the chosen columns",
        ));
    }
    for v in raw.iter_mut() {
        *v = rows.iter().map(|&r| v[r]).collect();
    }
    Ok(rows)
}

/// `--missing ffill` on column `c`: a missing cell takes the last value
/// above it; one with none above is an error.
fn forward_fill(csv: &CsvTable, c: usize, v: &mut [Option<f64>]) -> Result<()> {
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
    Ok(())
}

/// `--missing interpolate` on column `c`: a missing cell is interpolated
/// linearly between the nearest values above and below, or takes the
/// nearest value at either end; a column without values is an error.
fn interpolate(csv: &CsvTable, c: usize, v: &mut [Option<f64>]) -> Result<()> {
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
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\u{feff}date, temp ,\"load\",humidity\r\n\
                       2024-01-01,1.5,10,0.5\r\n\
                       \r\n\
                       2024-01-02,2.5,30,0.25\r\n\
                       2024-01-03,-3e0,20,1\r\n";

    #[test]
    fn csv_parses_and_selects_columns() {
        let t = CsvTable::parse(CSV, "x.csv").unwrap();
        assert_eq!(t.header, ["date", "temp", "load", "humidity"]);
        assert_eq!(t.num_rows(), 3);
        assert_eq!(t.line_of_row(1), 4); // the blank line 3 is skipped
        assert_eq!(t.cell(0, 0), "2024-01-01");
        assert_eq!(t.numeric_column_indices(), vec![1, 2, 3]);

        // Default: all numeric columns as features, the last as target.
        let s = t.select(None, None).unwrap();
        assert_eq!(s.feature_names, ["temp", "load", "humidity"]);
        assert_eq!(s.target_name, "humidity");
        assert_eq!(s.features[0], vec![1.5, 2.5, -3.0]);
        assert_eq!(s.target, vec![0.5, 0.25, 1.0]);

        let f = vec!["load".to_string()];
        let s = t.select(Some(&f), Some("temp")).unwrap();
        assert_eq!(s.feature_names, ["load"]);
        assert_eq!(s.features, vec![vec![10., 30., 20.]]);
        assert_eq!(
            (s.target_name.as_str(), s.target.clone()),
            ("temp", vec![1.5, 2.5, -3.0])
        );

        let e = t.select(None, Some("pressure")).unwrap_err().to_string();
        assert!(
            e.contains("x.csv") && e.contains("`pressure`") && e.contains("date, temp"),
            "{e}"
        );
        let e = t.select(None, Some("date")).unwrap_err().to_string();
        assert!(
            e.contains("line 2, column 1 (`date`)") && e.contains("not a number"),
            "{e}"
        );
        let dup = vec!["load".to_string(), "load".to_string()];
        assert!(t.select(Some(&dup), None).is_err());
    }

    #[test]
    fn csv_rejects_bad_input_with_line_numbers() {
        let e = CsvTable::parse("a,b\n1,2\n3\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("r.csv: line 3: 1 fields") && e.contains("2 columns"),
            "{e}"
        );
        let e = CsvTable::parse("a,b\n1,2\n3,4,5\n", "r.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3: 3 fields"), "{e}");

        let t = CsvTable::parse("a,b\n1,2\n3,x\n2,6\n", "n.csv").unwrap();
        // `b` is not numeric (decided on all rows): name it to see why.
        let e = t.select(None, Some("b")).unwrap_err().to_string();
        assert!(
            e.contains("n.csv") && e.contains("line 3, column 2 (`b`): `x` is not a number"),
            "{e}"
        );
        let t = CsvTable::parse("a,b\n1,2\n3,\n", "n.csv").unwrap();
        let e = t.select(None, None).unwrap_err().to_string();
        assert!(
            e.contains("line 3, column 2") && e.contains("missing value"),
            "{e}"
        );
        let t = CsvTable::parse("a,b\n1,2\n3,NaN\n", "n.csv").unwrap();
        let e = t.select(None, None).unwrap_err().to_string();
        assert!(e.contains("missing value `NaN`"), "{e}");
        let t = CsvTable::parse("a,b\n1,2\n3,inf\n", "n.csv").unwrap();
        let e = t.select(None, None).unwrap_err().to_string();
        assert!(e.contains("`inf` is not a finite number"), "{e}");

        assert!(
            CsvTable::parse("", "e.csv")
                .unwrap_err()
                .to_string()
                .contains("empty file")
        );
        assert!(
            CsvTable::parse("a,b\n\n", "e.csv")
                .unwrap_err()
                .to_string()
                .contains("no data rows")
        );
        let e = CsvTable::parse("a,a\n1,2\n", "d.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("both named `a`"), "{e}");
        let e = CsvTable::parse("a,,c\n1,2,3\n", "d.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("column 2 of the header has no name"), "{e}");
        let t = CsvTable::parse("name\nfoo\n", "s.csv").unwrap();
        assert!(
            t.select(None, None)
                .unwrap_err()
                .to_string()
                .contains("no numeric column")
        );
    }

    #[test]
    fn csv_quoted_fields_follow_rfc_4180() {
        let t = CsvTable::parse(
            "when,\"level, in m\",note\n\
             \"Jan 1, 2020\", \"1.5\" ,\"say \"\"hi\"\"\"\n\
             \"Jan 2,\n2020\",2,\"\"\n\
             Jan 3,3,x\r\n",
            "q.csv",
        )
        .unwrap();
        assert_eq!(t.header, ["when", "level, in m", "note"]);
        assert_eq!(t.num_rows(), 3);
        assert_eq!(t.cell(0, 0), "Jan 1, 2020");
        assert_eq!(t.cell(0, 2), "say \"hi\"");
        assert_eq!(t.cell(1, 0), "Jan 2,\n2020");
        assert_eq!(t.cell(1, 2), "");
        // A row starts on its first line; line breaks in quotes count.
        assert_eq!((t.line_of_row(1), t.line_of_row(2)), (3, 5));
        assert_eq!(t.numeric_column_indices(), vec![1]);
        let s = t.select(None, None).unwrap();
        assert_eq!(s.target, vec![1.5, 2.0, 3.0]);

        let e = CsvTable::parse("a,b\n1,2\n\"3,4\n5,6\n", "u.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("u.csv: line 3: a quoted field is never closed"),
            "{e}"
        );
        let e = CsvTable::parse("a,b\n1,\"2\"x\n", "u.csv")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("line 2: field 2 has text after its closing quote"),
            "{e}"
        );
        // A quoted empty line is a record, an empty one is not.
        let t = CsvTable::parse("a\n1\n\n  \n2\n", "b.csv").unwrap();
        assert_eq!(t.num_rows(), 2);
        let e = CsvTable::parse("a,b\n\"\"\n", "b.csv")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2: 1 fields"), "{e}");
    }

    #[test]
    fn csv_numeric_and_time_like_columns() {
        // `code` is numeric in the first row only; `t` counts up; `year`
        // is named like time; `x` holds a missing cell.
        let t = CsvTable::parse(
            "year,code,t,x,y\n2000,1,10,0.5,3\n2001,B,11,,1\n2002,3,12,0.2,2\n",
            "c.csv",
        )
        .unwrap();
        assert_eq!(t.numeric_column_indices(), vec![0, 2, 3, 4]);
        assert_eq!(t.time_like(0), Some("named like a time index"));
        assert_eq!(t.time_like(2), Some("integers increasing row by row"));
        assert_eq!(t.time_like(3), None);
        assert_eq!(t.time_like(4), None);
        let o = SelectOptions {
            missing: Missing::Interpolate,
            ..Default::default()
        };
        let s = t.select_with(&o).unwrap();
        assert_eq!(s.table.feature_names, ["x", "y"]);
        assert_eq!(s.table.features[0], vec![0.5, 0.35, 0.2]);
        assert_eq!(s.time.as_ref().map(|c| c.name.as_str()), Some("year"));
        assert_eq!(s.unused_time.len(), 2);
        assert_eq!(s.rows, vec![2, 3, 4]);
        // Named, a time-like column is a feature.
        let o = SelectOptions {
            features: Some(vec!["t".into(), "y".into()]),
            time: Some("code".into()),
            ..Default::default()
        };
        let s = t.select_with(&o).unwrap();
        assert_eq!(s.table.feature_names, ["t", "y"]);
        assert_eq!(s.time.unwrap().values, ["1", "B", "3"]);
    }

    #[test]
    fn csv_missing_cells() {
        let t = CsvTable::parse("a,y\n1,NA\n2,4\n,6\n3,\n5,10\n", "m.csv").unwrap();
        let sel = |m| {
            t.select_with(&SelectOptions {
                missing: m,
                ..Default::default()
            })
        };
        let e = sel(Missing::Error).unwrap_err().to_string();
        assert!(
            e.contains("m.csv: line 2, column 2 (`y`): missing value `NA`")
                && e.contains("--missing"),
            "{e}"
        );
        let d = sel(Missing::Drop).unwrap();
        assert_eq!(d.table.features, vec![vec![2.0, 5.0], vec![4.0, 10.0]]);
        assert_eq!(d.rows, vec![3, 6]);
        let e = sel(Missing::Ffill).unwrap_err().to_string();
        assert!(
            e.contains("line 2, column 2") && e.contains("no value above"),
            "{e}"
        );
        let i = sel(Missing::Interpolate).unwrap();
        assert_eq!(i.table.features[0], vec![1.0, 2.0, 2.5, 3.0, 5.0]);
        assert_eq!(i.table.target, vec![4.0, 4.0, 6.0, 8.0, 10.0]);
        let t = CsvTable::parse("a,y\n1,1\n2,\n,6\n", "m.csv").unwrap();
        let f = t
            .select_with(&SelectOptions {
                missing: Missing::Ffill,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(
            f.table.features,
            vec![vec![1.0, 2.0, 2.0], vec![1.0, 1.0, 6.0]]
        );
        assert!(Missing::parse("zero").is_err());
    }

    #[test]
    fn csv_reads_files() {
        let dir = std::env::temp_dir().join(format!("lstm_wgpu_data_{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.csv");
        std::fs::write(&p, "x,y\n1,2\n3,4\n").unwrap();
        let t = CsvTable::read(&p).unwrap();
        assert_eq!(t.select(None, None).unwrap().target, vec![2.0, 4.0]);
        std::fs::write(&p, b"x,y\n1,\xff\n").unwrap();
        let e = CsvTable::read(&p).unwrap_err().to_string();
        assert!(e.contains("not valid UTF-8 at byte 6 (line 2)"), "{e}");
        let e = CsvTable::read(dir.join("missing.csv"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("missing.csv") && e.contains("cannot read"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
