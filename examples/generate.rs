//! Samples text from a character checkpoint, e.g. one of `lstm-wgpu train
//! --checkpoint char.st`: `cargo run --example generate -- char.st.best "The "`.

use lstm_wgpu::Model;
use lstm_wgpu::infer::Sampling;

fn main() -> lstm_wgpu::Result<()> {
    let mut args = std::env::args().skip(1);
    let ck = args.next().unwrap_or("char.st.best".into());
    let prompt = args.next().unwrap_or("The ".into());
    let mut model = Model::load(&ck)?;
    let chars = model.vocab().map_or(0, |v| v.len());
    println!("vocabulary: {chars} characters");
    let s = Sampling {
        temperature: 0.8,
        top_k: 0,
        seed: 1,
    };
    println!("{prompt}{}", model.generate(&prompt, 120, &s)?);
    // Streaming: one token at a time, the state carried between calls.
    let state = model.state()?;
    let logits = model.step_token(0)?;
    model.with_state(&state)?;
    assert_eq!(
        model.step_token(0)?,
        logits,
        "the same state gives the same step"
    );
    Ok(())
}
