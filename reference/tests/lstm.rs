//! The plain LSTM reference against central finite differences of every
//! gradient and against its length semantics, written out independently.

mod common;

use common::*;
use lstm_wgpu_reference::*;

fn fd_check(
    c: &RefConfig,
    t: usize,
    b: usize,
    with_state: bool,
    lengths: Option<Vec<usize>>,
    seed: u64,
    chk: &mut Checker,
) {
    let links = RefLinks::default();
    fd_check_links(c, t, b, with_state, lengths, seed, &links, chk);
}

#[allow(clippy::too_many_arguments)]
fn fd_check_links(
    c: &RefConfig,
    t: usize,
    b: usize,
    with_state: bool,
    lengths: Option<Vec<usize>>,
    seed: u64,
    links: &RefLinks,
    chk: &mut Checker,
) {
    let mut rng = Rng::new(seed);
    let w = random_weights(c, &mut rng);
    let inp = make_inputs(c, &mut rng, t, b, with_state, lengths.clone());
    let up = make_upstream(c, &mut rng, t, b);
    let tag = format!(
        "L={} D={} bias={} state={} T={t} B={b} lengths={lengths:?} links={}/{}",
        c.num_layers,
        c.dirs(),
        c.bias,
        with_state,
        links.keep.len(),
        links.residual
    );
    let reg = RefRecurrentReg::default();
    fd_all(c, &w, &inp, &up, links, &reg, &tag, chk);
}

/// Dropout (random masks, p = 0.4) and residual links on the plain
/// stack, alone and together, uni- and bidirectional, unequal lengths.
#[test]
fn finite_difference_links() {
    let mut chk = Checker::new();
    let mut rng = Rng::new(77);
    for (q, (layers, bidir, drop, residual)) in [
        (3, false, true, true),
        (3, true, true, false),
        (2, true, false, true),
        (4, false, true, true),
    ]
    .into_iter()
    .enumerate()
    {
        let c = cfg(2, 3, layers, bidir, q % 2 == 0);
        let (t, b) = (4, 3);
        let n = t * b * c.dirs() * c.hidden_size;
        let keep = if drop {
            (0..layers - 1)
                .map(|_| (0..n).map(|_| rng.uniform(0.0, 1.0) >= 0.4).collect())
                .collect()
        } else {
            Vec::new()
        };
        let links = RefLinks {
            dropout: 0.4,
            residual,
            keep,
        };
        let lengths = (q % 2 == 0).then(|| vec![4, 1, 3]);
        fd_check_links(&c, t, b, q != 1, lengths, 500 + q as u64, &links, &mut chk);
    }
    eprintln!(
        "finite differences with links: {} entries, worst relative error {:e}",
        chk.count, chk.worst
    );
}

#[test]
fn finite_difference_grid() {
    let mut chk = Checker::new();
    let mut seed = 1;
    for layers in 1..=3 {
        for bidir in [false, true] {
            for bias in [false, true] {
                for with_state in [false, true] {
                    let c = cfg(2, 3, layers, bidir, bias);
                    let cases: [(usize, usize, Option<Vec<usize>>); 4] = [
                        (5, 3, None),
                        (5, 3, Some(vec![5, 2, 4])),
                        (4, 3, Some(vec![1, 4, 3])),
                        (1, 2, None),
                    ];
                    for (t, b, lengths) in cases {
                        seed += 1;
                        fd_check(&c, t, b, with_state, lengths, seed, &mut chk);
                    }
                }
            }
        }
    }
    // T = 1 with explicit lengths, and a larger odd input size.
    fd_check(
        &cfg(2, 3, 2, true, true),
        1,
        2,
        true,
        Some(vec![1, 1]),
        99,
        &mut chk,
    );
    fd_check(
        &cfg(5, 1, 2, true, true),
        3,
        2,
        true,
        Some(vec![2, 3]),
        100,
        &mut chk,
    );
    eprintln!(
        "finite differences: {} entries, worst relative error {:e}",
        chk.count, chk.worst
    );
}

#[test]
fn padded_outputs_are_exactly_zero() {
    for bidir in [false, true] {
        let c = cfg(2, 3, 2, bidir, true);
        let mut rng = Rng::new(7);
        let w = random_weights(&c, &mut rng);
        let lengths = vec![5, 2, 4, 1];
        let inp = make_inputs(&c, &mut rng, 5, 4, true, Some(lengths.clone()));
        let out = forward(&c, &w, &inp).output;
        let ow = c.dirs() * c.hidden_size;
        for t in 0..5 {
            for (b, &len) in lengths.iter().enumerate() {
                let row = &out[(t * 4 + b) * ow..(t * 4 + b + 1) * ow];
                if t >= len {
                    assert!(row.iter().all(|&v| v == 0.0), "t={t} b={b}: {row:?}");
                } else {
                    assert!(
                        row.iter().any(|&v| v != 0.0),
                        "t={t} b={b} unexpectedly zero"
                    );
                }
            }
        }
    }
}

#[test]
fn lengths_match_truncated_single_sequences() {
    for bidir in [false, true] {
        for layers in [1, 3] {
            let c = cfg(2, 3, layers, bidir, true);
            let (t_len, b_len) = (5, 4);
            let mut rng = Rng::new(11 + layers as u64);
            let w = random_weights(&c, &mut rng);
            let lengths = vec![5, 2, 4, 1];
            let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
            let out = forward(&c, &w, &inp);
            let (i_sz, h, ow, cells) = (c.input_size, c.hidden_size, c.dirs() * 3, c.cells());
            for (b, &len) in lengths.iter().enumerate() {
                let x: Vec<f64> = (0..len)
                    .flat_map(|t| {
                        inp.x[(t * b_len + b) * i_sz..(t * b_len + b + 1) * i_sz].to_vec()
                    })
                    .collect();
                let alone = RefInputs {
                    seq_len: len,
                    batch: 1,
                    x,
                    h0: Some(state_of(inp.h0.as_ref().unwrap(), cells, b_len, b, h)),
                    c0: Some(state_of(inp.c0.as_ref().unwrap(), cells, b_len, b, h)),
                    lengths: None,
                };
                let single = forward(&c, &w, &alone);
                let tag = format!("L={layers} D={} b={b}", c.dirs());
                for t in 0..len {
                    let got = &out.output[(t * b_len + b) * ow..(t * b_len + b + 1) * ow];
                    assert_close(
                        got,
                        &single.output[t * ow..(t + 1) * ow],
                        1e-12,
                        &format!("{tag} out t={t}"),
                    );
                }
                assert_close(
                    &state_of(&out.h_n, cells, b_len, b, h),
                    &single.h_n,
                    1e-12,
                    &format!("{tag} h_n"),
                );
                assert_close(
                    &state_of(&out.c_n, cells, b_len, b, h),
                    &single.c_n,
                    1e-12,
                    &format!("{tag} c_n"),
                );
                // Forward-direction h_n of the last layer is the output at len-1.
                let last = (c.num_layers - 1) * c.dirs();
                let hn = &out.h_n[(last * b_len + b) * h..(last * b_len + b + 1) * h];
                let o = &out.output[((len - 1) * b_len + b) * ow..((len - 1) * b_len + b) * ow + h];
                assert_close(hn, o, 1e-12, &format!("{tag} h_n vs last output"));
                if bidir {
                    // Reverse-direction h_n of the last layer is its output at t = 0.
                    let hn =
                        &out.h_n[((last + 1) * b_len + b) * h..((last + 1) * b_len + b + 1) * h];
                    let o = &out.output[b * ow + h..(b + 1) * ow];
                    assert_close(hn, o, 1e-12, &format!("{tag} reverse h_n vs output at t=0"));
                }
            }
        }
    }
}

#[test]
fn reverse_direction_is_reversed_truncated_sequence() {
    let c = cfg(2, 3, 1, true, true);
    let uni = cfg(2, 3, 1, false, true);
    let (t_len, b_len, h) = (5, 3, 3);
    let mut rng = Rng::new(21);
    let w = random_weights(&c, &mut rng);
    let lengths = vec![5, 2, 4];
    let inp = make_inputs(&c, &mut rng, t_len, b_len, true, Some(lengths.clone()));
    let out = forward(&c, &w, &inp);
    let rev_w = RefWeights {
        cells: vec![w.cells[1].clone()],
    };
    let h0 = inp.h0.as_ref().unwrap();
    let c0 = inp.c0.as_ref().unwrap();
    for (b, &len) in lengths.iter().enumerate() {
        let x: Vec<f64> = (0..len)
            .rev()
            .flat_map(|t| inp.x[(t * b_len + b) * 2..(t * b_len + b + 1) * 2].to_vec())
            .collect();
        let s_off = (b_len + b) * h; // cell 1 (reverse) of layer 0
        let single = forward(
            &uni,
            &rev_w,
            &RefInputs {
                seq_len: len,
                batch: 1,
                x,
                h0: Some(h0[s_off..s_off + h].to_vec()),
                c0: Some(c0[s_off..s_off + h].to_vec()),
                lengths: None,
            },
        );
        for t in 0..len {
            let got = &out.output[(t * b_len + b) * 2 * h + h..(t * b_len + b + 1) * 2 * h];
            let s = len - 1 - t;
            assert_close(
                got,
                &single.output[s * h..(s + 1) * h],
                1e-12,
                &format!("b={b} t={t}"),
            );
        }
        assert_close(
            &out.h_n[s_off..s_off + h],
            &single.h_n,
            1e-12,
            &format!("b={b} h_n"),
        );
        assert_close(
            &out.c_n[s_off..s_off + h],
            &single.c_n,
            1e-12,
            &format!("b={b} c_n"),
        );
    }
}

#[test]
fn full_lengths_equal_no_lengths() {
    let c = cfg(2, 3, 2, true, true);
    let mut rng = Rng::new(5);
    let w = random_weights(&c, &mut rng);
    let inp = make_inputs(&c, &mut rng, 4, 3, true, None);
    let mut with_len = inp.clone();
    with_len.lengths = Some(vec![4, 4, 4]);
    let a = forward(&c, &w, &inp);
    let b = forward(&c, &w, &with_len);
    assert_eq!(a.output, b.output);
    assert_eq!(a.h_n, b.h_n);
    assert_eq!(a.c_n, b.c_n);
}

/// Closed-form single step checking the gate order i, f, g, o.
#[test]
fn gate_order_closed_form() {
    let c = cfg(1, 1, 1, false, true);
    let (bi, bf, bg, bo) = (0.3, -0.7, 1.1, 0.5);
    let w = RefWeights {
        cells: vec![RefDirWeights {
            w_ih: vec![0.0; 4],
            w_hh: vec![0.0; 4],
            b_ih: Some(vec![bi, bf, bg, bo]),
            b_hh: Some(vec![0.0; 4]),
            w_hr: None,
        }],
    };
    let c0 = 0.8;
    let inp = RefInputs {
        seq_len: 1,
        batch: 1,
        x: vec![0.25],
        h0: Some(vec![-0.4]),
        c0: Some(vec![c0]),
        lengths: None,
    };
    let out = forward(&c, &w, &inp);
    let s = |v: f64| 1.0 / (1.0 + (-v).exp());
    let c1 = s(bf) * c0 + s(bi) * f64::tanh(bg);
    let h1 = s(bo) * c1.tanh();
    assert!((out.c_n[0] - c1).abs() < 1e-15);
    assert!((out.h_n[0] - h1).abs() < 1e-15);
    assert!((out.output[0] - h1).abs() < 1e-15);
}

#[test]
fn rng_is_deterministic_and_in_range() {
    let mut a = Rng::new(42);
    let mut b = Rng::new(42);
    let va = a.vec(1000, -0.5, 0.25);
    assert_eq!(va, b.vec(1000, -0.5, 0.25));
    assert!(va.iter().all(|&v| (-0.5..0.25).contains(&v)));
    let c = cfg(2, 4, 2, true, true);
    let w = random_weights(&c, &mut Rng::new(1));
    assert_eq!(w.cells.len(), 4);
    assert!(
        w.cells
            .iter()
            .all(|cell| cell.w_ih.iter().all(|v| v.abs() <= 0.5))
    );
    assert_eq!(w.cells[2].w_ih.len(), 16 * 8);
}
