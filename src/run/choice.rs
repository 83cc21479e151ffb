//! Settings with named values (`--task`, `--optimizer`, `--norm`, ...): one
//! enum each, read from flags, `--config` files, keyword arguments and
//! checkpoints under the same kebab-case names (`FromStr`, serde), and
//! refused with the flag's name.

use crate::data::{Builtin, Missing};
use crate::error::{Error, Result};
use crate::model::norm::NormKind;
use crate::train::{WhhInit, WihInit};

/// `a, b or c`.
pub fn or_list<S: AsRef<str>>(names: &[S]) -> String {
    match names {
        [] => String::new(),
        [one] => one.as_ref().to_string(),
        [rest @ .., last] => {
            let rest: Vec<&str> = rest.iter().map(AsRef::as_ref).collect();
            format!("{} or {}", rest.join(", "), last.as_ref())
        }
    }
}

macro_rules! choice {
    ($(#[$m:meta])* $name:ident, $flag:literal, default $default:ident {
        $($(#[$vm:meta])* $v:ident = $s:literal),+ $(,)?
    }) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum $name {
            $($(#[$vm])* $v),+
        }

        impl $name {
            pub const ALL: &[$name] = &[$($name::$v),+];
            pub const NAMES: &[&str] = &[$($s),+];

            /// The name on the command line, in TOML and in checkpoints.
            pub fn name(self) -> &'static str {
                match self {
                    $($name::$v => $s),+
                }
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name::$default
            }
        }

        impl std::str::FromStr for $name {
            type Err = Error;
            fn from_str(s: &str) -> Result<Self> {
                Self::ALL.iter().copied().find(|v| v.name() == s).ok_or_else(|| {
                    Error::Invalid(format!("{} {s}: expected {}", $flag, or_list(Self::NAMES)))
                })
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.name())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }

    };
}

choice!(
    /// What a run learns: the next token of a text, or a series' next values.
    Task, "--task", default Text {
        Text = "text",
        Series = "series",
    }
);

choice!(
    /// A built-in dataset (used when no `--data` is given).
    Dataset, "--dataset", default Text {
        Text = "text",
        Copy = "copy",
        Sine = "sine",
        MackeyGlass = "mackey-glass",
        Adding = "adding",
    }
);

impl Dataset {
    /// The task the dataset serves.
    pub fn task(self) -> Task {
        match self {
            Dataset::Text | Dataset::Copy => Task::Text,
            Dataset::Sine | Dataset::MackeyGlass | Dataset::Adding => Task::Series,
        }
    }

    /// The library's generator of it.
    pub fn builtin(self) -> Builtin {
        match self {
            Dataset::Text => Builtin::Text,
            Dataset::Copy => Builtin::Copy,
            Dataset::Sine => Builtin::Sine,
            Dataset::MackeyGlass => Builtin::MackeyGlass,
            Dataset::Adding => Builtin::Adding,
        }
    }
}

choice!(
    /// `--optimizer`.
    Optimizer, "--optimizer", default Adam {
        Sgd = "sgd",
        Adam = "adam",
        Adamw = "adamw",
        /// AdamW with AMSGrad.
        Amsgrad = "amsgrad",
    }
);

impl Optimizer {
    /// AdamW and AMSGrad decay weights decoupled (default 1e-2).
    pub fn decoupled(self) -> bool {
        matches!(self, Optimizer::Adamw | Optimizer::Amsgrad)
    }
}

choice!(
    /// `--schedule`: the learning rate over the run.
    Schedule, "--schedule", default Constant {
        Constant = "constant",
        Cosine = "cosine",
        Step = "step",
    }
);

choice!(
    /// `--cell`: the library's [`crate::kernels::cell::Cell`]s.
    CellChoice, "--cell", default Lstm {
        Lstm = "lstm",
        Gru = "gru",
        Indrnn = "indrnn",
    }
);

/// A cell file as `--cell-file PATH` reads it: its name (the file's, no
/// directory), its source, and the cell naga found in it. A missing or
/// unreadable file, or a malformed cell, is an error naming the file.
pub struct CellFile {
    /// The file's name.
    pub name: String,
    /// Its WGSL.
    pub source: String,
    /// The cell it declares.
    pub cell: crate::kernels::cell::Cell,
}

/// The cell of `--cell`, `--activation` and `--cell-file` (the command line keeps
/// `--cell` and `--cell-file` apart).
pub fn cell_of(
    cell: CellChoice,
    act: Option<ActivationChoice>,
    file: Option<&std::path::Path>,
) -> Result<crate::kernels::cell::Cell> {
    match file {
        Some(p) if act.is_some() => Err(Error::Invalid(format!(
            "--activation sets IndRNN's activation; --cell-file {} is a cell of its own",
            p.display()
        ))),
        Some(p) => Ok(CellFile::read(p)?.cell),
        None => {
            cell.check_activation(act)?;
            Ok(cell.cell(act.unwrap_or_default()))
        }
    }
}

impl CellFile {
    /// Reads and validates `path`.
    pub fn read(path: &std::path::Path) -> Result<Self> {
        let source = std::fs::read_to_string(path).map_err(|e| Error::file(path, e))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| Error::file(path, "--cell-file: not a file name"))?;
        let cell = crate::kernels::cell::Cell::from_wgsl(&name, &source)?;
        Ok(Self { name, source, cell })
    }
}

choice!(
    /// `--head`: what a series model's head reads.
    HeadChoice, "--head", default Last {
        /// The last valid step's output.
        Last = "last",
        /// Attention pooling over every valid step, with the last one.
        Attention = "attention",
    }
);

choice!(
    /// `--attention`: the scores of `--head attention`.
    AttentionChoice, "--attention", default Dot {
        /// Each output's similarity to the last one.
        Dot = "dot",
        /// A trained query.
        Learned = "learned",
    }
);

impl AttentionChoice {
    /// The library's [`crate::train::Attention`].
    pub fn attention(self) -> crate::train::Attention {
        match self {
            AttentionChoice::Dot => crate::train::Attention::Dot,
            AttentionChoice::Learned => crate::train::Attention::Learned,
        }
    }
}

choice!(
    /// `--activation`: IndRNN's.
    ActivationChoice, "--activation", default Relu {
        Relu = "relu",
        Tanh = "tanh",
    }
);

impl CellChoice {
    /// The cell, with IndRNN's activation `act`.
    pub fn cell(self, act: ActivationChoice) -> crate::kernels::cell::Cell {
        match self {
            CellChoice::Lstm => crate::kernels::cell::Cell::Lstm,
            CellChoice::Gru => crate::kernels::cell::Cell::Gru,
            CellChoice::Indrnn => crate::kernels::cell::Cell::IndRnn {
                relu: act == ActivationChoice::Relu,
            },
        }
    }

    /// `--activation act` for this cell: IndRNN's only.
    pub fn check_activation(self, act: Option<ActivationChoice>) -> Result<()> {
        match (self, act) {
            (CellChoice::Indrnn, _) | (_, None) => Ok(()),
            (c, Some(a)) => Err(Error::Invalid(format!(
                "--activation {a}: it sets IndRNN's activation; --cell {c} has its own"
            ))),
        }
    }
}

choice!(
    /// `--norm`: none, or one of the library's [`NormKind`]s.
    NormChoice, "--norm", default None {
        None = "none",
        Layer = "layer",
        LayerCell = "layer-cell",
        Batch = "batch",
        StepBatch = "step-batch",
        RecurrentBatch = "recurrent-batch",
    }
);

impl NormChoice {
    /// The choice naming `k`.
    pub fn from_kind(k: NormKind) -> Self {
        Self::ALL
            .iter()
            .copied()
            .find(|c| c.kind() == Some(k))
            .unwrap_or_default()
    }

    pub fn kind(self) -> Option<NormKind> {
        match self {
            NormChoice::None => None,
            NormChoice::Layer => Some(NormKind::Layer),
            NormChoice::LayerCell => Some(NormKind::LayerCell),
            NormChoice::Batch => Some(NormKind::Batch),
            NormChoice::StepBatch => Some(NormKind::StepBatch),
            NormChoice::RecurrentBatch => Some(NormKind::RecurrentBatch),
        }
    }
}

choice!(
    /// `--init-whh`.
    InitWhh, "--init-whh", default Uniform {
        Uniform = "uniform",
        Orthogonal = "orthogonal",
    }
);

impl From<InitWhh> for WhhInit {
    fn from(c: InitWhh) -> Self {
        match c {
            InitWhh::Uniform => WhhInit::Uniform,
            InitWhh::Orthogonal => WhhInit::Orthogonal,
        }
    }
}

choice!(
    /// `--init-wih`.
    InitWih, "--init-wih", default Uniform {
        Uniform = "uniform",
        Xavier = "xavier",
    }
);

impl From<InitWih> for WihInit {
    fn from(c: InitWih) -> Self {
        match c {
            InitWih::Uniform => WihInit::Uniform,
            InitWih::Xavier => WihInit::Xavier,
        }
    }
}

choice!(
    /// `--missing`: what a missing CSV cell becomes.
    MissingChoice, "--missing", default Error {
        Error = "error",
        Drop = "drop",
        Ffill = "ffill",
        Interpolate = "interpolate",
    }
);

impl From<MissingChoice> for Missing {
    fn from(c: MissingChoice) -> Self {
        match c {
            MissingChoice::Error => Missing::Error,
            MissingChoice::Drop => Missing::Drop,
            MissingChoice::Ffill => Missing::Ffill,
            MissingChoice::Interpolate => Missing::Interpolate,
        }
    }
}

/// Checks `--zoneout-h` and `--zoneout-c` (probabilities in [0, 1)) against
/// the cell and the norm: zoneout of c needs a cell with a c state, and
/// the normalized cells run without zoneout.
pub fn check_zoneout(
    h: f32,
    c: f32,
    cell: crate::kernels::cell::Cell,
    norm: Option<NormKind>,
) -> Result<()> {
    for (flag, p) in [("--zoneout-h", h), ("--zoneout-c", c)] {
        if !(p.is_finite() && (0.0..1.0).contains(&p)) {
            return Err(Error::Invalid(format!(
                "{flag} {}: expected a probability in [0, 1)",
                crate::error::num(p)
            )));
        }
    }
    if c > 0.0 && !cell.has_c() {
        return Err(Error::Invalid(format!(
            "--zoneout-c: the {} cell has no c state (give --zoneout-h)",
            cell.name()
        )));
    }
    if (h > 0.0 || c > 0.0)
        && let Some(k @ (NormKind::LayerCell | NormKind::RecurrentBatch)) = norm
    {
        return Err(Error::Invalid(format!(
            "--zoneout-h/--zoneout-c with --norm {}: the normalized cells run without zoneout",
            NormChoice::from_kind(k)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_toml_and_refuse_by_flag() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct T {
            norm: NormChoice,
            dataset: Dataset,
        }
        let t = T {
            norm: NormChoice::StepBatch,
            dataset: Dataset::MackeyGlass,
        };
        let text = toml::to_string(&t).unwrap();
        assert_eq!(text, "norm = \"step-batch\"\ndataset = \"mackey-glass\"\n");
        assert_eq!(toml::from_str::<T>(&text).unwrap(), t);
        let e = toml::from_str::<T>("norm = \"group\"\ndataset = \"sine\"\n").unwrap_err();
        assert!(
            e.message()
                .contains("--norm group: expected none, layer, layer-cell, batch, step-batch or recurrent-batch"),
            "{e}"
        );
        for k in NormKind::ALL {
            let c: NormChoice = k.as_str().parse().unwrap();
            assert_eq!(c.kind(), Some(k));
        }
        for &b in Dataset::ALL {
            assert_eq!(b.builtin().name(), b.name());
        }
        assert!(
            "x".parse::<Task>()
                .unwrap_err()
                .to_string()
                .contains("--task x: expected text or series")
        );
    }
}
