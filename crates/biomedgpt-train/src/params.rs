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

/// Writes every float parameter of a LLaMA under its Hugging Face name (`model.layers.0...`,
/// `lm_head.weight`: the module paths are those names), in PyTorch's layout, f32.
pub fn save_llm(llm: &biomedgpt_llama::Llama, path: &std::path::Path) -> std::io::Result<()> {
    biomedgpt_io::export::write_f32_safetensors(path, &biomedgpt_io::export::float_params(llm))
}
