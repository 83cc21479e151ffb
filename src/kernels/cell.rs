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
//! | gradients | dgates G \| dc 1 | dgates G (dc in its own f32 buffer) |
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
    }
}
