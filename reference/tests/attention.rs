//! The attention head's reference (`attention.rs`) against central finite
//! differences of every gradient (the stack's outputs, the query, the
//! head's weight and bias), alone and behind the LSTM reference (every
//! LSTM weight through the pooling), with dot and learned scores, unequal
//! lengths and T = 1; plus hand-written checks of the pooling itself.
//! Tolerance: `common::TOL` (1e-6) of the mixed relative error.

mod common;

use common::*;
use lstm_wgpu_reference::attention::*;
use lstm_wgpu_reference::*;

fn shape(t: usize, b: usize, w: usize, lengths: Option<Vec<usize>>) -> RefPoolShape {
    RefPoolShape {
        seq_len: t,
        batch: b,
        width: w,
        lengths,
    }
}

fn head(score: RefScore, w: usize, o: usize, rng: &mut Rng) -> RefAttentionHead {
    RefAttentionHead {
        score,
        query: rng.vec(w, -1.0, 1.0),
        weight: rng.vec(o * 2 * w, -0.8, 0.8),
        bias: rng.vec(o, -0.5, 0.5),
    }
}

/// (h, p, targets): the state a finite difference perturbs.
#[derive(Clone)]
struct Case {
    h: Vec<f64>,
    p: RefAttentionHead,
}

fn fd_head(score: RefScore, s: &RefPoolShape, o: usize, seed: u64, chk: &mut Checker) {
    let mut rng = Rng::new(seed);
    let w = s.width;
    let mut h = rng.vec(s.seq_len * s.batch * w, -1.5, 1.5);
    // Padded positions hold garbage that must not matter.
    if let Some(l) = &s.lengths {
        for (b, &len) in l.iter().enumerate() {
            for t in len..s.seq_len {
                for j in 0..w {
                    h[(t * s.batch + b) * w + j] = 1e3 + j as f64;
                }
            }
        }
    }
    let case = Case {
        h,
        p: head(score, w, o, &mut rng),
    };
    let y = rng.vec(s.batch * o, -1.0, 1.0);
    let (_, g) = attention_head_mse(&case.p, &case.h, s, &y);
    let eval = |c: &Case| attention_head_mse(&c.p, &c.h, s, &y).0;
    let tag = format!(
        "{score:?} T={} B={} W={w} O={o} {:?}",
        s.seq_len, s.batch, s.lengths
    );
    let lens = s.lengths.clone().unwrap_or(vec![s.seq_len; s.batch]);
    for k in 0..case.h.len() {
        let (t, b) = (k / (s.batch * w), (k / w) % s.batch);
        let num = fd(&case, k, |c| &mut c.h, eval);
        if t >= lens[b] {
            assert_eq!(g.output[k], 0.0, "{tag}: padded output grad {k}");
            assert_eq!(num, 0.0, "{tag}: padded numeric grad {k}");
        } else {
            chk.check(&|| format!("{tag}: output[{k}]"), g.output[k], num);
        }
    }
    for k in 0..w {
        let num = fd(&case, k, |c| &mut c.p.query, eval);
        chk.check(&|| format!("{tag}: query[{k}]"), g.query[k], num);
        if score == RefScore::Dot {
            assert_eq!(g.query[k], 0.0, "{tag}: a dot score has no query");
        }
    }
    for k in 0..case.p.weight.len() {
        let num = fd(&case, k, |c| &mut c.p.weight, eval);
        chk.check(&|| format!("{tag}: weight[{k}]"), g.weight[k], num);
    }
    for k in 0..o {
        let num = fd(&case, k, |c| &mut c.p.bias, eval);
        chk.check(&|| format!("{tag}: bias[{k}]"), g.bias[k], num);
    }
}

#[test]
fn finite_difference_head() {
    let mut chk = Checker::new();
    for score in [RefScore::Dot, RefScore::Learned] {
        for (q, (s, o)) in [
            (shape(5, 3, 4, Some(vec![5, 2, 4])), 2),
            (shape(4, 2, 3, None), 1),
            (shape(1, 2, 5, None), 3),
            (shape(6, 4, 2, Some(vec![1, 6, 3, 2])), 1),
        ]
        .into_iter()
        .enumerate()
        {
            fd_head(score, &s, o, 40 + q as u64, &mut chk);
        }
    }
    println!(
        "worst {:e} at {} ({} entries)",
        chk.worst, chk.worst_what, chk.count
    );
}

/// The whole network: LSTM reference, then the attention head and its
/// MSE; every LSTM weight's gradient (the head's `output` gradient as the
/// stack's `grad_output`) and the head's own against finite differences.
#[test]
fn finite_difference_behind_the_lstm() {
    let mut chk = Checker::new();
    for (q, (score, layers, lengths)) in [
        (RefScore::Dot, 2, Some(vec![4, 2, 3])),
        (RefScore::Learned, 1, Some(vec![1, 4, 4])),
        (RefScore::Learned, 2, None),
    ]
    .into_iter()
    .enumerate()
    {
        let c = cfg(3, 4, layers, false, true);
        let (t, b, o) = (4, 3, 2);
        let mut rng = Rng::new(90 + q as u64);
        let w = random_weights(&c, &mut rng);
        let inp = make_inputs(&c, &mut rng, t, b, false, lengths.clone());
        let p = head(score, 4, o, &mut rng);
        let y = rng.vec(b * o, -1.0, 1.0);
        let s = shape(t, b, 4, lengths.clone());
        let total = |w: &RefWeights, p: &RefAttentionHead| {
            attention_head_mse(p, &forward(&c, w, &inp).output, &s, &y).0
        };
        let out = forward(&c, &w, &inp);
        let (_, hg) = attention_head_mse(&p, &out.output, &s, &y);
        let up = RefUpstream {
            grad_output: hg.output.clone(),
            grad_h_n: vec![0.0; out.h_n.len()],
            grad_c_n: vec![0.0; out.c_n.len()],
        };
        let (_, g) = backward(&c, &w, &inp, &up);
        let tag = format!("{score:?} L={layers} {lengths:?}");
        type Get = fn(&mut RefDirWeights) -> &mut Vec<f64>;
        for (ci, gc) in g.weights.cells.iter().enumerate() {
            let parts: [(&str, &Vec<f64>, Get); 3] = [
                ("w_ih", &gc.w_ih, |d| &mut d.w_ih),
                ("w_hh", &gc.w_hh, |d| &mut d.w_hh),
                ("b_ih", gc.b_ih.as_ref().unwrap(), |d| {
                    d.b_ih.as_mut().unwrap()
                }),
            ];
            for (name, grad, get) in parts {
                for (k, &analytic) in grad.iter().enumerate() {
                    let num = fd(
                        &w,
                        k,
                        |w: &mut RefWeights| get(&mut w.cells[ci]),
                        |w| total(w, &p),
                    );
                    chk.check(&|| format!("{tag}: cell {ci} {name}[{k}]"), analytic, num);
                }
            }
        }
        let num = fd(&p, 0, |p| &mut p.query, |p| total(&w, p));
        chk.check(&|| format!("{tag}: query[0]"), hg.query[0], num);
    }
    println!(
        "worst {:e} at {} ({} entries)",
        chk.worst, chk.worst_what, chk.count
    );
}

/// The pooling by hand: weights sum to 1 over the valid steps and are 0
/// past them, a single step gets weight 1, equal scores share equally,
/// the context is the weighted mean, and `h_T` is the last valid output.
#[test]
fn pooling_by_hand() {
    // T = 3, B = 2, W = 2; sequence 1 has length 1.
    let h = vec![
        1.0, 0.0, /* b1 */ 2.0, 2.0, //
        0.0, 1.0, /* b1 */ 9.0, 9.0, //
        1.0, 1.0, /* b1 */ 9.0, 9.0,
    ];
    let s = shape(3, 2, 2, Some(vec![3, 1]));
    let p = attention_pool(RefScore::Dot, &[], &h, &s);
    // Sequence 0: h_T = (1, 1); scores 1, 1, 2.
    let e = [1f64.exp(), 1f64.exp(), 2f64.exp()];
    let z: f64 = e.iter().sum();
    let a: Vec<f64> = e.iter().map(|x| x / z).collect();
    assert_close(&p.weights[..3], &a, 1e-15, "weights of sequence 0");
    assert_eq!(&p.weights[3..], &[1.0, 0.0, 0.0], "weights of sequence 1");
    let ctx = [a[0] + a[2], a[1] + a[2]];
    assert_close(&p.features[..2], &ctx, 1e-15, "context of sequence 0");
    assert_eq!(&p.features[2..4], &[1.0, 1.0], "h_T of sequence 0");
    assert_eq!(&p.features[4..], &[2.0, 2.0, 2.0, 2.0], "sequence 1");
    // A learned query orthogonal to every output: uniform weights.
    let q = attention_pool(RefScore::Learned, &[0.0, 0.0], &h, &s);
    assert_close(&q.weights[..3], &[1.0 / 3.0; 3], 1e-15, "uniform weights");
}
