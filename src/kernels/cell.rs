//! The host's view of a recurrent cell, whose pointwise math lives in
//! `shaders/cells/` (joined into every kernel that runs a step of it): its
//! gate count and the sections of the blocks the recurrent kernels write
//! for backward. The workspace, the schedule, the model's parameter shapes
//! and the wrappers size and offset from here instead of numbers of their
//! own, so a cell with another gate count or another cache is described
//! in one place.
//!
//! Blocks are per (layer, direction), time-major, in sections of
//! `[T, B, width·H]`; widths count in H:
//!
//! | block | f32 | f16-mixed |
//! |---|---|---|
//! | cache | gates G \| c 1 \| h_prev 1 | gates G \| h_prev 1 (c in its own f32 buffer) |
//! | gradients | dgates G \| dc 1 (\| dx G) | dgates G (dc in its own f32 buffer) |
//!
//! The dx section exists for cells whose W_ih sees other gate gradients
//! than W_hh ([`Cell::split_dg`]: the GRU's n gate).
//!
//! The norm cells (`lstm_cell_ln`, `lstm_cell_bn`) extend the f32 blocks
//! with sections of their own, counted in the same G.

/// A recurrent cell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Cell {
    /// `nn.LSTM`: gates i, f, g, o (`shaders/cells/lstm.wgsl`); state h and
    /// c.
    #[default]
    Lstm,
    /// `nn.GRU`: gates r, z, n (`shaders/cells/gru.wgsl`); state h (the
    /// c section caches n's recurrent part W_hn h + b_hn, the dc section
    /// carries h's gradient).
    Gru,
    /// IndRNN (Li et al. 2018): h' = act(W_ih x + b_ih + u ⊙ h + b_hh)
    /// with act relu (`relu`) or tanh (`shaders/cells/indrnn.wgsl`); one
    /// gate row, W_hh the vector u [H]; state h.
    IndRnn {
        /// ReLU, else tanh.
        relu: bool,
    },
    /// A cell read from a WGSL file of the built-in cells' form
    /// ([`Cell::from_wgsl`]), interned for the process so that `Cell`
    /// stays `Copy`.
    Custom(&'static CustomCell),
}

/// The LSTM's gate count, for the wrappers whose shaders join
/// `cells/lstm.wgsl` (the LSTM kernels and its norm cells).
pub const LSTM_GATES: usize = Cell::Lstm.gates();

impl Cell {
    /// Gate rows per hidden unit (G) of W_ih, W_hh, the biases, the
    /// pre-gates and the gate gradients.
    pub const fn gates(self) -> usize {
        match self {
            Cell::Lstm => 4,
            Cell::Gru => 3,
            Cell::IndRnn { .. } => 1,
            Cell::Custom(c) => c.gates,
        }
    }

    /// Whether W_hh is a vector (IndRNN's u): the recurrent product is
    /// diagonal, its weight `weight_hh_l{k}` is [H], and the direct scalar
    /// kernels run it.
    pub const fn diag(self) -> bool {
        match self {
            Cell::Custom(c) => c.diag,
            _ => matches!(self, Cell::IndRnn { .. }),
        }
    }

    /// The shape of `weight_hh_l{k}` for hidden size `h`.
    pub fn whh_shape(self, h: usize) -> Vec<usize> {
        match self.diag() {
            true => vec![h],
            false => vec![self.gates() * h, h],
        }
    }

    /// Its name on the command line and in settings files (a custom
    /// cell's: its file's name).
    pub fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
            Cell::IndRnn { .. } => "indrnn",
            Cell::Custom(c) => c.name.as_str(),
        }
    }

    /// What tells its compiled kernels apart from other cells' (a custom
    /// cell's source may change under the same file name).
    pub fn key(self) -> String {
        match self {
            Cell::Custom(c) => format!("file {} {:016x}", c.name, c.hash),
            _ => format!("{self:?}"),
        }
    }

    /// The cell named `s` (`lstm`, `gru`), for command lines and settings.
    pub fn parse(s: &str) -> std::result::Result<Self, String> {
        match s {
            "lstm" => Ok(Cell::Lstm),
            "gru" => Ok(Cell::Gru),
            "indrnn" | "indrnn-relu" => Ok(Cell::IndRnn { relu: true }),
            "indrnn-tanh" => Ok(Cell::IndRnn { relu: false }),
            _ => Err(format!(
                "unknown cell `{s}`; expected lstm, gru, indrnn (relu) or indrnn-tanh"
            )),
        }
    }

    /// Its PyTorch module.
    pub fn module(self) -> &'static str {
        match self {
            Cell::Lstm => "nn.LSTM",
            Cell::Gru => "nn.GRU",
            Cell::IndRnn { .. } => "IndRNN",
            Cell::Custom(c) => c.module.as_str(),
        }
    }

    /// Whether the state has a c part (h0/c0, h_n/c_n).
    pub const fn has_c(self) -> bool {
        match self {
            Cell::Custom(c) => c.states == 2,
            _ => matches!(self, Cell::Lstm),
        }
    }

    /// Whether the cell adds b_hh itself, so that the input projection
    /// adds b_ih alone (the GRU: b_hn sits inside r ⊙ (W_hn h + b_hn)).
    pub const fn own_bhh(self) -> bool {
        match self {
            Cell::Custom(c) => c.own_bhh,
            _ => matches!(self, Cell::Gru),
        }
    }

    /// Whether W_ih's gate gradients differ from W_hh's, kept in a dx
    /// section of the gradient block.
    pub const fn split_dg(self) -> bool {
        match self {
            Cell::Custom(c) => c.split_dg,
            _ => matches!(self, Cell::Gru),
        }
    }

    /// A custom cell's declarations and source, else None.
    pub fn custom(self) -> Option<&'static CustomCell> {
        match self {
            Cell::Custom(c) => Some(c),
            _ => None,
        }
    }

    /// The source of its pointwise functions, as the kernels join it
    /// after the prelude (IndRNN's with its activation set).
    pub fn source(self) -> std::borrow::Cow<'static, str> {
        use std::borrow::Cow;
        match self {
            Cell::Lstm => Cow::Borrowed(LSTM_SRC),
            Cell::Gru => Cow::Borrowed(GRU_SRC),
            Cell::IndRnn { relu: true } => Cow::Borrowed(INDRNN_SRC),
            Cell::IndRnn { relu: false } => Cow::Owned(crate::gpu::set_decl(
                INDRNN_SRC, "const", "IND_RELU", "false",
            )),
            Cell::Custom(c) => Cow::Borrowed(c.source.as_str()),
        }
    }

    /// Widths of one cache block's row: its sections, in order.
    pub const fn cache_width(self, half: bool) -> usize {
        self.hp_section(half) + 1
    }

    /// Where the c section starts in an f32 cache block (f16-mixed keeps
    /// c in a buffer of its own).
    pub const fn c_section(self) -> usize {
        self.gates()
    }

    /// Where the h_prev section starts in a cache block.
    pub const fn hp_section(self, half: bool) -> usize {
        match half {
            true => self.gates(),
            false => self.c_section() + 1,
        }
    }

    /// Width of one gradient block's row.
    pub const fn dg_width(self, half: bool) -> usize {
        self.dx_section(half)
            + match self.split_dg() {
                true => self.gates(),
                false => 0,
            }
    }

    /// Where the dx section starts (cells that [`Cell::split_dg`]; else
    /// the block's end).
    pub const fn dx_section(self, half: bool) -> usize {
        match half {
            true => self.gates(),
            false => self.dc_section() + 1,
        }
    }

    /// Where the dc section starts in an f32 gradient block.
    pub const fn dc_section(self) -> usize {
        self.gates()
    }
}

const LSTM_SRC: &str = super::wgsl::shader!("cells/lstm.wgsl");
const GRU_SRC: &str = super::wgsl::shader!("cells/gru.wgsl");
const INDRNN_SRC: &str = super::wgsl::shader!("cells/indrnn.wgsl");

/// A cell written by a user: a WGSL file declaring what the built-in
/// cells' files declare (`shaders/cells/lstm.wgsl` lists it), read and
/// validated by [`Cell::from_wgsl`].
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct CustomCell {
    /// The file's name without its directory: how settings, checkpoints
    /// and messages name the cell.
    pub name: String,
    /// The file's WGSL source.
    pub source: String,
    /// CELL_GATES.
    pub gates: usize,
    /// CELL_STATES: 2 (c and h) or 1 (h).
    pub states: usize,
    /// CELL_OWN_BHH.
    pub own_bhh: bool,
    /// CELL_SPLIT_DG.
    pub split_dg: bool,
    /// CELL_DIAG.
    pub diag: bool,
    /// How messages name the cell: `cell file NAME`.
    module: String,
    /// Of the source, to key compiled kernels.
    hash: u64,
}

/// Every valid custom cell read in this process, leaked once each (a
/// handful of small sources at most): what lets [`Cell`] stay `Copy`.
static CUSTOM: std::sync::Mutex<Vec<&'static CustomCell>> = std::sync::Mutex::new(Vec::new());

impl Cell {
    /// The cell that WGSL `source` (a file named `name`) declares, checked
    /// by naga: the source alone, then joined with every kernel that runs
    /// it (the recurrent strategies in f32 and f16-mixed, the persistent
    /// loop, and `check_cell.wgsl`), as the GPU will compile them. Errors are one
    /// line: the file, the line and column in it where naga gives one, and
    /// naga's message.
    pub fn from_wgsl(name: &str, source: &str) -> crate::Result<Cell> {
        let bad = |m: String| crate::Error::Invalid(format!("cell file {name}: {m}"));
        // Read before in this process (a run reads its settings' cell more
        // than once): already validated.
        if let Some(known) = interned(|k| k.name == name && k.source == source) {
            return Ok(Cell::Custom(known));
        }
        let decl = declarations(source).map_err(bad)?;
        let hash = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            source.hash(&mut h);
            h.finish()
        };
        let c = CustomCell {
            name: name.to_string(),
            source: source.to_string(),
            gates: decl.gates,
            states: decl.states,
            own_bhh: decl.own_bhh,
            split_dg: decl.split_dg,
            diag: decl.diag,
            module: format!("cell file {name}"),
            hash,
        };
        // Leaked before it is known valid, since the joined sources are built
        // from a Cell: a refused file costs its copy (the CLI exits on it).
        let leaked: &'static CustomCell = Box::leak(Box::new(c));
        let cell = Cell::Custom(leaked);
        let tile = super::lstm_cell::TileConfig::DEFAULT;
        let mut joined = vec![
            ("the recurrent strategies", tile.source_of(cell, false)),
            ("the persistent loop", super::lstm_persistent::source(cell)),
            ("check_cell.wgsl", super::check_cell::source(cell)),
        ];
        if !cell.diag() {
            joined.push(("the f16-mixed strategies", tile.source_of(cell, true)));
        }
        for (what, src) in joined {
            validate(&src)
                .map_err(|e| bad(format!("joined with {what}: {}", e.line(&src, source))))?;
        }
        Ok(Cell::Custom(intern(leaked)))
    }
}

/// The valid custom cell `pick` finds among those read so far.
fn interned(pick: impl Fn(&CustomCell) -> bool) -> Option<&'static CustomCell> {
    let all = CUSTOM.lock().unwrap_or_else(|e| e.into_inner());
    all.iter().copied().find(|k| pick(k))
}

/// `c`, or the equal cell another thread validated first.
fn intern(c: &'static CustomCell) -> &'static CustomCell {
    let mut all = CUSTOM.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = all.iter().find(|k| ***k == *c) {
        return known;
    }
    all.push(c);
    c
}

/// What a cell file declares.
struct Declared {
    gates: usize,
    states: usize,
    own_bhh: bool,
    split_dg: bool,
    diag: bool,
}

/// A naga error: its message and where in the source it points.
struct NagaError {
    message: String,
    at: Option<usize>,
}

impl NagaError {
    /// One line: the position in the cell's file when the error points
    /// into the copy of `cell` inside `joined`, else in the joined text.
    fn line(&self, joined: &str, cell: &str) -> String {
        let Some(at) = self.at else {
            return self.message.clone();
        };
        let start = joined.find(cell).unwrap_or(joined.len());
        let (text, off, whose) = match at >= start && at < start + cell.len() {
            true => (cell, at - start, "line"),
            false => (joined, at, "joined line"),
        };
        let before = &text[..off.min(text.len())];
        let line = before.matches('\n').count() + 1;
        let col = off - before.rfind('\n').map_or(0, |i| i + 1) + 1;
        format!("{whose} {line}:{col}: {}", self.message)
    }
}

/// naga's parse and validation of `src` (every capability: the device's
/// own limits are checked when the kernels are built).
fn validate(src: &str) -> Result<wgpu::naga::Module, NagaError> {
    use wgpu::naga;
    let module = naga::front::wgsl::parse_str(src).map_err(|e| NagaError {
        message: flat(&e),
        at: start(e.labels().next().map(|(s, _)| s)),
    })?;
    naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::all(),
    )
    .validate(&module)
    .map_err(|e| {
        let mut message = e.as_inner().to_string();
        let mut src_err = std::error::Error::source(e.as_inner());
        while let Some(s) = src_err {
            message = format!("{message}: {s}");
            src_err = s.source();
        }
        NagaError {
            message,
            at: start(e.spans().next().map(|(s, _)| *s)),
        }
    })?;
    Ok(module)
}

/// Where naga's first span (of an error) starts in the source.
fn start(span: Option<wgpu::naga::Span>) -> Option<usize> {
    span.and_then(|s| s.to_range()).map(|r| r.start)
}

/// naga's message, with its labels' texts where they add to it.
fn flat(e: &wgpu::naga::front::wgsl::ParseError) -> String {
    let message = e.message();
    let labels: Vec<&str> = e
        .labels()
        .map(|(_, t)| t)
        .filter(|t| !t.is_empty() && !message.contains(t))
        .collect();
    match labels.is_empty() {
        true => message.to_string(),
        false => format!("{message} ({})", labels.join("; ")),
    }
}

/// The declarations of a cell file (parsed after the prelude, whose
/// functions it may call).
fn declarations(source: &str) -> Result<Declared, String> {
    use wgpu::naga;
    let prelude = super::wgsl::shader!("common/prelude.wgsl");
    let src = format!("{prelude}{source}");
    let module = validate(&src).map_err(|e| e.line(&src, source))?;
    let constant = |name: &str| -> Result<naga::Literal, String> {
        let c = module
            .constants
            .iter()
            .find(|(_, c)| c.name.as_deref() == Some(name))
            .ok_or_else(|| format!("it does not declare `const {name}`"))?;
        match module.global_expressions[c.1.init] {
            naga::Expression::Literal(l) => Ok(l),
            _ => Err(format!("`{name}` must be a literal")),
        }
    };
    let count = |name: &str| match constant(name)? {
        naga::Literal::U32(v) => Ok(v as usize),
        naga::Literal::AbstractInt(v) if v >= 0 => Ok(v as usize),
        _ => Err(format!("`{name}` must be a u32")),
    };
    let flag = |name: &str| match constant(name)? {
        naga::Literal::Bool(b) => Ok(b),
        _ => Err(format!("`{name}` must be a bool")),
    };
    for f in [
        "cell_acc",
        "cell_join",
        "cell_forward",
        "cell_backward",
        "cell_dc_prev",
        "cell_state_grads",
    ] {
        if !module
            .functions
            .iter()
            .any(|(_, g)| g.name.as_deref() == Some(f))
        {
            return Err(format!("it does not define `fn {f}`"));
        }
    }
    let d = Declared {
        gates: count("CELL_GATES")?,
        states: count("CELL_STATES")?,
        own_bhh: flag("CELL_OWN_BHH")?,
        split_dg: flag("CELL_SPLIT_DG")?,
        diag: flag("CELL_DIAG")?,
    };
    let carry = count("CELL_CARRY")?;
    // The width of Gates, from CellStep's `act` (aliases leave no trace).
    let width = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some("CellStep"))
        .and_then(|(_, t)| match &t.inner {
            naga::TypeInner::Struct { members, .. } => members
                .iter()
                .find(|m| m.name.as_deref() == Some("act"))
                .map(|m| &module.types[m.ty].inner),
            _ => None,
        })
        .and_then(|t| match t {
            naga::TypeInner::Vector { size, .. } => Some(*size as usize),
            naga::TypeInner::Array {
                size: naga::ArraySize::Constant(n),
                ..
            } => Some(n.get() as usize),
            _ => None,
        })
        .ok_or("it does not declare `struct CellStep { act: Gates, c: f32, h: f32 }`")?;
    if d.gates == 0 || d.gates > width {
        return Err(format!(
            "CELL_GATES = {} must be in 1..={width} (the width of Gates)",
            d.gates
        ));
    }
    if !(1..=2).contains(&d.states) {
        return Err(format!(
            "CELL_STATES = {} must be 1 (h) or 2 (c and h)",
            d.states
        ));
    }
    if carry >= d.gates {
        return Err(format!(
            "CELL_CARRY = {carry} must name a gate (below CELL_GATES = {})",
            d.gates
        ));
    }
    if d.diag && d.gates != 1 {
        return Err("CELL_DIAG (a vector W_hh) needs CELL_GATES = 1".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layout `shaders/cells/lstm.wgsl`'s kernels document.
    #[test]
    fn lstm_blocks_match_the_shaders() {
        let c = Cell::Lstm;
        assert_eq!(c.gates(), 4);
        assert_eq!((c.cache_width(false), c.cache_width(true)), (6, 5));
        assert_eq!(
            (c.c_section(), c.hp_section(false), c.hp_section(true)),
            (4, 5, 4)
        );
        assert_eq!(
            (c.dg_width(false), c.dg_width(true), c.dc_section()),
            (5, 4, 4)
        );
        assert_eq!(c.dx_section(false), 5);
    }

    /// A built-in cell's file read as a user's declares what the enum
    /// says of it: the host learns a cell file's flags the same way.
    #[test]
    fn cell_files_declare_what_the_built_in_cells_are() {
        for cell in [Cell::Lstm, Cell::Gru, Cell::IndRnn { relu: true }] {
            let c = Cell::from_wgsl("x.wgsl", &cell.source()).unwrap_or_else(|e| panic!("{e}"));
            let flags = |c: Cell| (c.gates(), c.has_c(), c.own_bhh(), c.split_dg(), c.diag());
            assert_eq!(flags(c), flags(cell), "{cell:?}");
            assert_eq!(c.name(), "x.wgsl");
            // Interned: reading it again gives the same cell.
            assert_eq!(Cell::from_wgsl("x.wgsl", &cell.source()).ok(), Some(c));
        }
    }

    /// Malformed files are refused with naga's message and the position
    /// in the user's file, on one line; a missing declaration by name.
    #[test]
    fn malformed_cell_files_are_refused_in_one_line() {
        let lstm = Cell::Lstm.source();
        let err = |src: &str| match Cell::from_wgsl("m.wgsl", src) {
            Ok(_) => panic!("accepted:\n{src}"),
            Err(e) => e.to_string(),
        };
        let e = err(&lstm.replace("return pre;", "return pre"));
        assert!(e.starts_with("cell file m.wgsl: line 41:1:"), "{e}");
        assert!(e.contains("expected `;`") && !e.contains('\n'), "{e}");
        // Parses, but fails validation: a type error in cell_forward.
        let e = err(&lstm.replace(
            "return CellStep(act, c, act.w * tanh_clamped(c));",
            "return CellStep(act, 1u, act.w * tanh_clamped(c));",
        ));
        assert!(e.starts_with("cell file m.wgsl: line "), "{e}");
        assert!(!e.contains('\n'), "{e}");
        let e = err(&lstm.replace("const CELL_STATES: u32 = 2u;", ""));
        assert!(e.contains("does not declare `const CELL_STATES`"), "{e}");
        let e = err(&lstm.replace("fn cell_state_grads", "fn other_state_grads"));
        assert!(e.contains("`fn cell_state_grads`"), "{e}");
        let e = err(&lstm.replace("const CELL_GATES: u32 = 4u;", "const CELL_GATES: u32 = 5u;"));
        assert!(e.contains("CELL_GATES = 5 must be in 1..=4"), "{e}");
        let e = err(&lstm.replace("const CELL_CARRY: u32 = 1u;", "const CELL_CARRY: u32 = 4u;"));
        assert!(e.contains("CELL_CARRY = 4 must name a gate"), "{e}");
    }

    /// The GRU's: dgates | dc | dx in f32.
    #[test]
    fn gru_blocks_hold_both_gate_gradients() {
        let c = Cell::Gru;
        assert_eq!((c.gates(), c.cache_width(false)), (3, 5));
        assert_eq!((c.dg_width(false), c.dx_section(false)), (7, 4));
    }
}
