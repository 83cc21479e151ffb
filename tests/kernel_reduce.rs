//! The column sums of `shaders/reduce.wgsl` (the bias gradients) against
//! f64 sums on whatever adapter is present (lavapipe in CI): row counts
//! beyond lavapipe's loop cap, split into several dispatches that add on in
//! row order; two outputs, accumulation, offsets and padded leading
//! dimensions; the product form; and an f16 A. Integer data keeps every sum
//! exact in f32, so every check is exact.

mod common;

use common::gpu::*;

use common::{assert_close, ctx};
use lstm_wgpu::kernels::reduce::{ROW_CHUNK, Reduce};

/// Column sums over more rows than the loop cap allows in one dispatch,
/// exact on integer data: plain, into two outputs, accumulating, with an
/// offset and padded leading dimension; and the product form. Also the
/// largest single-dispatch row count, which checks the chunk against the cap.
#[test]
fn colsum_over_many_rows_is_exact() {
    let ctx = ctx();
    let reduce = Reduce::new(&ctx);
    let (cols, lda, off) = (70, 73, 5);
    for rows in [ROW_CHUNK, 70_000, 2 * ROW_CHUNK + 3] {
        let a = ints(off + rows * lda, 11, 3);
        let b = ints(off + rows * lda, 12, 3);
        let init = ints(2 * cols + 10, 13, 50);
        let mut sum = vec![0f64; cols];
        let mut prod = vec![0f64; cols];
        for r in 0..rows {
            for j in 0..cols {
                let i = off + r * lda + j;
                sum[j] += a[i] as f64;
                prod[j] += a[i] as f64 * b[i] as f64;
            }
        }
        let chunks = rows.div_ceil(ROW_CHUNK);
        let ab = ctx.storage_init("a", &a).expect("buffer");
        let bb = ctx.storage_init("b", &b).expect("buffer");
        for accumulate in [false, true] {
            let out = ctx.storage_init("out", &init).expect("buffer");
            let ds = ctx
                .scoped(|| {
                    reduce.colsum(
                        &ctx,
                        (&ab, off, lda),
                        rows,
                        cols,
                        &out,
                        (3, Some(cols + 7)),
                        accumulate,
                        false,
                    )
                })
                .expect("valid colsum");
            assert_eq!(ds.len(), chunks, "colsum dispatches for {rows} rows");
            record(&ctx, &ds);
            let got = ctx.read_f32(&out, 0, init.len()).expect("readback");
            let mut want: Vec<f64> = init.iter().map(|&v| v as f64).collect();
            for j in 0..cols {
                for o in [3, cols + 7] {
                    want[o + j] = sum[j] + if accumulate { want[o + j] } else { 0.0 };
                }
            }
            assert_close(
                &format!("colsum rows={rows} accumulate={accumulate}"),
                &got,
                &want,
                0.0,
            );
        }
        let out = ctx.storage_init("out", &init).expect("buffer");
        let ds = ctx
            .scoped(|| reduce.colsum_prod(&ctx, (&ab, off), (&bb, off), lda, rows, cols, (&out, 4)))
            .expect("valid colsum_prod");
        assert_eq!(ds.len(), chunks, "colsum_prod dispatches for {rows} rows");
        record(&ctx, &ds);
        let got = ctx.read_f32(&out, 0, init.len()).expect("readback");
        let mut want: Vec<f64> = init.iter().map(|&v| v as f64).collect();
        want[4..4 + cols].copy_from_slice(&prod);
        assert_close(&format!("colsum_prod rows={rows}"), &got, &want, 0.0);
    }
}

/// Two matrices' column sums in one dispatch per row chunk (the GRU's
/// b_ih and b_hh gradients), past the loop cap, exact against f64 sums:
/// each output gets its own matrix's sums and nothing else is written.
#[test]
fn colsum_pair_is_exact() {
    let ctx = ctx();
    let reduce = Reduce::new(&ctx);
    let (cols, lda) = (21, 24);
    for rows in [7, 2 * ROW_CHUNK + 3] {
        let (off1, off2) = (2, 5 + rows * lda);
        let a = ints(off2 + rows * lda, 21, 3);
        let init = ints(2 * cols + 9, 22, 50);
        let sum = |off: usize| -> Vec<f64> {
            (0..cols)
                .map(|j| (0..rows).map(|r| a[off + r * lda + j] as f64).sum())
                .collect()
        };
        let ab = ctx.storage_init("a", &a).expect("buffer");
        let out = ctx.storage_init("out", &init).expect("buffer");
        let (o1, o2) = (1, cols + 6);
        let ds = ctx
            .scoped(|| {
                reduce.colsum_pair(
                    &ctx,
                    (&ab, off1, off2, lda),
                    rows,
                    cols,
                    &out,
                    (o1, o2),
                    false,
                )
            })
            .expect("valid colsum_pair");
        assert_eq!(ds.len(), rows.div_ceil(ROW_CHUNK));
        record(&ctx, &ds);
        let got = ctx.read_f32(&out, 0, init.len()).expect("readback");
        let mut want: Vec<f64> = init.iter().map(|&v| v as f64).collect();
        want[o1..o1 + cols].copy_from_slice(&sum(off1));
        want[o2..o2 + cols].copy_from_slice(&sum(off2));
        assert_close(&format!("colsum_pair rows={rows}"), &got, &want, 0.0);
    }
}

/// The column sum over an f16 A (the f16 gate gradients' bias gradients),
/// exact on small integers, against f64 sums.
#[test]
fn colsum_f16_is_exact() {
    let ctx = ctx();
    let reduce = Reduce::new(&ctx);
    reduce.enable_half(&ctx);
    let (rows, cols, lda, off) = (300, 70, 73, 6);
    let a = ints(off + rows * lda, 21, 3);
    let ab = f16_buffer(&ctx, "a", &a);
    let out = ctx.storage("out", 2 * cols + 9).expect("buffer");
    let ds = ctx
        .scoped(|| {
            reduce.colsum(
                &ctx,
                (&ab, off, lda),
                rows,
                cols,
                &out,
                (2, Some(cols + 8)),
                false,
                true,
            )
        })
        .expect("valid colsum");
    record(&ctx, &ds);
    let got = ctx.read_f32(&out, 0, 2 * cols + 9).expect("readback");
    let mut want = vec![0f64; 2 * cols + 9];
    for j in 0..cols {
        let s: f64 = (0..rows).map(|r| a[off + r * lda + j] as f64).sum();
        want[2 + j] = s;
        want[cols + 8 + j] = s;
    }
    assert_close("colsum f16", &got, &want, 0.0);
}
