//! The f64 reference crate shares no code with the engine, so it keeps
//! copies of the two generators both sides need: SplitMix64 (test data and
//! seeded weights) and the Philox dropout mask. These tests keep each copy
//! equal to the engine's. No GPU needed.

use lstm_wgpu::kernels::elementwise::{self as gpu, DropoutStep};
use lstm_wgpu_reference::philox;

#[test]
fn splitmix64_streams_agree() {
    for seed in [0u64, 1, 42, 0xDEAD_BEEF, u64::MAX] {
        let mut ours = lstm_wgpu::rng::Rng::new(seed);
        let mut theirs = lstm_wgpu_reference::Rng::new(seed);
        for i in 0..1000 {
            if i % 2 == 0 {
                assert_eq!(ours.next_u64(), theirs.next_u64(), "seed {seed}, draw {i}");
            } else {
                let (a, b) = (ours.uniform(-0.5, 2.0), theirs.uniform(-0.5, 2.0));
                assert_eq!(a.to_bits(), b.to_bits(), "seed {seed}, draw {i}");
            }
        }
    }
}

#[test]
fn philox_dropout_masks_agree() {
    for (seed, counter) in [
        (0u64, 0u32),
        (7, 3),
        (u64::MAX, 91),
        (0x1234_5678_9ABC, 1 << 20),
    ] {
        let st = DropoutStep { seed, counter };
        let rs = philox::DropoutStep { seed, counter };
        for p in [0.0f32, 0.1, 0.35, 0.5, 0.999] {
            for stream in [0u32, 1, 4] {
                for i in (0..4096u32).step_by(7) {
                    let a = gpu::dropout_keep(&st, stream, i, p).unwrap_or_else(|e| panic!("{e}"));
                    let b =
                        philox::dropout_keep(&rs, stream, i, p).unwrap_or_else(|e| panic!("{e}"));
                    assert_eq!(
                        a, b,
                        "seed {seed} counter {counter} p {p} stream {stream} i {i}"
                    );
                }
            }
        }
        let block = [counter, 5, 9, 77];
        let key = [seed as u32, (seed >> 32) as u32];
        assert_eq!(
            gpu::philox4x32_10(block, key),
            philox::philox4x32_10(block, key)
        );
    }
    for p in [-0.1f32, 1.0, f32::NAN] {
        assert!(gpu::dropout_threshold(p).is_err() && philox::dropout_threshold(p).is_err());
    }
}
