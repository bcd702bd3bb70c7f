//! Parameters by module path: their ids (which optimizer state is keyed by), contiguous copies
//! under saved ids (an exactly resumed run), and the LLM's tensors under Hugging Face names.

use std::collections::BTreeMap;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::tensor::Tensor;

// Module visitors see `enter_module(field)` for every field on the way down, the parameter's own
// field included, so the joined stack is the parameter's path.

struct Ids {
    path: Vec<String>,
    ids: BTreeMap<String, u64>,
}

impl ModuleVisitor for Ids {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.ids.insert(self.path.join("."), param.id.val());
    }
}

/// Every float parameter's id, by path (`model.layers.0.self_attn.q_proj.weight`).
pub fn ids_by_path<M: Module>(module: &M) -> BTreeMap<String, u64> {
    let mut visitor = Ids { path: Vec::new(), ids: BTreeMap::new() };
    module.visit(&mut visitor);
    visitor.ids
}

struct Rebuild<'a> {
    path: Vec<String>,
    ids: &'a BTreeMap<String, u64>,
}

impl ModuleMapper for Rebuild<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn map_float<const D: usize>(&mut self, param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let trainable = param.val().is_require_grad();
        let value = param.val();
        // A contiguous copy: loaded f32 weights are transposed views, for which the CPU matmul
        // sums in another order, so fresh and resumed runs must both train copies.
        let copy = Tensor::<D>::from_data(value.to_data(), (&value.device(), value.dtype()));
        let id = self.ids.get(&self.path.join(".")).map(|&id| ParamId::from(id)).unwrap_or(param.id);
        Param::initialized(id, copy).set_require_grad(trainable)
    }
}

/// The module with contiguous copies of its float parameters, under the ids in `ids` (by path;
/// others keep theirs) and with their trainability unchanged.
pub fn rebuilt<M: Module>(module: M, ids: &BTreeMap<String, u64>) -> M {
    module.map(&mut Rebuild { path: Vec::new(), ids })
}

struct Tensors {
    path: Vec<String>,
    out: Vec<(String, Vec<usize>, Vec<f32>)>,
}

impl ModuleVisitor for Tensors {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_string());
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        let tensor = &param.val();
        let name = self.path.join(".");
        // Burn's Linear stores [in, out]; PyTorch [out, in].
        let linear = D == 2 && (name.ends_with("_proj.weight") || name == "lm_head.weight");
        let t = tensor.clone().cast(burn::tensor::DType::F32);
        let (shape, values) = if linear {
            let t2: Tensor<2> = t.reshape([tensor.dims()[0], tensor.dims()[1]]).transpose();
            (t2.dims().to_vec(), t2.into_data().try_to_vec::<f32>().expect("f32"))
        } else {
            (tensor.dims().to_vec(), t.into_data().try_to_vec::<f32>().expect("f32"))
        };
        self.out.push((name, shape, values));
    }
}

/// Writes every float parameter of a LLaMA under its Hugging Face name (`model.layers.0...`,
/// `lm_head.weight`), in PyTorch's layout, f32.
pub fn save_llm(llm: &biomedgpt_llama::Llama, path: &std::path::Path) -> std::io::Result<()> {
    use biomedgpt_io::SourceDType;
    use biomedgpt_io::safetensors_writer::{TensorSpec, write_streaming};
    let mut visitor = Tensors { path: Vec::new(), out: Vec::new() };
    llm.visit(&mut visitor);
    let specs: Vec<TensorSpec> = visitor
        .out
        .iter()
        .map(|(name, shape, _)| TensorSpec { name: name.clone(), dtype: SourceDType::F32, shape: shape.clone() })
        .collect();
    if specs.is_empty() {
        return Err(std::io::Error::other("the LLM has no parameters to save"));
    }
    write_streaming(path, &specs, &[("format", "pt")], |i, buf| {
        buf.extend(visitor.out[i].2.iter().flat_map(|v| v.to_le_bytes()));
        Ok(())
    })
}
