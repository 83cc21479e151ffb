//! A checkpoint as an ONNX model for inference (`export --to onnx`): the
//! standard `LSTM` operator per layer, the embedding (text) or the
//! normaliser (series) before it and the head after it, so that
//! onnxruntime gives what [`crate::Model`] gives.
//!
//! The protobuf messages are written by hand with the field numbers of
//! onnx/onnx.proto (only the fields written here), and prost's derive
//! encodes them, as `train::tensorboard` does for its protos: the Rust
//! crates that write ONNX either generate their code with protoc or
//! prost-build in a build script, or are young 0.1 releases, and this
//! subset is small.

use super::{Checkpoint, Task};
use crate::error::{Error, Result};
use crate::model::norm::Norm;
use crate::train::Head;
use prost::Message;

/// The operator set the graph is written for (LSTM-14, Squeeze-13 with
/// `axes` as an input, Split-13).
pub const OPSET: i64 = 14;
/// The IR version that goes with [`OPSET`] (onnx 1.9).
pub const IR_VERSION: i64 = 7;

/// The messages of onnx.proto that are written, with its field numbers.
/// Oneofs of a single member written are plain optional fields (the same
/// bytes on the wire).
pub mod proto {
    /// `onnx.ModelProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ModelProto {
        /// `ir_version = 1`.
        #[prost(int64, tag = "1")]
        pub ir_version: i64,
        /// `producer_name = 2`.
        #[prost(string, tag = "2")]
        pub producer_name: String,
        /// `producer_version = 3`.
        #[prost(string, tag = "3")]
        pub producer_version: String,
        /// `doc_string = 6`.
        #[prost(string, tag = "6")]
        pub doc_string: String,
        /// `graph = 7`.
        #[prost(message, optional, tag = "7")]
        pub graph: Option<GraphProto>,
        /// `opset_import = 8`.
        #[prost(message, repeated, tag = "8")]
        pub opset_import: Vec<OperatorSetIdProto>,
        /// `metadata_props = 14`.
        #[prost(message, repeated, tag = "14")]
        pub metadata_props: Vec<StringStringEntryProto>,
    }

    /// `onnx.OperatorSetIdProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct OperatorSetIdProto {
        /// `domain = 1` (empty: the standard operators).
        #[prost(string, tag = "1")]
        pub domain: String,
        /// `version = 2`.
        #[prost(int64, tag = "2")]
        pub version: i64,
    }

    /// `onnx.StringStringEntryProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct StringStringEntryProto {
        /// `key = 1`.
        #[prost(string, tag = "1")]
        pub key: String,
        /// `value = 2`.
        #[prost(string, tag = "2")]
        pub value: String,
    }

    /// `onnx.GraphProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct GraphProto {
        /// `node = 1`, in topological order.
        #[prost(message, repeated, tag = "1")]
        pub node: Vec<NodeProto>,
        /// `name = 2`.
        #[prost(string, tag = "2")]
        pub name: String,
        /// `initializer = 5`.
        #[prost(message, repeated, tag = "5")]
        pub initializer: Vec<TensorProto>,
        /// `input = 11`.
        #[prost(message, repeated, tag = "11")]
        pub input: Vec<ValueInfoProto>,
        /// `output = 12`.
        #[prost(message, repeated, tag = "12")]
        pub output: Vec<ValueInfoProto>,
    }

    /// `onnx.NodeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct NodeProto {
        /// `input = 1` (an empty name: an optional input left out).
        #[prost(string, repeated, tag = "1")]
        pub input: Vec<String>,
        /// `output = 2`.
        #[prost(string, repeated, tag = "2")]
        pub output: Vec<String>,
        /// `name = 3`.
        #[prost(string, tag = "3")]
        pub name: String,
        /// `op_type = 4`.
        #[prost(string, tag = "4")]
        pub op_type: String,
        /// `attribute = 5`.
        #[prost(message, repeated, tag = "5")]
        pub attribute: Vec<AttributeProto>,
    }

    /// `onnx.AttributeProto` (the INT and STRING kinds).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct AttributeProto {
        /// `name = 1`.
        #[prost(string, tag = "1")]
        pub name: String,
        /// `i = 3` (kept when 0: it is proto2's optional).
        #[prost(int64, optional, tag = "3")]
        pub i: Option<i64>,
        /// `s = 4`.
        #[prost(bytes = "vec", optional, tag = "4")]
        pub s: Option<Vec<u8>>,
        /// `type = 20`: `AttributeType` (INT = 2, STRING = 3).
        #[prost(int32, tag = "20")]
        pub r#type: i32,
    }

    /// `onnx.TensorProto` (little-endian `raw_data`).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorProto {
        /// `dims = 1` (proto2: not packed).
        #[prost(int64, repeated, packed = "false", tag = "1")]
        pub dims: Vec<i64>,
        /// `data_type = 2`: `DataType` (FLOAT = 1, INT64 = 7).
        #[prost(int32, tag = "2")]
        pub data_type: i32,
        /// `name = 8`.
        #[prost(string, tag = "8")]
        pub name: String,
        /// `raw_data = 9`.
        #[prost(bytes = "vec", tag = "9")]
        pub raw_data: Vec<u8>,
    }

    /// `onnx.ValueInfoProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct ValueInfoProto {
        /// `name = 1`.
        #[prost(string, tag = "1")]
        pub name: String,
        /// `type = 2`.
        #[prost(message, optional, tag = "2")]
        pub r#type: Option<TypeProto>,
        /// `doc_string = 3`.
        #[prost(string, tag = "3")]
        pub doc_string: String,
    }

    /// `onnx.TypeProto` (its `value` oneof's `tensor_type = 1` only).
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TypeProto {
        /// `tensor_type = 1`.
        #[prost(message, optional, tag = "1")]
        pub tensor_type: Option<TensorTypeProto>,
    }

    /// `onnx.TypeProto.Tensor`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorTypeProto {
        /// `elem_type = 1`: a `TensorProto.DataType`.
        #[prost(int32, tag = "1")]
        pub elem_type: i32,
        /// `shape = 2`.
        #[prost(message, optional, tag = "2")]
        pub shape: Option<TensorShapeProto>,
    }

    /// `onnx.TensorShapeProto`.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TensorShapeProto {
        /// `dim = 1`.
        #[prost(message, repeated, tag = "1")]
        pub dim: Vec<Dimension>,
    }

    /// `onnx.TensorShapeProto.Dimension`: one of its `value` oneof.
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Dimension {
        /// `dim_value = 1`: a fixed size.
        #[prost(int64, optional, tag = "1")]
        pub dim_value: Option<i64>,
        /// `dim_param = 2`: a named dynamic size.
        #[prost(string, optional, tag = "2")]
        pub dim_param: Option<String>,
    }
}

use proto::*;

/// `TensorProto.DataType` FLOAT.
const FLOAT: i32 = 1;
/// `TensorProto.DataType` INT64.
const INT64: i32 = 7;

/// A size of a graph input or output: fixed or named (dynamic).
enum Dim {
    Fixed(usize),
    Named(&'static str),
}

fn value_info(name: &str, elem_type: i32, dims: &[Dim], doc: &str) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => Dimension {
                dim_value: Some(*n as i64),
                dim_param: None,
            },
            Dim::Named(s) => Dimension {
                dim_value: None,
                dim_param: Some(s.to_string()),
            },
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            tensor_type: Some(TensorTypeProto {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            }),
        }),
        doc_string: doc.into(),
    }
}

fn int_attr(name: &str, i: i64) -> AttributeProto {
    AttributeProto {
        name: name.into(),
        i: Some(i),
        s: None,
        r#type: 2,
    }
}

/// The nodes and initializers of a graph being built.
#[derive(Default)]
struct Builder {
    nodes: Vec<NodeProto>,
    inits: Vec<TensorProto>,
}

impl Builder {
    /// Node `op` from `inputs` to `outputs`, named after its first output.
    fn node(&mut self, op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) {
        self.nodes.push(NodeProto {
            input: inputs.iter().map(|s| s.to_string()).collect(),
            output: outputs.iter().map(|s| s.to_string()).collect(),
            name: format!("{op}:{}", outputs[0]),
            op_type: op.into(),
            attribute: attrs,
        });
    }

    fn f32(&mut self, name: &str, dims: &[usize], data: &[f32]) {
        debug_assert_eq!(dims.iter().product::<usize>(), data.len());
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: FLOAT,
            name: name.into(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }

    fn i64(&mut self, name: &str, dims: &[usize], data: &[i64]) {
        self.inits.push(TensorProto {
            dims: dims.iter().map(|&d| d as i64).collect(),
            data_type: INT64,
            name: name.into(),
            raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        });
    }

    /// `y = x · wᵀ + b` for `w` `[out, in]` (PyTorch's nn.Linear layout,
    /// stored transposed for MatMul, which broadcasts over leading axes).
    fn linear(&mut self, x: &str, w: &[f32], b: &[f32], out: usize, y: &str) {
        let inp = w.len() / out;
        let wt: Vec<f32> = (0..inp * out)
            .map(|k| w[(k % out) * inp + k / out])
            .collect();
        self.f32("head.weight_t", &[inp, out], &wt);
        self.f32("head.bias", &[out], b);
        self.node("MatMul", &[x, "head.weight_t"], &["head.matmul"], vec![]);
        self.node("Add", &["head.matmul", "head.bias"], &[y], vec![]);
    }
}

/// PyTorch's gate blocks i,f,g,o of a `[4H, ...]` tensor in ONNX's order
/// i,o,f,c (c is PyTorch's g).
fn iofc(v: &[f32]) -> Vec<f32> {
    let q = v.len() / 4;
    [0, 3, 1, 2]
        .iter()
        .flat_map(|&g| v[g * q..(g + 1) * q].iter().copied())
        .collect()
}

/// The `--norm` name of a norm (what `train` was given).
fn norm_flag(n: Norm) -> &'static str {
    match n {
        Norm::None => "none",
        Norm::Layer { .. } => "layer",
        Norm::LayerCell => "layer-cell",
        Norm::Batch { .. } => "batch",
        Norm::StepBatch { .. } => "step-batch",
        Norm::RecurrentBatch { .. } => "recurrent-batch",
    }
}

impl Checkpoint {
    /// What the ONNX export cannot express, by the `train` flag that made
    /// it: norms (between layers or in the cell), residual links, cells
    /// other than the LSTM, zoneout, projections, the attention head.
    fn onnx_refusal(&self) -> Option<String> {
        let net = &self.config.net;
        if net.norm != Norm::None {
            return Some(format!("--norm {}", norm_flag(net.norm)));
        }
        if net.residual {
            return Some("--residual".into());
        }
        if net.cell != crate::kernels::cell::Cell::Lstm {
            return Some(format!("--cell {}", net.cell.name()));
        }
        // Eval-mode zoneout mixes the previous state into each step.
        if net.zoneout.0 > 0.0 {
            return Some("--zoneout-h".into());
        }
        if net.zoneout.1 > 0.0 {
            return Some("--zoneout-c".into());
        }
        // The ONNX LSTM operator has no projection of h.
        if net.proj > 0 {
            return Some(format!(
                "--proj-size {} (the ONNX LSTM operator has no projection)",
                net.proj
            ));
        }
        // The pooling reads every step of a window (ONNX graphs of it
        // would need a loop over the valid steps); not written.
        if let Some(a) = net.attention {
            return Some(format!("--head attention (--attention {})", a.name()));
        }
        None
    }

    /// The model as an ONNX file (opset [`OPSET`]) that gives what
    /// [`crate::Model`] gives. Inputs: `tokens` (int64 `[time, batch]`,
    /// text) or `x` (float `[time, batch, features]` in the data's units,
    /// series), and `h0`, `c0` (float `[layers, batch, hidden]`, optional:
    /// zero by default, a batch of 1 broadcasts). Outputs: `logits`
    /// (`[time, batch, vocab]`, text) or `y` (`[batch, horizon]` in the
    /// target's units, series), and `h_n`, `c_n` (`[layers, batch,
    /// hidden]`). The vocabulary or the normaliser, the window length and
    /// the horizon are in the metadata. The bytes depend only on the
    /// checkpoint. A model the ONNX `LSTM` cannot express is refused by
    /// the flag that made it.
    pub fn onnx(&self) -> Result<Vec<u8>> {
        if let Some(flag) = self.onnx_refusal() {
            return Err(Error::file(
                &self.path,
                format!("export --to onnx: {flag} is not in the ONNX export"),
            ));
        }
        let net = &self.config.net;
        let (h, layers) = (net.hidden, net.layers);
        let params: std::collections::HashMap<String, Vec<f32>> = self
            .state_dict()
            .into_iter()
            .map(|t| (t.name, t.data))
            .collect();
        let p = |name: &str| -> Result<&[f32]> {
            params
                .get(name)
                .map(Vec::as_slice)
                .ok_or_else(|| Error::tensor(name, "missing from the checkpoint"))
        };
        let mut g = Builder::default();
        let (mut inputs, mut outputs) = (Vec::new(), Vec::new());
        let (time, batch) = (Dim::Named("time"), Dim::Named("batch"));

        // The input, as the first layer reads it.
        let (source, mut x) = match net.head {
            Head::Language { vocab, embed } => {
                inputs.push(value_info(
                    "tokens",
                    INT64,
                    &[time, batch],
                    "token ids (the vocabulary's order)",
                ));
                g.f32("embedding.weight", &[vocab, embed], p("embedding.weight")?);
                g.node(
                    "Gather",
                    &["embedding.weight", "tokens"],
                    &["embedded"],
                    vec![],
                );
                ("tokens", "embedded".to_string())
            }
            Head::Regression { features, .. } | Head::Sequence { features, .. } => {
                inputs.push(value_info(
                    "x",
                    FLOAT,
                    &[time, batch, Dim::Fixed(features)],
                    "rows of the features, in their units",
                ));
                let mut x = "x".to_string();
                if let Some(n) = &self.normalizer {
                    let mean: Vec<f32> = n.features.iter().map(|c| c.mean as f32).collect();
                    let std: Vec<f32> = n.features.iter().map(|c| c.std as f32).collect();
                    g.f32("features.mean", &[features], &mean);
                    g.f32("features.std", &[features], &std);
                    g.node("Sub", &["x", "features.mean"], &["x.centred"], vec![]);
                    g.node("Div", &["x.centred", "features.std"], &["x.z"], vec![]);
                    x = "x.z".into();
                }
                ("x", x)
            }
        };

        // h0 and c0: zero [L, 1, H] unless fed, broadcast to the batch.
        let zeros = vec![0f32; layers * h];
        for s in ["h0", "c0"] {
            inputs.push(value_info(
                s,
                FLOAT,
                &[Dim::Fixed(layers), Dim::Named("state_batch"), Dim::Fixed(h)],
                "initial state per layer (default zero; batch 1 or the input's)",
            ));
            g.f32(s, &[layers, 1, h], &zeros);
        }
        g.i64("batch_axis", &[1], &[1]);
        g.i64("state_layers", &[1], &[layers as i64]);
        g.i64("state_hidden", &[1], &[h as i64]);
        g.i64("axis_1", &[1], &[1]);
        g.node("Shape", &[source], &["input.shape"], vec![]);
        g.node(
            "Gather",
            &["input.shape", "batch_axis"],
            &["input.batch"],
            vec![],
        );
        g.node(
            "Concat",
            &["state_layers", "input.batch", "state_hidden"],
            &["state.shape"],
            vec![int_attr("axis", 0)],
        );
        let per_layer = |s: &str| (0..layers).map(|l| format!("{s}.l{l}")).collect::<Vec<_>>();
        let (h0s, c0s) = (per_layer("h0"), per_layer("c0"));
        for (s, split) in [("h0", &h0s), ("c0", &c0s)] {
            let full = format!("{s}.batch");
            g.node("Expand", &[s, "state.shape"], &[&full], vec![]);
            let outs: Vec<&str> = split.iter().map(String::as_str).collect();
            g.node("Split", &[&full], &outs, vec![int_attr("axis", 0)]);
        }

        // One LSTM node per layer; W, R, B re-ordered to i,o,f,c.
        let (hns, cns) = (per_layer("h_n"), per_layer("c_n"));
        for (l, ((h0, c0), (hn, cn))) in h0s.iter().zip(&c0s).zip(hns.iter().zip(&cns)).enumerate()
        {
            let wih = p(&format!("lstm.weight_ih_l{l}"))?;
            let whh = p(&format!("lstm.weight_hh_l{l}"))?;
            let mut b = iofc(p(&format!("lstm.bias_ih_l{l}"))?);
            b.extend(iofc(p(&format!("lstm.bias_hh_l{l}"))?));
            let (w, r, bn) = (format!("W.l{l}"), format!("R.l{l}"), format!("B.l{l}"));
            g.f32(&w, &[1, 4 * h, wih.len() / (4 * h)], &iofc(wih));
            g.f32(&r, &[1, 4 * h, h], &iofc(whh));
            g.f32(&bn, &[1, 8 * h], &b);
            let y4 = format!("Y.l{l}");
            g.node(
                "LSTM",
                &[&x, &w, &r, &bn, "", h0, c0],
                &[&y4, hn, cn],
                vec![int_attr("hidden_size", h as i64)],
            );
            // Y is [T, directions = 1, B, H].
            let y = format!("out.l{l}");
            g.node("Squeeze", &[&y4, "axis_1"], &[&y], vec![]);
            x = y;
        }
        for (s, parts) in [("h_n", &hns), ("c_n", &cns)] {
            let ins: Vec<&str> = parts.iter().map(String::as_str).collect();
            g.node("Concat", &ins, &[s], vec![int_attr("axis", 0)]);
        }

        // The head, as predict and generate apply it.
        let (hw, hb) = (p("head.weight")?, p("head.bias")?);
        let denorm = |g: &mut Builder, z: &str, y: &str| match &self.normalizer {
            Some(n) => {
                g.f32("target.std", &[1], &[n.target.std as f32]);
                g.f32("target.mean", &[1], &[n.target.mean as f32]);
                g.node("Mul", &[z, "target.std"], &["y.scaled"], vec![]);
                g.node("Add", &["y.scaled", "target.mean"], &[y], vec![]);
            }
            None => g.node("Identity", &[z], &[y], vec![]),
        };
        match net.head {
            Head::Language { vocab, .. } => {
                g.linear(&x, hw, hb, vocab, "logits");
                outputs.push(value_info(
                    "logits",
                    FLOAT,
                    &[Dim::Named("time"), Dim::Named("batch"), Dim::Fixed(vocab)],
                    "logits of the next token at every step",
                ));
            }
            Head::Regression { outputs: k, .. } => {
                g.i64("last_step", &[], &[-1]);
                g.node("Gather", &[&x, "last_step"], &["out.last"], vec![]);
                g.linear("out.last", hw, hb, k, "y.z");
                denorm(&mut g, "y.z", "y");
                outputs.push(value_info(
                    "y",
                    FLOAT,
                    &[Dim::Named("batch"), Dim::Fixed(k)],
                    "the values after the window, in the target's units",
                ));
            }
            Head::Sequence { outputs: k, .. } => {
                g.linear(&x, hw, hb, k, "y.z");
                denorm(&mut g, "y.z", "y");
                outputs.push(value_info(
                    "y",
                    FLOAT,
                    &[Dim::Named("time"), Dim::Named("batch"), Dim::Fixed(k)],
                    "the values at every step, in the target's units",
                ));
            }
        }
        for s in ["h_n", "c_n"] {
            outputs.push(value_info(
                s,
                FLOAT,
                &[Dim::Fixed(layers), Dim::Named("batch"), Dim::Fixed(h)],
                "final state per layer",
            ));
        }

        let model = ModelProto {
            ir_version: IR_VERSION,
            producer_name: "lstm-wgpu".into(),
            producer_version: env!("CARGO_PKG_VERSION").into(),
            doc_string: "exported by lstm-wgpu export --to onnx".into(),
            graph: Some(GraphProto {
                node: g.nodes,
                name: "lstm_wgpu".into(),
                initializer: g.inits,
                input: inputs,
                output: outputs,
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: OPSET,
            }],
            metadata_props: self.onnx_metadata()?,
        };
        Ok(model.encode_to_vec())
    }

    /// What a user needs besides the graph, as JSON texts: the task, the
    /// window length and horizon, the vocabulary (text) or the normaliser's
    /// columns (series; already folded into the graph).
    fn onnx_metadata(&self) -> Result<Vec<StringStringEntryProto>> {
        let json = |v: serde_json::Value| {
            serde_json::to_string(&v).map_err(|e| Error::Invalid(e.to_string()))
        };
        let mut out = vec![
            (
                "task",
                match self.config.task {
                    Task::Text => "text".to_string(),
                    Task::Series => "series".to_string(),
                },
            ),
            ("seq_len", self.config.seq_len.to_string()),
            ("horizon", self.config.horizon.to_string()),
        ];
        if let Some(v) = &self.vocab {
            let chars: Vec<String> = v.chars.iter().map(|c| c.to_string()).collect();
            out.push(("vocab", json(serde_json::json!(chars))?));
        }
        if let Some(n) = &self.normalizer {
            let names: Vec<&str> = n.features.iter().map(|c| c.name.as_str()).collect();
            out.push(("features", json(serde_json::json!(names))?));
            out.push(("target", n.target.name.clone()));
        }
        Ok(out
            .into_iter()
            .map(|(k, v)| StringStringEntryProto {
                key: k.into(),
                value: v,
            })
            .collect())
    }
}
