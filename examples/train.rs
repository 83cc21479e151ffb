//! Trains a forecaster on a series held in memory with `lstm_wgpu::run` (the
//! CLI's `train` as a call), then forecasts with the model it returns:
//! `cargo run --example train -- [STEPS]`.

use lstm_wgpu::run::{Config, Data, Run};

fn main() -> lstm_wgpu::Result<()> {
    let steps = std::env::args().nth(1).and_then(|s| s.parse().ok());
    // A sine with a period of 25 rows, one column named `y`.
    let values: Vec<f64> = (0..500).map(|i| (i as f64 * 0.2513).sin()).collect();
    let config = Config {
        seq_len: Some(16),
        hidden: Some(16),
        steps: Some(steps.unwrap_or(150)),
        val_every: Some(50),
        ..Default::default()
    };
    let trained = Run::new(config, Data::rows(values.clone(), &["y"]))?.train(|m| {
        if let Some(v) = &m.validation {
            println!("step {} loss {:.5} val_loss {:.5}", m.step, m.loss, v.loss);
        }
        Ok(())
    })?;
    let mut model = trained.model; // a lstm_wgpu::Model, as Model::load gives
    let rows: Vec<Vec<f64>> = values.iter().map(|&v| vec![v]).collect();
    println!("next 5: {:.3?}", model.forecast(&rows, 5)?);
    Ok(())
}
