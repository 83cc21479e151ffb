//! [`Reducer`] between the threads of one process: data parallelism over
//! several adapters of a machine without MPI (`train --devices`).
//!
//! Each rank puts its part in its slot; the last to arrive adds the parts
//! in rank order ([`sum_in_rank_order`], the same bits as `MpiReducer`)
//! and wakes the others, who copy the sum. A rank whose thread ends (an
//! error, a panic, or the end of its run) leaves the group when its
//! reducer drops: a sum that still waits for it, or is begun after, fails
//! at once naming it, so no rank waits forever on a failed one.

use super::reduce::{Reducer, sum_in_rank_order};
use crate::error::{Error, Result};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A rank's part of a sum.
enum Part {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// The element types a [`ThreadReducer`] sums.
trait Elem: Copy + std::ops::AddAssign + Sized {
    fn wrap(v: Vec<Self>) -> Part;
    fn unwrap(p: &Part) -> Option<&[Self]>;
}

impl Elem for f32 {
    fn wrap(v: Vec<Self>) -> Part {
        Part::F32(v)
    }
    fn unwrap(p: &Part) -> Option<&[Self]> {
        match p {
            Part::F32(v) => Some(v),
            Part::F64(_) => None,
        }
    }
}

impl Elem for f64 {
    fn wrap(v: Vec<Self>) -> Part {
        Part::F64(v)
    }
    fn unwrap(p: &Part) -> Option<&[Self]> {
        match p {
            Part::F64(v) => Some(v),
            Part::F32(_) => None,
        }
    }
}

/// What the ranks of a group share.
struct State {
    /// Sums completed.
    round: u64,
    /// This round's parts, by rank.
    parts: Vec<Option<Part>>,
    /// The last completed round's sum (kept until every rank has copied
    /// it: the next round cannot complete before).
    sum: Option<Part>,
    /// Ranks whose reducer was dropped.
    left: Vec<bool>,
    /// Ranks whose sum failed because of another rank (not a cause).
    followed: Vec<bool>,
    /// A sum's failure every later sum repeats: a timeout, or parts that
    /// do not match.
    broken: Option<String>,
}

struct Shared {
    size: usize,
    timeout: Option<Duration>,
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic never leaves the state half-written: keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A group of `size` ranks in one process, each a thread holding one
/// [`ThreadReducer`] ([`ThreadGroup::reducers`], or [`ThreadGroup::run`],
/// which spawns the threads).
pub struct ThreadGroup {
    size: usize,
    timeout: Option<Duration>,
}

impl ThreadGroup {
    /// A group of `size` ranks (at least 1), waiting as long as a sum
    /// takes.
    pub fn new(size: usize) -> Self {
        ThreadGroup {
            size: size.max(1),
            timeout: None,
        }
    }

    /// Fails a sum that waits more than `timeout` for a rank's part
    /// (`None`: waits forever, but never for a rank that left).
    pub fn with_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.timeout = timeout;
        self
    }

    /// Ranks in the group.
    pub fn size(&self) -> usize {
        self.size
    }

    /// One reducer per rank, in rank order, sharing one state: give each
    /// to its own thread.
    pub fn reducers(&self) -> Vec<ThreadReducer> {
        let n = self.size;
        let shared = Arc::new(Shared {
            size: n,
            timeout: self.timeout,
            state: Mutex::new(State {
                round: 0,
                parts: (0..n).map(|_| None).collect(),
                sum: None,
                left: vec![false; n],
                followed: vec![false; n],
                broken: None,
            }),
            wake: Condvar::new(),
        });
        (0..n)
            .map(|rank| ThreadReducer {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Runs `f` on one thread per rank, each with its rank's reducer, and
    /// returns every rank's result in rank order. When ranks fail (an
    /// error or a panic), the error is that of the first rank that failed
    /// of its own accord (not because a peer left), as `rank R of N: …`.
    pub fn run<T, F>(&self, f: F) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(ThreadReducer) -> Result<T> + Sync,
    {
        let reducers = self.reducers();
        let shared = reducers[0].shared.clone();
        let f = &f;
        let results: Vec<Result<T>> = std::thread::scope(|s| {
            let handles: Vec<_> = reducers
                .into_iter()
                .map(|r| s.spawn(move || f(r)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|p| {
                        let what = p
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| p.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "no message".into());
                        Err(Error::Invalid(format!("panicked: {what}")))
                    })
                })
                .collect()
        });
        let n = self.size;
        let followed = shared.lock().followed.clone();
        let failed: Vec<usize> = (0..n).filter(|&r| results[r].is_err()).collect();
        let Some(&cause) = failed.iter().find(|&&r| !followed[r]).or(failed.first()) else {
            return Ok(results.into_iter().flatten().collect());
        };
        let msgs: Vec<String> = (results.iter())
            .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
            .collect();
        let e = results.into_iter().nth(cause).and_then(|r| r.err());
        let e = e.unwrap_or_else(|| Error::Invalid("failed".into()));
        // A refusal every rank meets alike (a setting) needs no rank.
        if msgs.len() == n && msgs.iter().all(|m| *m == msgs[0]) {
            return Err(e);
        }
        let msg = e.to_string();
        let msg = msg.split_whitespace().collect::<Vec<_>>().join(" ");
        Err(Error::Invalid(format!("rank {cause} of {n}: {msg}")))
    }
}

/// One rank of a [`ThreadGroup`]. Dropping it leaves the group.
pub struct ThreadReducer {
    rank: usize,
    shared: Arc<Shared>,
}

impl ThreadReducer {
    fn sum<T: Elem>(&self, v: &mut [T]) -> Result<()> {
        let sh = &*self.shared;
        let (n, me) = (sh.size, self.rank);
        if n == 1 || v.is_empty() {
            return Ok(());
        }
        let mut st = sh.lock();
        if st.broken.is_some() {
            st.followed[me] = true;
            return Err(self.broken(&st));
        }
        let round = st.round;
        st.parts[me] = Some(T::wrap(v.to_vec()));
        if st.parts.iter().all(Option::is_some) {
            let parts: Vec<Part> = st.parts.iter_mut().filter_map(Option::take).collect();
            let mut all = Vec::with_capacity(v.len() * n);
            for (r, p) in parts.iter().enumerate() {
                match T::unwrap(p) {
                    Some(p) if p.len() == v.len() => all.extend_from_slice(p),
                    _ => {
                        st.broken = Some(format!(
                            "rank {r} summed other values than rank {me} (a collective out of order)"
                        ));
                        sh.wake.notify_all();
                        return Err(self.broken(&st));
                    }
                }
            }
            v.copy_from_slice(&sum_in_rank_order(&all, n));
            st.sum = Some(T::wrap(v.to_vec()));
            st.round += 1;
            sh.wake.notify_all();
            return Ok(());
        }
        let deadline = sh.timeout.map(|t| Instant::now() + t);
        loop {
            if st.round != round {
                let sum = st.sum.as_ref().and_then(T::unwrap);
                v.copy_from_slice(sum.expect("the round's sum, of this type"));
                return Ok(());
            }
            if st.broken.is_some() {
                st.followed[me] = true;
                return Err(self.broken(&st));
            }
            let gone: Vec<usize> = (0..n)
                .filter(|&r| st.left[r] && st.parts[r].is_none())
                .collect();
            if !gone.is_empty() {
                st.followed[me] = true;
                return Err(Error::Invalid(format!(
                    "rank {} of {n} ended before this sum (it failed); rank {me} stops",
                    names(&gone)
                )));
            }
            st = match deadline {
                None => sh.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        let silent: Vec<usize> =
                            (0..n).filter(|&r| st.parts[r].is_none()).collect();
                        let secs = sh.timeout.map_or(0.0, |t| t.as_secs_f64());
                        st.broken = Some(format!(
                            "rank {} sent no part of the sum within {secs} s (it hangs or died)",
                            names(&silent)
                        ));
                        sh.wake.notify_all();
                        return Err(self.broken(&st));
                    }
                    sh.wake
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
    }

    /// The error of a sum on a broken group.
    fn broken(&self, st: &State) -> Error {
        let why = st.broken.as_deref().unwrap_or_default();
        Error::Invalid(format!("{why}; rank {} stops", self.rank))
    }
}

/// Ranks as `1, 3`.
fn names(ranks: &[usize]) -> String {
    let v: Vec<String> = ranks.iter().map(usize::to_string).collect();
    v.join(", ")
}

impl Drop for ThreadReducer {
    fn drop(&mut self) {
        let mut st = self.shared.lock();
        st.left[self.rank] = true;
        self.shared.wake.notify_all();
    }
}

impl Reducer for ThreadReducer {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn sum_f32(&self, v: &mut [f32]) -> Result<()> {
        self.sum(v)
    }

    fn sum_f64(&self, v: &mut [f64]) -> Result<()> {
        self.sum(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_in_rank_order_on_every_rank() {
        let got = ThreadGroup::new(3)
            .run(|r| {
                let mut v = [[1e8f32, 1.0], [1.0, 2.0], [-1e8, 3.0]][r.rank()];
                let mut w = [r.rank() as f64];
                for _ in 0..20 {
                    let mut u = v;
                    r.sum_f32(&mut u)?;
                    r.sum_f64(&mut w)?;
                    v = [v[0], u[1] / 3.0];
                    assert_eq!(u[0], 0.0, "left to right: (1e8 + 1) - 1e8");
                }
                Ok((v, w))
            })
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(got.windows(2).all(|p| p[0].0[1] == p[1].0[1]));
        assert_eq!(got[2].1, [3f64.powi(20)]);
    }

    #[test]
    fn a_failed_rank_is_named_and_nobody_waits() {
        for panics in [false, true] {
            let e = ThreadGroup::new(3)
                .run(|r| {
                    let mut v = [1.0f32];
                    r.sum_f32(&mut v)?;
                    if r.rank() == 1 {
                        std::thread::sleep(Duration::from_millis(50));
                        if panics {
                            panic!("rank one broke");
                        }
                        return Err(Error::Invalid("rank one broke".into()));
                    }
                    r.sum_f32(&mut v)?;
                    // A later sum fails at once too.
                    r.sum_f32(&mut v).map(|_| ())
                })
                .err()
                .map(|e| e.to_string());
            let e = e.unwrap_or_else(|| panic!("no error"));
            assert!(
                e.starts_with("rank 1 of 3: ") && e.contains("rank one broke"),
                "{e}"
            );
        }
    }

    #[test]
    fn a_silent_rank_times_out() {
        let g = ThreadGroup::new(2).with_timeout(Some(Duration::from_millis(100)));
        let e = g
            .run(|r| {
                if r.rank() == 1 {
                    std::thread::sleep(Duration::from_millis(400));
                }
                r.sum_f64(&mut [1.0])
            })
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("rank 1 sent no part of the sum within 0.1 s"),
            "{e}"
        );
    }
}
