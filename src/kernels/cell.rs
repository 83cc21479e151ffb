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
        }
    }

    /// Whether W_hh is a vector (IndRNN's u): the recurrent product is
    /// diagonal, its weight `weight_hh_l{k}` is [H], and the direct scalar
    /// kernels run it.
    pub const fn diag(self) -> bool {
        matches!(self, Cell::IndRnn { .. })
    }

    /// The shape of `weight_hh_l{k}` for hidden size `h`.
    pub fn whh_shape(self, h: usize) -> Vec<usize> {
        match self.diag() {
            true => vec![h],
            false => vec![self.gates() * h, h],
        }
    }

    /// Its name on the command line and in settings files.
    pub const fn name(self) -> &'static str {
        match self {
            Cell::Lstm => "lstm",
            Cell::Gru => "gru",
            Cell::IndRnn { .. } => "indrnn",
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
    pub const fn module(self) -> &'static str {
        match self {
            Cell::Lstm => "nn.LSTM",
            Cell::Gru => "nn.GRU",
            Cell::IndRnn { .. } => "IndRNN",
        }
    }

    /// Whether the state has a c part (h0/c0, h_n/c_n).
    pub const fn has_c(self) -> bool {
        matches!(self, Cell::Lstm)
    }

    /// Whether the cell adds b_hh itself, so that the input projection
    /// adds b_ih alone (the GRU: b_hn sits inside r ⊙ (W_hn h + b_hn)).
    pub const fn own_bhh(self) -> bool {
        matches!(self, Cell::Gru)
    }

    /// Whether W_ih's gate gradients differ from W_hh's, kept in a dx
    /// section of the gradient block.
    pub const fn split_dg(self) -> bool {
        matches!(self, Cell::Gru)
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

    /// The GRU's: dgates | dc | dx in f32.
    #[test]
    fn gru_blocks_hold_both_gate_gradients() {
        let c = Cell::Gru;
        assert_eq!((c.gates(), c.cache_width(false)), (3, 5));
        assert_eq!((c.dg_width(false), c.dx_section(false)), (7, 4));
    }
}
