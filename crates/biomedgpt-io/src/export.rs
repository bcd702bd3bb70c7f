//! Module parameters back to checkpoint tensors: every float parameter by its module path, in
//! PyTorch's layout, written as f32 safetensors under names a model maps its paths to.

use burn::module::{Module, ModuleVisitor, Param};
use burn::tensor::{DType, Tensor};

use crate::SourceDType;
use crate::safetensors_writer::{TensorSpec, write_streaming};

/// One parameter: its name, shape and values (f32, row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

// Visitors see `enter_module(field, "Struct:Parent")` for every field on the way down, the
// parameter's own field included: the joined names are the parameter's path, and the last
// container type tells a `Linear`'s weight apart (see `in_linear`).
struct Collect {
    path: Vec<(String, String)>,
    out: Vec<NamedTensor>,
}

impl ModuleVisitor for Collect {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.path.push((name.to_string(), container_type.to_string()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let name = self.path.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(".");
        // Burn's `Linear` and biomedgpt-nn's `MaybeQuantLinear` (same fields, same layout).
        let in_linear = self.path.last().is_some_and(|(n, c)| n == "weight" && (c == "Struct:Linear" || c == "Struct:MaybeQuantLinear"));
        let tensor = param.val().cast(DType::F32);
        let dims = tensor.dims().to_vec();
        // Burn's Linear multiplies by [in, out]; PyTorch stores [out, in].
        let (shape, data) = if in_linear && D == 2 {
            let t: Tensor<2> = tensor.reshape([dims[0], dims[1]]).transpose();
            (vec![dims[1], dims[0]], t.into_data())
        } else {
            (dims, tensor.into_data())
        };
        let values = data.try_to_vec::<f32>().expect("f32 data");
        self.out.push(NamedTensor { name, shape, values });
    }
}

/// Every float parameter of `module` by module path (`layers.0.attention.query.weight`), f32,
/// with `Linear` weights transposed back to PyTorch's `[out, in]`.
pub fn float_params<M: Module>(module: &M) -> Vec<NamedTensor> {
    let mut visitor = Collect { path: Vec::new(), out: Vec::new() };
    module.visit(&mut visitor);
    visitor.out
}

/// Writes tensors as f32 safetensors (metadata `format: pt`), atomically.
pub fn write_f32_safetensors(path: &std::path::Path, tensors: &[NamedTensor]) -> std::io::Result<()> {
    if tensors.is_empty() {
        return Err(std::io::Error::other(format!("{}: no tensors to write", path.display())));
    }
    let specs: Vec<TensorSpec> =
        tensors.iter().map(|t| TensorSpec { name: t.name.clone(), dtype: SourceDType::F32, shape: t.shape.clone() }).collect();
    write_streaming(path, &specs, &[("format", "pt")], |i, buf| {
        buf.extend(tensors[i].values.iter().flat_map(|v| v.to_le_bytes()));
        Ok(())
    })
}
