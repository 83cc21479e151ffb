//! Variable-length batches: sequences padded to a common length.

use crate::error::{Error, Result};

/// Sequences padded to a common length.
#[derive(Clone, Debug, PartialEq)]
pub struct Padded {
    /// `[max_len, batch, num_features]`, zeros past each length.
    pub data: Vec<f32>,
    /// Each sequence's length (for `Batch::lengths`).
    pub lengths: Vec<usize>,
    /// `T_max`.
    pub max_len: usize,
    /// `B`.
    pub batch: usize,
    /// `F`.
    pub num_features: usize,
}

/// Pads sequences given row-major as `[len_i, F]` to `[T_max, B, F]`
/// (zeros) and returns their lengths; every sequence needs at least one step.
pub fn pad_sequences<S: AsRef<[f32]>>(seqs: &[S], num_features: usize) -> Result<Padded> {
    if seqs.is_empty() || num_features == 0 {
        return Err(Error::Invalid(format!(
            "padding needs at least one sequence and one feature ({} sequences, {num_features} features)",
            seqs.len()
        )));
    }
    let mut lengths = Vec::with_capacity(seqs.len());
    for (i, s) in seqs.iter().enumerate() {
        let n = s.as_ref().len();
        if n == 0 || n % num_features != 0 {
            return Err(Error::tensor(
                format!("sequence {i}"),
                format!("{n} values are not a positive multiple of {num_features} features"),
            ));
        }
        lengths.push(n / num_features);
    }
    let max_len = *lengths.iter().max().unwrap_or(&0);
    let b_n = seqs.len();
    let mut data = vec![0f32; max_len * b_n * num_features];
    for (b, s) in seqs.iter().enumerate() {
        for (t, row) in s.as_ref().chunks_exact(num_features).enumerate() {
            let o = (t * b_n + b) * num_features;
            data[o..o + num_features].copy_from_slice(row);
        }
    }
    Ok(Padded {
        data,
        lengths,
        max_len,
        batch: b_n,
        num_features,
    })
}

/// Pads token sequences to `[T_max, B]` with `pad` and returns the ids and
/// lengths; every sequence needs at least one token.
pub fn pad_tokens<S: AsRef<[u32]>>(seqs: &[S], pad: u32) -> Result<(Vec<u32>, Vec<usize>)> {
    if seqs.is_empty() {
        return Err(Error::Invalid("padding needs at least one sequence".into()));
    }
    if let Some(i) = seqs.iter().position(|s| s.as_ref().is_empty()) {
        return Err(Error::tensor(format!("sequence {i}"), "is empty"));
    }
    let lengths: Vec<usize> = seqs.iter().map(|s| s.as_ref().len()).collect();
    let max_len = *lengths.iter().max().unwrap_or(&0);
    let b_n = seqs.len();
    let mut ids = vec![pad; max_len * b_n];
    for (b, s) in seqs.iter().enumerate() {
        for (t, &id) in s.as_ref().iter().enumerate() {
            ids[t * b_n + b] = id;
        }
    }
    Ok((ids, lengths))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padding() {
        let p = pad_sequences(&[vec![1., 2., 3., 4.], vec![5., 6.]], 2).unwrap();
        assert_eq!((p.max_len, p.batch, p.num_features), (2, 2, 2));
        assert_eq!(p.lengths, vec![2, 1]);
        assert_eq!(p.data, vec![1., 2., 5., 6., 3., 4., 0., 0.]);
        assert!(pad_sequences(&[vec![1., 2., 3.]], 2).is_err());
        assert!(pad_sequences::<Vec<f32>>(&[vec![]], 2).is_err());
        assert!(pad_sequences::<Vec<f32>>(&[], 2).is_err());

        let (ids, lens) = pad_tokens(&[vec![1, 2, 3], vec![4]], 9).unwrap();
        assert_eq!(ids, vec![1, 4, 2, 9, 3, 9]);
        assert_eq!(lens, vec![3, 1]);
        assert!(pad_tokens::<Vec<u32>>(&[vec![]], 0).is_err());
    }
}
