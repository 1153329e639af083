//! [`OnnxModel`]: an `.onnx` file run by tract, a pure-Rust ONNX runtime independent of Candle
//! and of our kernels (the check of an export, and inference without the trainer).

use candle_core::{DType, Device, Result, Tensor};
use tract_onnx::prelude::{
    tvec, Datum, Framework, InferenceFact, InferenceModel, InferenceModelExt, TValue,
};
use tract_onnx::tract_core::model::IntoRunnable;

/// A parsed ONNX model; [`OnnxModel::run`] plans it for the shape of each input it is given.
#[derive(Debug, Clone)]
pub struct OnnxModel {
    model: InferenceModel,
    outputs: Vec<String>,
    metadata: Vec<(String, String)>,
    input_dims: Vec<Option<usize>>,
    input_uint8: bool,
}

fn tract_err(what: &str) -> impl Fn(tract_onnx::prelude::TractError) -> candle_core::Error + '_ {
    move |e| candle_core::Error::Msg(format!("{what}: {e:#}"))
}

impl OnnxModel {
    /// Parses the bytes of an `.onnx` file (`what` names it in errors, e.g. its path).
    pub fn from_bytes(bytes: &[u8], what: &str) -> Result<Self> {
        use tract_onnx::pb::tensor_shape_proto::dimension::Value;
        use tract_onnx::pb::type_proto;
        let err = tract_err(what);
        let onnx = tract_onnx::onnx();
        let proto = onnx
            .proto_model_for_read(&mut &bytes[..])
            .map_err(|e| err(e.context("not a readable ONNX model")))?;
        let model = onnx.model_for_proto_model(&proto).map_err(&err)?;
        let graph = proto.graph.as_ref();
        let outputs = graph.map_or(Vec::new(), |g| {
            g.output.iter().map(|o| o.name.clone()).collect()
        });
        let input = graph.and_then(|g| g.input.first()).and_then(|i| {
            match i.r#type.as_ref()?.value.as_ref()? {
                type_proto::Value::TensorType(t) => Some(t.clone()),
            }
        });
        let input_uint8 = input.as_ref().map(|t| t.elem_type)
            == Some(tract_onnx::pb::tensor_proto::DataType::Uint8 as i32);
        let input_dims = input
            .and_then(|t| t.shape)
            .map(|s| {
                s.dim
                    .iter()
                    .map(|d| match d.value {
                        Some(Value::DimValue(n)) => usize::try_from(n).ok(),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let metadata = proto
            .metadata_props
            .iter()
            .map(|p| (p.key.clone(), p.value.clone()))
            .collect();
        Ok(Self {
            model,
            outputs,
            metadata,
            input_dims,
            input_uint8,
        })
    }

    /// The model's `metadata_props` (our exports: `arch`, `stem`, `num_classes`, `input`, `mean`,
    /// `std`, …).
    pub fn metadata(&self) -> &[(String, String)] {
        &self.metadata
    }

    /// The value of one `metadata_props` key.
    pub fn metadata_value(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The declared dimensions of the graph's input (`None`: free, such as the batch).
    pub fn input_dims(&self) -> &[Option<usize>] {
        &self.input_dims
    }

    /// Whether the graph takes `uint8` images (else `f32`).
    pub fn takes_uint8(&self) -> bool {
        self.input_uint8
    }

    /// The names of the graph's outputs, in order.
    pub fn output_names(&self) -> &[String] {
        &self.outputs
    }

    /// Runs the graph on `xs` (its one input: `f32` or `u8`, any batch size), on the CPU.
    ///
    /// # Shapes
    /// - `xs`: `(N, 3, H, W)`, the dtype the graph declares
    /// - returns every output, e.g. `[(N, classes)]`, as `f32` CPU tensors
    pub fn run(&self, xs: &Tensor) -> Result<Vec<Tensor>> {
        let err = tract_err("running the ONNX model");
        let dims = xs.dims().to_vec();
        let input = match xs.dtype() {
            DType::F32 => to_tract::<f32>(xs, &dims)?,
            DType::U8 => to_tract::<u8>(xs, &dims)?,
            d => candle_core::bail!("OnnxModel::run: input dtype {d:?}, expected f32 or u8"),
        };
        let fact = InferenceFact::dt_shape(input.datum_type(), &dims);
        let plan = self
            .model
            .clone()
            .with_input_fact(0, fact)
            .and_then(|m| m.into_optimized())
            .and_then(|m| m.into_runnable())
            .map_err(&err)?;
        let outputs = plan.run(tvec!(TValue::from(input))).map_err(&err)?;
        outputs
            .iter()
            .map(|o| {
                let view = o.to_plain_array_view::<f32>().map_err(&err)?;
                let shape = view.shape().to_vec();
                let values: Vec<f32> = view.iter().copied().collect();
                Tensor::from_vec(values, shape, &Device::Cpu)
            })
            .collect()
    }
}

fn to_tract<T: Datum + candle_core::WithDType>(
    xs: &Tensor,
    dims: &[usize],
) -> Result<tract_onnx::prelude::Tensor> {
    let values = xs.flatten_all()?.to_vec1::<T>()?;
    tract_onnx::prelude::Tensor::from_shape(dims, &values)
        .map_err(|e| candle_core::Error::Msg(format!("OnnxModel::run: {e:#}")))
}
