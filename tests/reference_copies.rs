//! The f64 reference crate shares no code with the library, so it keeps
//! copies of the two generators both sides must agree on bit for bit; these
//! tests hold each copy equal to its original. (The library's dropout mirror
//! is held to the shader by `kernel_elementwise::dropout_mask_*`.)

use lstm_wgpu::kernels::elementwise as gpu;
use lstm_wgpu_reference::dropout as rd;

#[test]
fn splitmix64_streams_are_equal() {
    for seed in [0, 1, 7, 0x5eed, u64::MAX] {
        let (mut lib, mut judge) = (
            lstm_wgpu::rng::Rng::new(seed),
            lstm_wgpu_reference::Rng::new(seed),
        );
        for _ in 0..1000 {
            assert_eq!(lib.next_u64(), judge.next_u64(), "seed {seed}");
            let (a, b) = (lib.uniform(-0.3, 0.7), judge.uniform(-0.3, 0.7));
            assert_eq!(a.to_bits(), b.to_bits(), "seed {seed}");
        }
    }
}

#[test]
fn dropout_masks_are_equal() {
    let seeds = [0, 99, 0x5eed_0000_1234, 0x1234_5678_9abc, u64::MAX];
    for (q, seed) in seeds.into_iter().enumerate() {
        let counter = q as u32 * 7 + 1;
        let (lib, judge) = (
            gpu::DropoutStep { seed, counter },
            rd::DropoutStep { seed, counter },
        );
        let ctr = [q as u32, counter, 3, 0];
        let key = [seed as u32, (seed >> 32) as u32];
        assert_eq!(gpu::philox4x32_10(ctr, key), rd::philox4x32_10(ctr, key));
        for p in [0.0f32, 0.1, 0.35, 0.5, 0.9] {
            assert_eq!(
                gpu::dropout_threshold(p).unwrap(),
                rd::dropout_threshold(p).unwrap()
            );
            for stream in 0..3 {
                for i in 0..257 {
                    let a = gpu::dropout_keep(&lib, stream, i, p).unwrap();
                    let b = rd::dropout_keep(&judge, stream, i, p).unwrap();
                    assert_eq!(a, b, "seed {seed} p {p} stream {stream} i {i}");
                }
            }
        }
    }
    for bad in [1.0f32, -0.1, f32::NAN] {
        assert!(gpu::dropout_threshold(bad).is_err() && rd::dropout_threshold(bad).is_err());
    }
}
