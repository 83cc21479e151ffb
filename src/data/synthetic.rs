//! The built-in generated datasets: the `sine` and `mackey-glass` series,
//! the adding problem, the copy-memory task and an English-like text, all
//! seeded and deterministic.

use super::{Rng, SeriesBatch, SeriesTable, Split, TokenBatch, derive_seed};
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// The built-in datasets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Builtin {
    /// A mixture of 2–3 sines plus Gaussian noise (a series).
    Sine,
    /// The Mackey–Glass delay equation (a series).
    MackeyGlass,
    /// Hochreiter's adding problem (sequence regression).
    Adding,
    /// The copy-memory task (token sequences).
    Copy,
    /// A generated English-like text.
    Text,
}

impl Builtin {
    /// All names, as accepted by [`Builtin::from_name`].
    pub const NAMES: [&'static str; 5] = ["sine", "mackey-glass", "adding", "copy", "text"];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::Sine => "sine",
            Builtin::MackeyGlass => "mackey-glass",
            Builtin::Adding => "adding",
            Builtin::Copy => "copy",
            Builtin::Text => "text",
        }
    }

    /// Parses a name (also `mackey_glass`, `mackeyglass`, `mg`).
    pub fn from_name(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "sine" => Builtin::Sine,
            "mackey-glass" | "mackey_glass" | "mackeyglass" | "mg" => Builtin::MackeyGlass,
            "adding" => Builtin::Adding,
            "copy" => Builtin::Copy,
            "text" => Builtin::Text,
            _ => {
                return Err(Error::Invalid(format!(
                    "unknown dataset `{s}`; the built-in datasets are: {}",
                    Self::NAMES.join(", ")
                )));
            }
        })
    }

    /// Whether the dataset is a series for [`builtin_series`].
    pub fn is_series(self) -> bool {
        matches!(self, Builtin::Sine | Builtin::MackeyGlass)
    }
}

impl FromStr for Builtin {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Self::from_name(s)
    }
}

impl fmt::Display for Builtin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Default length of the generated series.
pub const DEFAULT_SERIES_LEN: usize = 10_000;
/// Default noise standard deviation of the `sine` dataset.
pub const SINE_NOISE_STD: f64 = 0.05;

fn sine_parts(len: usize, noise_std: f64, seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let n_comp = 2 + rng.below(2);
    let comps: Vec<(f64, f64, f64)> = (0..n_comp)
        .map(|_| {
            let period = rng.uniform(8.0, 64.0);
            let amp = rng.uniform(0.4, 1.0);
            let phase = rng.uniform(0.0, std::f64::consts::TAU);
            (std::f64::consts::TAU / period, amp, phase)
        })
        .collect();
    let clean: Vec<f64> = (0..len)
        .map(|t| {
            comps
                .iter()
                .map(|&(w, a, p)| a * (w * t as f64 + p).sin())
                .sum()
        })
        .collect();
    let noisy = clean
        .iter()
        .map(|&c| c + noise_std * rng.normal())
        .collect();
    (clean, noisy)
}

/// `len` samples of `Σ a_i sin(ω_i t + φ_i) + noise_std · N(0, 1)` with 2 or 3
/// components whose periods (8–64 steps), amplitudes (0.4–1) and phases are
/// drawn from `seed`.
pub fn sine_mixture(len: usize, noise_std: f64, seed: u64) -> Vec<f64> {
    sine_parts(len, noise_std, seed).1
}

/// `len` unit-step samples of the Mackey–Glass equation
/// `dx/dt = β x(t−τ) / (1 + x(t−τ)^n) − γ x(t)` with τ = 17, β = 0.2,
/// γ = 0.1, n = 10, integrated by RK4 with step 0.1 from a history of
/// `1.2 ± 0.1` (drawn from `seed`), after a 500-unit warm-up. The values
/// stay within about (0.2, 1.5); [`SeriesDataset`](super::SeriesDataset) normalizes them.
pub fn mackey_glass(len: usize, seed: u64) -> Vec<f64> {
    const TAU: usize = 17;
    const SUB: usize = 10; // RK steps per unit of time
    const WARMUP: usize = 500;
    let (beta, gamma, n_exp, h) = (0.2f64, 0.1f64, 10i32, 1.0 / SUB as f64);
    let d = TAU * SUB;
    let mut rng = Rng::new(seed);
    let steps = (WARMUP + len) * SUB;
    let mut x: Vec<f64> = Vec::with_capacity(d + 1 + steps);
    for _ in 0..=d {
        x.push(1.2 + rng.uniform(-0.1, 0.1));
    }
    let f = |x: f64, xd: f64| beta * xd / (1.0 + xd.powi(n_exp)) - gamma * x;
    for j in d..d + steps {
        let (xd0, xd1) = (x[j - d], x[j - d + 1]);
        let xdm = 0.5 * (xd0 + xd1);
        let xj = x[j];
        let k1 = f(xj, xd0);
        let k2 = f(xj + 0.5 * h * k1, xdm);
        let k3 = f(xj + 0.5 * h * k2, xdm);
        let k4 = f(xj + h * k3, xd1);
        x.push(xj + h / 6.0 * (k1 + 2.0 * k2 + 2.0 * k3 + k4));
    }
    (0..len).map(|m| x[d + (WARMUP + m) * SUB]).collect()
}

/// A generated series dataset (`sine` or `mackey-glass`) as a univariate
/// table named after it.
pub fn builtin_series(kind: Builtin, len: usize, seed: u64) -> Result<SeriesTable> {
    let values = match kind {
        Builtin::Sine => sine_mixture(len, SINE_NOISE_STD, seed),
        Builtin::MackeyGlass => mackey_glass(len, seed),
        other => {
            return Err(Error::Invalid(format!(
                "`{other}` is not a series dataset (the series are: sine, mackey-glass)"
            )));
        }
    };
    SeriesTable::univariate(kind.name(), values)
}

/// Hochreiter's adding problem: `T` steps of 2 features, a value `U(0, 1)`
/// and a marker (0 or 1); exactly two steps are marked, one in the first
/// half (`0..T/2`) and one in the second (`T/2..T`); the target, read after
/// the last step, is the sum of the two marked values (in `[0, 2]`).
/// Predicting 1 always gives a mean squared error of 1/6
/// ([`AddingTask::BASELINE_MSE`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddingTask {
    /// `T` (at least 2).
    pub seq_len: usize,
    /// Seed of all batches.
    pub seed: u64,
}

impl AddingTask {
    /// Features per step.
    pub const NUM_FEATURES: usize = 2;
    /// The mean squared error of always predicting 1.
    pub const BASELINE_MSE: f64 = 1.0 / 6.0;

    /// A task of `seq_len` steps.
    pub fn new(seq_len: usize, seed: u64) -> Result<Self> {
        if seq_len < 2 {
            return Err(Error::Invalid(format!(
                "the adding problem needs at least 2 steps, got {seq_len}"
            )));
        }
        Ok(Self { seq_len, seed })
    }

    /// Batch number `index` of `split`: inputs `[T, B, 2]`, targets `[B, 1]`;
    /// the same arguments give the same batch.
    pub fn batch(&self, split: Split, index: u64, batch: usize) -> Result<SeriesBatch> {
        Ok(self.batch_lengths(split, index, batch, self.seq_len)?.0)
    }

    /// Like [`AddingTask::batch`], but sequence b is `len_b` steps long,
    /// drawn uniformly from `min_len..=T` (from a stream of its own): its
    /// markers lie in `0..len_b/2` and `len_b/2..len_b`, and inputs past
    /// `len_b` are 0. With `min_len = T` it is exactly [`AddingTask::batch`].
    /// Returns the batch and the lengths.
    pub fn batch_lengths(
        &self,
        split: Split,
        index: u64,
        batch: usize,
        min_len: usize,
    ) -> Result<(SeriesBatch, Vec<usize>)> {
        if batch == 0 {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        let t_n = self.seq_len;
        if min_len < 2 || min_len > t_n {
            return Err(Error::Invalid(format!(
                "the adding problem's minimum length must be in 2..={t_n}, got {min_len}"
            )));
        }
        let seed = derive_seed(derive_seed(self.seed, split.stream()), index);
        let mut rng = Rng::new(seed);
        let mut len_rng = Rng::new(derive_seed(seed, 0x4C45_4E53));
        let lengths: Vec<usize> = (0..batch)
            .map(|_| {
                if min_len == t_n {
                    t_n
                } else {
                    min_len + len_rng.below(t_n - min_len + 1)
                }
            })
            .collect();
        let mut inputs = vec![0f32; t_n * batch * 2];
        let mut targets = vec![0f32; batch];
        for (b, target) in targets.iter_mut().enumerate() {
            let l = lengths[b];
            let half = l / 2;
            let m1 = rng.below(half);
            let m2 = half + rng.below(l - half);
            let mut sum = 0f32;
            for t in 0..l {
                let v = rng.next_f64() as f32;
                let o = (t * batch + b) * 2;
                inputs[o] = v;
                if t == m1 || t == m2 {
                    inputs[o + 1] = 1.0;
                    sum += v;
                }
            }
            *target = sum;
        }
        Ok((
            SeriesBatch {
                inputs,
                targets,
                seq_len: t_n,
                batch,
                num_features: 2,
                horizon: 1,
            },
            lengths,
        ))
    }
}

/// The copy-memory task. Ids: 0 is the blank, `1..=alphabet` the symbols,
/// `alphabet + 1` the delimiter. The input is `K` random symbols, `D − 1`
/// blanks, the delimiter and `K` blanks; the target is `K + D` blanks and
/// then the `K` symbols: `T = 2K + D` steps, a target at every step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CopyTask {
    /// `K`: symbols to remember.
    pub symbols: usize,
    /// `D`: steps from the last symbol to the delimiter, inclusive.
    pub delay: usize,
    /// Distinct symbols.
    pub alphabet: usize,
    /// Seed of all batches.
    pub seed: u64,
}

impl CopyTask {
    /// The blank id.
    pub const BLANK: u32 = 0;

    /// A task remembering `symbols` symbols of `alphabet` over `delay` steps.
    pub fn new(symbols: usize, delay: usize, alphabet: usize, seed: u64) -> Result<Self> {
        if symbols == 0 || delay == 0 || alphabet == 0 {
            return Err(Error::Invalid(format!(
                "the copy task needs at least 1 symbol, 1 delay step and a 1-letter alphabet \
                 (got {symbols} symbols, delay {delay}, alphabet {alphabet})"
            )));
        }
        Ok(Self {
            symbols,
            delay,
            alphabet,
            seed,
        })
    }

    /// The delimiter id.
    pub fn delimiter(&self) -> u32 {
        self.alphabet as u32 + 1
    }

    /// Ids in use: blank, symbols, delimiter.
    pub fn vocab_size(&self) -> usize {
        self.alphabet + 2
    }

    /// `T = 2K + D`.
    pub fn seq_len(&self) -> usize {
        2 * self.symbols + self.delay
    }

    /// Cross-entropy per step of a model that knows the layout but not the
    /// symbols: `K ln(alphabet) / T`.
    pub fn baseline_cross_entropy(&self) -> f64 {
        self.symbols as f64 * (self.alphabet as f64).ln() / self.seq_len() as f64
    }

    /// Batch number `index` of `split`: inputs and targets `[T, B]`; the same
    /// arguments give the same batch.
    pub fn batch(&self, split: Split, index: u64, batch: usize) -> Result<TokenBatch> {
        if batch == 0 {
            return Err(Error::Invalid("the batch size must be at least 1".into()));
        }
        let (k_n, t_n) = (self.symbols, self.seq_len());
        let mut rng = Rng::new(derive_seed(derive_seed(self.seed, split.stream()), index));
        let mut inputs = vec![Self::BLANK; t_n * batch];
        let mut targets = vec![Self::BLANK; t_n * batch];
        for b in 0..batch {
            for i in 0..k_n {
                let s = 1 + rng.below(self.alphabet) as u32;
                inputs[i * batch + b] = s;
                targets[(k_n + self.delay + i) * batch + b] = s;
            }
            inputs[(k_n + self.delay - 1) * batch + b] = self.delimiter();
        }
        Ok(TokenBatch {
            inputs,
            targets,
            seq_len: t_n,
            batch,
        })
    }
}

/// Default size of [`generated_text`].
pub const DEFAULT_TEXT_BYTES: usize = 48 * 1024;

const G_NAMES: &[&str] = &[
    "Alice", "Bob", "Clara", "David", "Emma", "Frank", "Grace", "Henry",
];
const G_DETS: &[&str] = &["the", "a", "every", "that", "some", "this", "one", "no"];
const G_ADJS: &[&str] = &[
    "old", "small", "quiet", "bright", "green", "little", "strange", "happy", "cold", "young",
    "dark", "gentle", "heavy", "red", "tired", "clever", "empty", "warm", "long", "brave",
];
const G_NOUNS: &[&str] = &[
    "cat", "dog", "river", "house", "garden", "child", "teacher", "bird", "window", "road", "tree",
    "king", "letter", "city", "boat", "horse", "friend", "book", "mountain", "farmer", "song",
    "door", "stone", "village", "lamp", "forest", "ship", "girl", "boy", "market",
];
const G_VT: &[&str] = &[
    "saw",
    "found",
    "followed",
    "loved",
    "watched",
    "carried",
    "opened",
    "painted",
    "remembered",
    "helped",
    "built",
    "lost",
    "heard",
    "visited",
    "crossed",
    "wanted",
];
const G_VI: &[&str] = &[
    "slept", "waited", "smiled", "laughed", "arrived", "stopped", "sang", "fell", "walked",
    "listened", "left", "rested",
];
const G_ADVS: &[&str] = &[
    "slowly",
    "quietly",
    "again",
    "today",
    "suddenly",
    "happily",
    "at night",
    "in the morning",
    "once more",
    "together",
];
const G_PREPS: &[&str] = &[
    "near", "behind", "under", "across", "beside", "inside", "over", "toward",
];
const G_CONJS: &[&str] = &["and", "but", "so", "because", "while", "when"];
const G_SAYS: &[&str] = &["said", "thought", "knew", "believed", "wrote", "heard"];

/// Index in `0..n` with probability ∝ 1/(i+1) (Zipf-like word frequencies).
fn zipf(rng: &mut Rng, n: usize) -> usize {
    let h: f64 = (1..=n).map(|i| 1.0 / i as f64).sum();
    let mut u = rng.next_f64() * h;
    for i in 0..n {
        u -= 1.0 / (i + 1) as f64;
        if u < 0.0 {
            return i;
        }
    }
    n - 1
}

fn pick<'a>(rng: &mut Rng, words: &[&'a str]) -> &'a str {
    words[zipf(rng, words.len())]
}

fn g_np(rng: &mut Rng, w: &mut Vec<&str>) {
    if rng.below(6) == 0 {
        w.push(pick(rng, G_NAMES));
        return;
    }
    w.push(pick(rng, G_DETS));
    if rng.below(2) == 0 {
        w.push(pick(rng, G_ADJS));
    }
    w.push(pick(rng, G_NOUNS));
}

fn g_clause(rng: &mut Rng, w: &mut Vec<&str>) {
    g_np(rng, w);
    if rng.below(2) == 0 {
        w.push(pick(rng, G_VT));
        g_np(rng, w);
    } else {
        w.push(pick(rng, G_VI));
        if rng.below(2) == 0 {
            w.push(pick(rng, G_ADVS));
        }
    }
    if rng.below(3) == 0 {
        w.push(pick(rng, G_PREPS));
        g_np(rng, w);
    }
}

fn g_sentence(rng: &mut Rng, out: &mut String) {
    let mut w: Vec<&str> = Vec::new();
    let end = match rng.below(10) {
        0..=4 => {
            g_clause(rng, &mut w);
            "."
        }
        5 | 6 => {
            g_clause(rng, &mut w);
            w.push(",");
            w.push(pick(rng, G_CONJS));
            g_clause(rng, &mut w);
            "."
        }
        7 => {
            w.push(pick(rng, G_NAMES));
            w.push(pick(rng, G_SAYS));
            w.push("that");
            g_clause(rng, &mut w);
            "."
        }
        8 => {
            g_np(rng, &mut w);
            w.push("was");
            w.push(pick(rng, G_ADJS));
            "."
        }
        _ => {
            w.push("did");
            g_np(rng, &mut w);
            w.push("see");
            g_np(rng, &mut w);
            "?"
        }
    };
    let start = out.len();
    for (i, word) in w.iter().enumerate() {
        let mut word = *word;
        if word == "a"
            && w.get(i + 1)
                .is_some_and(|n| n.starts_with(['a', 'e', 'i', 'o', 'u']))
        {
            word = "an";
        }
        if i > 0 && word != "," {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.push_str(end);
    // Capitalize the sentence's first letter.
    if let Some(c) = out[start..].chars().next() {
        let up: String = c.to_uppercase().collect();
        out.replace_range(start..start + c.len_utf8(), &up);
    }
}

/// About `bytes` bytes (a little more: whole sentences) of English-like
/// ASCII text from a small seeded grammar with Zipf-distributed word
/// choices, in paragraphs of 3–7 sentences, one paragraph per line.
pub fn generated_text(bytes: usize, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::with_capacity(bytes + 256);
    while out.len() < bytes {
        let n = 3 + rng.below(5);
        for i in 0..n {
            if i > 0 {
                out.push(' ');
            }
            g_sentence(&mut rng, &mut out);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{SeriesConfig, SeriesDataset, TextConfig, TextData, Vocab};

    #[test]
    fn sine_is_deterministic_with_the_right_noise() {
        let a = sine_mixture(5000, 0.1, 3);
        assert_eq!(a, sine_mixture(5000, 0.1, 3));
        assert_ne!(a, sine_mixture(5000, 0.1, 4));
        let (clean, noisy) = sine_parts(20_000, 0.1, 3);
        let r: Vec<f64> = noisy.iter().zip(&clean).map(|(n, c)| n - c).collect();
        let m = r.iter().sum::<f64>() / r.len() as f64;
        let sd = (r.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / r.len() as f64).sqrt();
        assert!(m.abs() < 0.005 && (sd - 0.1).abs() < 0.005, "{m} {sd}");
        let amp = clean.iter().fold(0f64, |a, v| a.max(v.abs()));
        assert!(amp > 0.4 && amp <= 3.0, "{amp}");
        let (clean0, noisy0) = sine_parts(100, 0.0, 3);
        assert_eq!(clean0, noisy0);
        let t = builtin_series(Builtin::Sine, 300, 1).unwrap();
        assert_eq!(
            (t.len(), t.num_features(), t.target_name.as_str()),
            (300, 1, "sine")
        );
    }

    #[test]
    fn mackey_glass_is_bounded_chaotic_and_deterministic() {
        let a = mackey_glass(3000, 0);
        assert_eq!(a, mackey_glass(3000, 0));
        assert_ne!(a, mackey_glass(3000, 1));
        let (lo, hi) = a
            .iter()
            .fold((f64::MAX, f64::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        assert!(lo > 0.2 && hi < 1.5, "{lo} {hi}");
        let m = a.iter().sum::<f64>() / a.len() as f64;
        let sd = (a.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / a.len() as f64).sqrt();
        assert!(sd > 0.1, "{sd}");
        assert!(hi - lo > 0.6, "{lo} {hi}");
        // Not periodic with a short period: values 50 apart differ.
        let d50 = a.windows(51).map(|w| (w[0] - w[50]).abs()).sum::<f64>() / (a.len() - 50) as f64;
        assert!(d50 > 0.05, "{d50}");
        let t = builtin_series(Builtin::MackeyGlass, 500, 2).unwrap();
        let d = SeriesDataset::new(&t, &SeriesConfig::default()).unwrap();
        assert_eq!((d.train_rows, d.val_rows), (450, 50));
        assert!(builtin_series(Builtin::Copy, 10, 0).is_err());
    }

    #[test]
    fn adding_task_with_lengths() {
        let task = AddingTask::new(20, 4).unwrap();
        let (b, lens) = task.batch_lengths(Split::Train, 3, 32, 6).unwrap();
        assert_eq!(lens.len(), 32);
        assert!(lens.iter().all(|&l| (6..=20).contains(&l)));
        assert!(lens.iter().any(|&l| l < 20) && lens.iter().any(|&l| l != lens[0]));
        for (j, &l) in lens.iter().enumerate() {
            let mut marked = Vec::new();
            for t in 0..20 {
                let o = (t * 32 + j) * 2;
                if t >= l {
                    assert_eq!((b.inputs[o], b.inputs[o + 1]), (0.0, 0.0), "padding");
                } else if b.inputs[o + 1] == 1.0 {
                    marked.push((t, b.inputs[o]));
                }
            }
            assert_eq!(marked.len(), 2);
            assert!(marked[0].0 < l / 2 && marked[1].0 >= l / 2);
            assert_eq!(b.targets[j], marked[0].1 + marked[1].1);
        }
        // The full length is the plain batch; bad minimums are refused.
        let (full, l) = task.batch_lengths(Split::Val, 1, 8, 20).unwrap();
        assert_eq!(full, task.batch(Split::Val, 1, 8).unwrap());
        assert_eq!(l, vec![20; 8]);
        for m in [1, 21] {
            let e = task.batch_lengths(Split::Train, 0, 8, m).unwrap_err();
            assert!(e.to_string().contains("2..=20"), "{e}");
        }
    }

    #[test]
    fn adding_task() {
        let task = AddingTask::new(50, 9).unwrap();
        let b = task.batch(Split::Train, 0, 64).unwrap();
        assert_eq!(b, task.batch(Split::Train, 0, 64).unwrap());
        assert_ne!(b, task.batch(Split::Train, 1, 64).unwrap());
        assert_ne!(b, task.batch(Split::Val, 0, 64).unwrap());
        assert_eq!(
            (b.seq_len, b.batch, b.num_features, b.horizon),
            (50, 64, 2, 1)
        );
        assert_eq!(b.targets.len(), 64);
        let mut total = 0f64;
        for j in 0..64 {
            let mut marked = Vec::new();
            for t in 0..50 {
                let o = (t * 64 + j) * 2;
                assert!((0.0..1.0).contains(&b.inputs[o]));
                match b.inputs[o + 1] {
                    1.0 => marked.push((t, b.inputs[o])),
                    0.0 => {}
                    m => panic!("marker {m}"),
                }
            }
            assert_eq!(marked.len(), 2);
            assert!(marked[0].0 < 25 && marked[1].0 >= 25);
            let sum = marked[0].1 + marked[1].1;
            assert_eq!(b.targets[j], sum);
            assert!((0.0..=2.0).contains(&b.targets[j]));
            total += sum as f64;
        }
        let mean = total / 64.0;
        assert!((mean - 1.0).abs() < 0.2, "{mean}");
        let b2 = AddingTask::new(2, 0)
            .unwrap()
            .batch(Split::Train, 0, 8)
            .unwrap();
        assert!(b2.inputs.chunks(2).all(|p| p[1] == 1.0)); // both steps marked
        assert!(AddingTask::new(1, 0).is_err());
        assert!(task.batch(Split::Train, 0, 0).is_err());
    }

    #[test]
    fn copy_task() {
        let task = CopyTask::new(3, 5, 4, 1).unwrap();
        assert_eq!(
            (task.seq_len(), task.vocab_size(), task.delimiter()),
            (11, 6, 5)
        );
        let b = task.batch(Split::Train, 2, 7).unwrap();
        assert_eq!(b, task.batch(Split::Train, 2, 7).unwrap());
        assert_ne!(b, task.batch(Split::Val, 2, 7).unwrap());
        assert_eq!((b.seq_len, b.batch), (11, 7));
        for j in 0..7 {
            let x: Vec<u32> = (0..11).map(|t| b.inputs[t * 7 + j]).collect();
            let y: Vec<u32> = (0..11).map(|t| b.targets[t * 7 + j]).collect();
            assert!(x[..3].iter().all(|&s| (1..=4).contains(&s)));
            assert_eq!(&x[3..7], &[0, 0, 0, 0]);
            assert_eq!(x[7], 5);
            assert_eq!(&x[8..], &[0, 0, 0]);
            assert_eq!(&y[..8], &[0; 8]);
            assert_eq!(&y[8..], &x[..3]);
        }
        assert!((task.baseline_cross_entropy() - 3.0 * 4f64.ln() / 11.0).abs() < 1e-12);
        assert!(CopyTask::new(0, 5, 4, 1).is_err());
    }

    #[test]
    fn generated_text_is_english_like_and_deterministic() {
        let t = generated_text(DEFAULT_TEXT_BYTES, 0);
        assert_eq!(t, generated_text(DEFAULT_TEXT_BYTES, 0));
        assert_ne!(t, generated_text(DEFAULT_TEXT_BYTES, 1));
        assert!(t.len() >= DEFAULT_TEXT_BYTES && t.len() < DEFAULT_TEXT_BYTES + 2000);
        assert!(t.is_ascii());
        let v = Vocab::from_text(&t).unwrap();
        assert!((30..70).contains(&v.len()), "{}", v.len());
        assert!(
            t.lines()
                .all(|l| l.starts_with(|c: char| c.is_ascii_uppercase()))
        );
        assert!(t.contains(". ") && t.contains(", ") && t.contains("an "));
        assert!(!t.contains(" a o") && !t.contains("  "));
        let d = TextData::new(&t, &TextConfig::default()).unwrap();
        assert!(d.train.num_windows() > 50 && d.val.is_some());
    }

    #[test]
    fn builtin_names() {
        for n in Builtin::NAMES {
            let b: Builtin = n.parse().unwrap();
            assert_eq!(b.to_string(), n);
        }
        assert_eq!(Builtin::from_name("MG").unwrap(), Builtin::MackeyGlass);
        let e = Builtin::from_name("lorenz").unwrap_err().to_string();
        assert!(e.contains("lorenz") && e.contains("mackey-glass"), "{e}");
        assert!(Builtin::Sine.is_series() && !Builtin::Text.is_series());
    }
}
