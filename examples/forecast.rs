//! Forecasts yearly sunspots past 2008 with a series checkpoint, e.g. the
//! README's (`lstm-wgpu train --data examples/data/sunspots.csv --seq-len
//! 12 --checkpoint sun.st ...`): `cargo run --example forecast -- sun.st.best`.

use lstm_wgpu::Model;

fn main() -> lstm_wgpu::Result<()> {
    let mut args = std::env::args().skip(1);
    let ck = args.next().unwrap_or("sun.st.best".into());
    let csv = args.next().unwrap_or("examples/data/sunspots.csv".into());
    let mut model = Model::load(&ck)?;
    let t = model.config().seq_len;
    println!("{:?} model reading {t} rows a window", model.config().task);
    // The checkpoint's columns by name, in the data's units.
    let rows = model.csv_rows(&csv)?;
    let n = rows.len();
    // One-step-ahead predictions of the last 3 years, beside the actual values.
    let pred = model.predict(&rows[n - t - 3..n - 1])?;
    for (p, actual) in pred.iter().zip(&rows[n - 3..]) {
        println!("predicted {:8.2}  actual {:8.2}", p[0], actual[0]);
    }
    // Ten years past the last row, each prediction fed back as input.
    println!("next 10: {:.1?}", model.forecast(&rows, 10)?);
    Ok(())
}
