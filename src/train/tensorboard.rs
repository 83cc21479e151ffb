//! TensorBoard event files (`events.out.tfevents.*`): scalars and
//! histograms that `tensorboard --logdir DIR` shows.
//!
//! A file is a sequence of records, each
//!
//! ```text
//! u64 length (little endian) | u32 masked CRC32C of those 8 bytes
//! data (length bytes)        | u32 masked CRC32C of the data
//! ```
//!
//! where the data is one `tensorboard.Event` protocol buffer and the mask
//! is `((crc >> 15) | (crc << 17)) + 0xa282ead8` (wrapping). The first
//! event names the format (`file_version: "brain.Event:2"`). The message
//! structs below are written by hand with the field numbers of
//! TensorBoard's `event.proto`, `summary.proto` and `histogram.proto`
//! (tensorboard/compat/proto, copies of TensorFlow's), holding only the
//! fields written here; prost's derive encodes them, so no `.proto` file,
//! `protoc` or build script is needed.

use crate::error::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The `file_version` of the first event of every file.
pub const FILE_VERSION: &str = "brain.Event:2";

/// The protocol buffer messages written, with TensorBoard's field numbers.
pub mod proto {
    /// `tensorboard.Event`: one record of an event file.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Event {
        /// Seconds since the Unix epoch.
        #[prost(double, tag = "1")]
        pub wall_time: f64,
        /// The training step.
        #[prost(int64, tag = "2")]
        pub step: i64,
        /// What happened (the `what` oneof).
        #[prost(oneof = "What", tags = "3, 5, 7")]
        pub what: Option<What>,
    }

    /// The members of `Event.what` that are written.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum What {
        /// The first event of a file: [`super::FILE_VERSION`].
        #[prost(string, tag = "3")]
        FileVersion(String),
        /// Values of tags.
        #[prost(message, tag = "5")]
        Summary(Summary),
        /// A session started (written where a resumed run continues, so
        /// that readers drop the old file's events from that step on).
        #[prost(message, tag = "7")]
        SessionLog(SessionLog),
    }

    /// `tensorboard.Summary`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Summary {
        /// The values.
        #[prost(message, repeated, tag = "1")]
        pub value: Vec<Value>,
    }

    /// `tensorboard.Summary.Value`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Value {
        /// The series' name, `/` separating groups.
        #[prost(string, tag = "1")]
        pub tag: String,
        /// The value (the `value` oneof).
        #[prost(oneof = "Kind", tags = "2, 5")]
        pub value: Option<Kind>,
    }

    /// The members of `Summary.Value.value` that are written.
    #[derive(Clone, PartialEq, prost::Oneof)]
    pub enum Kind {
        /// A scalar.
        #[prost(float, tag = "2")]
        SimpleValue(f32),
        /// A histogram.
        #[prost(message, tag = "5")]
        Histo(HistogramProto),
    }

    /// `tensorboard.HistogramProto`: bucket `i` holds the values in
    /// (`bucket_limit[i-1]`, `bucket_limit[i]`], the first from −∞.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct HistogramProto {
        /// Smallest value.
        #[prost(double, tag = "1")]
        pub min: f64,
        /// Largest value.
        #[prost(double, tag = "2")]
        pub max: f64,
        /// Number of values.
        #[prost(double, tag = "3")]
        pub num: f64,
        /// Sum of the values.
        #[prost(double, tag = "4")]
        pub sum: f64,
        /// Sum of their squares.
        #[prost(double, tag = "5")]
        pub sum_squares: f64,
        /// Right edges of the buckets.
        #[prost(double, repeated, tag = "6")]
        pub bucket_limit: Vec<f64>,
        /// Counts of the buckets.
        #[prost(double, repeated, tag = "7")]
        pub bucket: Vec<f64>,
    }

    /// `tensorboard.SessionLog`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct SessionLog {
        /// `SessionStatus`: 1 is `START`.
        #[prost(int32, tag = "1")]
        pub status: i32,
    }

    /// `SessionLog.SessionStatus.START`.
    pub const SESSION_START: i32 = 1;
}

/// The mask TensorFlow's record files put on every CRC32C.
pub fn masked_crc(data: &[u8]) -> u32 {
    // ((crc >> 15) | (crc << 17)) + 0xa282ead8, wrapping.
    crc32c::crc32c(data)
        .rotate_right(15)
        .wrapping_add(0xa282_ead8)
}

/// `data` framed as one record: length, its masked CRC, data, its masked CRC.
pub fn record(data: &[u8]) -> Vec<u8> {
    let len = (data.len() as u64).to_le_bytes();
    let mut out = Vec::with_capacity(data.len() + 16);
    out.extend_from_slice(&len);
    out.extend_from_slice(&masked_crc(&len).to_le_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(&masked_crc(data).to_le_bytes());
    out
}

/// A histogram from bin counts computed elsewhere (on the host or the
/// GPU): `limits[i]` is the right edge of bin `i` (strictly increasing,
/// the first bin open to −∞), `counts[i]` its count, and the summary
/// statistics of the values binned.
#[derive(Clone, Debug, PartialEq)]
pub struct Histogram {
    /// Right edges of the bins.
    pub limits: Vec<f64>,
    /// Counts of the bins.
    pub counts: Vec<f64>,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Sum of the values.
    pub sum: f64,
    /// Sum of their squares.
    pub sum_squares: f64,
}

impl Histogram {
    /// Bins `values` on the host into bins of right edges `limits` (a
    /// value above the last edge goes into the last bin); non-finite
    /// values are left out.
    pub fn of_values(values: &[f64], limits: &[f64]) -> Result<Self> {
        let mut h = Histogram {
            limits: limits.to_vec(),
            counts: vec![0.0; limits.len()],
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            sum: 0.0,
            sum_squares: 0.0,
        };
        h.check_limits()?;
        for &v in values.iter().filter(|v| v.is_finite()) {
            let i = limits.partition_point(|&l| l < v).min(limits.len() - 1);
            h.counts[i] += 1.0;
            h.min = h.min.min(v);
            h.max = h.max.max(v);
            h.sum += v;
            h.sum_squares += v * v;
        }
        if h.num() == 0.0 {
            (h.min, h.max) = (0.0, 0.0);
        }
        Ok(h)
    }

    /// The number of values binned.
    pub fn num(&self) -> f64 {
        self.counts.iter().sum()
    }

    fn check_limits(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Invalid(format!("histogram: {m}")));
        if self.limits.is_empty() {
            return bad("no bins".into());
        }
        if self.limits.len() != self.counts.len() {
            return bad(format!(
                "{} bin edges for {} counts",
                self.limits.len(),
                self.counts.len()
            ));
        }
        if self.limits.iter().any(|l| l.is_nan()) || self.limits.windows(2).any(|w| w[0] >= w[1]) {
            return bad("bin edges must increase strictly".into());
        }
        if self.counts.iter().any(|c| !c.is_finite() || *c < 0.0) {
            return bad("bin counts must be finite and non-negative".into());
        }
        Ok(())
    }

    /// The protocol buffer, checked, without the empty bins below the
    /// first value and above the last: TensorBoard draws the first bucket
    /// from `min` and the last up to `max`, so empty outer bins would be
    /// drawn with edges out of order. No value: one empty bucket.
    pub fn to_proto(&self) -> Result<proto::HistogramProto> {
        self.check_limits()?;
        let first = self.counts.iter().position(|&c| c > 0.0);
        let last = self.counts.iter().rposition(|&c| c > 0.0);
        let (a, b) = match (first, last) {
            (Some(a), Some(b)) => (a, b),
            _ => (self.counts.len() - 1, self.counts.len() - 1),
        };
        Ok(proto::HistogramProto {
            min: self.min,
            max: self.max,
            num: self.num(),
            sum: self.sum,
            sum_squares: self.sum_squares,
            bucket_limit: self.limits[a..=b].to_vec(),
            bucket: self.counts[a..=b].to_vec(),
        })
    }
}

/// Seconds since the Unix epoch, now.
fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// This machine's name for file names (from /proc; `lstm-wgpu` where
/// unknown), with characters other than letters, digits, `-`, `_` and `.`
/// replaced by `_`.
pub fn host_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "lstm-wgpu".into()
    } else {
        name
    }
}

/// Writes one event file in a directory. Events are kept in memory and
/// written by [`EventWriter::flush`] (at checkpoints and at the end, like
/// the metrics file), so that a run refused or failing before its first
/// flush creates nothing. The first flush creates the directory (and its
/// parents) if missing and a new file
/// `events.out.tfevents.<unix secs>.<host>` (with `.1`, `.2`, … added
/// when that name is taken: no file is ever overwritten); later flushes
/// append to it.
pub struct EventWriter {
    dir: PathBuf,
    secs: u64,
    host: String,
    path: Option<PathBuf>,
    pending: Vec<u8>,
}

impl EventWriter {
    /// A writer for a new file in `dir`; its first event names the format.
    pub fn new(dir: &Path) -> Self {
        let wall = now();
        let mut w = Self {
            dir: dir.to_path_buf(),
            secs: wall as u64,
            host: host_name(),
            path: None,
            pending: Vec::new(),
        };
        w.push(proto::Event {
            wall_time: wall,
            step: 0,
            what: Some(proto::What::FileVersion(FILE_VERSION.into())),
        });
        w
    }

    /// A writer for a run resumed after step `step`: a new file whose
    /// second event is a session start at step `step + 1`, which tells
    /// TensorBoard to drop the events of earlier files from that step on
    /// (written after the checkpoint the run resumed from).
    pub fn resumed(dir: &Path, step: u64) -> Self {
        let mut w = Self::new(dir);
        w.push(proto::Event {
            wall_time: now(),
            step: step as i64 + 1,
            what: Some(proto::What::SessionLog(proto::SessionLog {
                status: proto::SESSION_START,
            })),
        });
        w
    }

    /// Buffers one event.
    pub fn push(&mut self, e: proto::Event) {
        self.pending
            .extend_from_slice(&record(&prost::Message::encode_to_vec(&e)));
    }

    fn value(&mut self, step: u64, tag: &str, value: proto::Kind) {
        self.push(proto::Event {
            wall_time: now(),
            step: step as i64,
            what: Some(proto::What::Summary(proto::Summary {
                value: vec![proto::Value {
                    tag: tag.into(),
                    value: Some(value),
                }],
            })),
        });
    }

    /// Buffers scalar `value` (stored as f32, as TensorBoard's
    /// `simple_value`) of series `tag` at `step`.
    pub fn scalar(&mut self, step: u64, tag: &str, value: f64) {
        self.value(step, tag, proto::Kind::SimpleValue(value as f32));
    }

    /// Buffers histogram `h` of series `tag` at `step`.
    pub fn histogram(&mut self, step: u64, tag: &str, h: &Histogram) -> Result<()> {
        let p = h.to_proto()?;
        self.value(step, tag, proto::Kind::Histo(p));
        Ok(())
    }

    /// The file written, once the first flush has created it.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Writes the buffered events.
    pub fn flush(&mut self) -> Result<()> {
        let path = match &self.path {
            Some(p) => p.clone(),
            None => {
                let (path, file) = self.create()?;
                self.path = Some(path.clone());
                drop(file);
                path
            }
        };
        if self.pending.is_empty() {
            return Ok(());
        }
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| {
                f.write_all(&self.pending)?;
                f.flush()
            })
            .map_err(|e| Error::file(&path, e))?;
        self.pending.clear();
        Ok(())
    }

    /// Creates the directory and a file of a name not yet taken.
    fn create(&self) -> Result<(PathBuf, std::fs::File)> {
        std::fs::create_dir_all(&self.dir).map_err(|e| Error::file(&self.dir, e))?;
        let base = format!("events.out.tfevents.{}.{}", self.secs, self.host);
        for n in 0..1000 {
            let name = match n {
                0 => base.clone(),
                n => format!("{base}.{n}"),
            };
            let path = self.dir.join(name);
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => return Ok((path, f)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(Error::file(&path, e)),
            }
        }
        Err(Error::file(
            self.dir.join(base),
            "a thousand event files of this name exist already",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::manual_rotate)] // the mask as TensorFlow writes it
    fn crc32c_and_mask_match_known_values() {
        // CRC32C's check value (RFC 3720, B.4).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
        let crc: u32 = 0xe306_9283;
        assert_eq!(
            masked_crc(b"123456789"),
            ((crc >> 15) | (crc << 17)).wrapping_add(0xa282_ead8)
        );
    }

    #[test]
    fn records_frame_their_data() {
        let r = record(b"abc");
        assert_eq!(r.len(), 8 + 4 + 3 + 4);
        assert_eq!(&r[..8], &3u64.to_le_bytes());
        assert_eq!(&r[8..12], &masked_crc(&3u64.to_le_bytes()).to_le_bytes());
        assert_eq!(&r[12..15], b"abc");
        assert_eq!(&r[15..], &masked_crc(b"abc").to_le_bytes());
    }

    #[test]
    fn scalar_event_has_tensorboards_field_numbers() {
        let e = proto::Event {
            wall_time: 1.5,
            step: 3,
            what: Some(proto::What::Summary(proto::Summary {
                value: vec![proto::Value {
                    tag: "a".into(),
                    value: Some(proto::Kind::SimpleValue(2.0)),
                }],
            })),
        };
        let bytes = prost::Message::encode_to_vec(&e);
        let mut want = vec![0x09]; // field 1, fixed64
        want.extend_from_slice(&1.5f64.to_le_bytes());
        want.extend_from_slice(&[0x10, 3]); // field 2, varint
        want.extend_from_slice(&[0x2a, 10]); // field 5, 10 bytes
        want.extend_from_slice(&[0x0a, 8]); // Summary.value, 8 bytes
        want.extend_from_slice(&[0x0a, 1, b'a']); // tag
        want.push(0x15); // simple_value, fixed32
        want.extend_from_slice(&2.0f32.to_le_bytes());
        assert_eq!(bytes, want);
    }

    #[test]
    fn histograms_bin_and_refuse_bad_edges() {
        let h = Histogram::of_values(&[-5.0, 0.0, 0.5, 1.0, 7.0, f64::NAN], &[0.0, 1.0, 2.0])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(h.counts, [2.0, 2.0, 1.0]);
        assert_eq!((h.min, h.max, h.num()), (-5.0, 7.0, 5.0));
        assert_eq!(h.sum, 3.5);
        assert_eq!(h.sum_squares, 25.0 + 0.25 + 1.0 + 49.0);
        assert!(Histogram::of_values(&[1.0], &[1.0, 1.0]).is_err());
        assert!(Histogram::of_values(&[1.0], &[]).is_err());
        let p = h.to_proto().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((p.num, p.bucket.len()), (5.0, 3));
        let h = Histogram::of_values(&[0.5, 0.7, 2.5], &[-1.0, 0.0, 1.0, 2.0, 3.0, 4.0])
            .unwrap_or_else(|e| panic!("{e}"));
        let p = h.to_proto().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.bucket_limit, [1.0, 2.0, 3.0]);
        assert_eq!(p.bucket, [2.0, 0.0, 1.0]);
        let none = Histogram::of_values(&[], &[0.0, 1.0]).unwrap_or_else(|e| panic!("{e}"));
        let p = none.to_proto().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (p.bucket_limit, p.bucket, p.num),
            (vec![1.0], vec![0.0], 0.0)
        );
        let mut bad = h.clone();
        bad.counts.pop();
        assert!(bad.to_proto().is_err());
    }
}
