//! The GIN molecule encoder of GraphMVP (Hu et al., "Strategies for Pre-training Graph Neural
//! Networks"), as BioMedGPT-10B uses it: per-atom features `[atoms, emb_dim]` from the last layer.
//!
//! Per layer: self loops with bond features `[4, 0]` are added, each edge carries
//! `x_src + edge_embedding1[bond_type] + edge_embedding2[bond_dir]` to its target, messages are
//! summed, then `MLP(D -> 2D -> D)`, `BatchNorm1d` (eval: running statistics), ReLU except after
//! the last layer. Many molecules run as one disjoint graph; sums are scatter-adds.
//! Parameter names follow the reference (`gnns.{i}.mlp.0.weight`, `batch_norms.{i}.running_mean`).

use burn::module::{Module, Param};
use burn::nn::{Embedding, Linear};
use burn::tensor::activation::relu;
use burn::tensor::ops::IndexingUpdateOp;
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use biomedgpt_chem::{MolGraph, NUM_ATOM_TYPES, NUM_BOND_DIRECTIONS, NUM_BOND_TYPES, NUM_CHIRALITY_TAGS, SELF_LOOP_BOND_TYPE};
use biomedgpt_nn::{apply_linear, embedding, linear, param};
use biomedgpt_io::{FloatType, LoadError, WeightView};
use serde::Deserialize;

/// How layer outputs combine into node features (`JK` in the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JumpingKnowledge {
    /// The last layer (BioMedGPT).
    #[default]
    Last,
    /// All layers, input embedding included, side by side: `(num_layer + 1) * emb_dim` wide.
    Concat,
    /// Elementwise maximum over all layers, input embedding included.
    Max,
    /// Sum over all layers, input embedding included.
    Sum,
}

/// `config.json` of a GIN checkpoint (the reference's constructor arguments).
#[derive(Debug, Clone, Deserialize)]
pub struct GinConfig {
    pub num_layer: usize,
    pub emb_dim: usize,
    #[serde(default, rename = "JK")]
    pub jk: JumpingKnowledge,
    /// Dropout is inactive at inference; kept so reference configs parse.
    #[serde(default)]
    pub drop_ratio: f64,
    #[serde(default = "default_bn_eps")]
    pub batch_norm_eps: f64,
}

fn default_bn_eps() -> f64 {
    1e-5
}

impl GinConfig {
    /// BioMedGPT-10B's molecule encoder: 5 layers, 300 wide, last layer.
    pub fn biomedgpt() -> Self {
        GinConfig { num_layer: 5, emb_dim: 300, jk: JumpingKnowledge::Last, drop_ratio: 0.0, batch_norm_eps: 1e-5 }
    }

    pub fn from_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let c: GinConfig = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        if c.num_layer < 1 {
            return Err(format!("{}: num_layer must be at least 1", path.display()));
        }
        Ok(c)
    }

    /// Width of the node features the encoder returns.
    pub fn output_dim(&self) -> usize {
        match self.jk {
            JumpingKnowledge::Concat => (self.num_layer + 1) * self.emb_dim,
            _ => self.emb_dim,
        }
    }
}

/// `BatchNorm1d` in evaluation mode.
#[derive(Module, Debug)]
pub struct BatchNormEval {
    pub weight: Param<Tensor<1>>,
    pub bias: Param<Tensor<1>>,
    pub running_mean: Param<Tensor<1>>,
    pub running_var: Param<Tensor<1>>,
    #[module(skip)]
    eps: f64,
}

impl BatchNormEval {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        // Running statistics are buffers, never trained: detached, they get no gradient (and an
        // optimizer leaves them alone) when the GIN is fine-tuned.
        let running_mean = self.running_mean.val().detach();
        let inv_std = self.running_var.val().detach().add_scalar(self.eps).sqrt().recip();
        let scale = (self.weight.val() * inv_std).unsqueeze::<2>();
        let shift = (self.bias.val() - running_mean * scale.clone().squeeze_dim(0)).unsqueeze::<2>();
        x * scale + shift
    }
}

#[derive(Module, Debug)]
pub struct GinConv {
    /// `mlp.0` and `mlp.2` (`mlp.1` is the ReLU).
    pub mlp_in: Linear,
    pub mlp_out: Linear,
    pub edge_embedding1: Embedding,
    pub edge_embedding2: Embedding,
}

#[derive(Module, Debug)]
pub struct Gin {
    pub x_embedding1: Embedding,
    pub x_embedding2: Embedding,
    pub gnns: Vec<GinConv>,
    pub batch_norms: Vec<BatchNormEval>,
    #[module(skip)]
    config: GinConfig,
}

/// The reference's name of a parameter from its module path here (`gnns.0.mlp_in.weight` ->
/// `gnns.0.mlp.0.weight`): the inverse of [`Gin::load`]'s names, for saving trained weights.
pub fn checkpoint_name(path: &str) -> String {
    path.replace(".mlp_in.", ".mlp.0.").replace(".mlp_out.", ".mlp.2.")
}

/// Several molecules as one disjoint graph.
///
/// Messages are `h_src + edge_embedding1[bond_type] + edge_embedding2[bond_dir]` summed at the
/// target over the bonds and a self loop `[4, 0]`. The edge-embedding part does not depend on `h`,
/// so it is computed as `edge_counts @ table`, where `edge_counts[i, 3 * type + dir]` counts the
/// edges of each kind arriving at atom `i` (self loop included) and `table` holds the 18 sums of
/// embedding rows; the self loop's `h_i` is the starting value. Only the bonds are gathered and
/// scattered.
pub struct GraphBatch {
    /// `[N]` atom types and chirality tags.
    atom_type: Tensor<1, Int>,
    chirality: Tensor<1, Int>,
    /// `[E]` source and target of every directed bond edge.
    src: Tensor<1, Int>,
    dst: Tensor<1, Int>,
    /// `[N, NUM_BOND_TYPES * NUM_BOND_DIRECTIONS]`, see above.
    edge_counts: Tensor<2>,
    /// `[N]` which molecule each atom belongs to.
    pub node_to_graph: Vec<usize>,
    /// Atoms per molecule.
    pub sizes: Vec<usize>,
}

const EDGE_KINDS: usize = NUM_BOND_TYPES * NUM_BOND_DIRECTIONS;

impl GraphBatch {
    /// Builds the batch; every graph must pass [`MolGraph::validate`].
    pub fn new(graphs: &[MolGraph], device: &Device) -> Result<Self, biomedgpt_chem::GraphError> {
        let mut atom_type = Vec::new();
        let mut chirality = Vec::new();
        let (mut src, mut dst, mut edge_counts) = (Vec::new(), Vec::new(), Vec::new());
        let mut node_to_graph = Vec::new();
        let mut sizes = Vec::new();
        let mut offset = 0i64;
        for (g, graph) in graphs.iter().enumerate() {
            graph.validate()?;
            let first = edge_counts.len();
            for &[t, c] in &graph.atoms {
                atom_type.push(t);
                chirality.push(c);
                node_to_graph.push(g);
                let mut counts = [0f32; EDGE_KINDS];
                counts[SELF_LOOP_BOND_TYPE as usize * NUM_BOND_DIRECTIONS] = 1.0;
                edge_counts.extend(counts);
            }
            src.extend(graph.edge_index[0].iter().map(|&i| i + offset));
            dst.extend(graph.edge_index[1].iter().map(|&i| i + offset));
            for (&target, &[b, d]) in graph.edge_index[1].iter().zip(&graph.edge_attr) {
                edge_counts[first + target as usize * EDGE_KINDS + b as usize * NUM_BOND_DIRECTIONS + d as usize] += 1.0;
            }
            sizes.push(graph.num_atoms());
            offset += graph.num_atoms() as i64;
        }
        let ints = |v: Vec<i64>| {
            let n = v.len();
            Tensor::<1, Int>::from_data(TensorData::new(v, [n]), device)
        };
        let n = offset as usize;
        Ok(GraphBatch {
            atom_type: ints(atom_type),
            chirality: ints(chirality),
            src: ints(src),
            dst: ints(dst),
            edge_counts: Tensor::from_data(TensorData::new(edge_counts, [n, EDGE_KINDS]), device),
            node_to_graph,
            sizes,
        })
    }

    pub fn num_nodes(&self) -> usize {
        self.node_to_graph.len()
    }
}

fn lookup(table: &Embedding, index: Tensor<1, Int>) -> Tensor<2> {
    table.weight.val().select(0, index)
}

impl GinConv {
    /// `[18, D]`: row `3 * type + dir` = `edge_embedding1[type] + edge_embedding2[dir]`.
    fn edge_table(&self) -> Tensor<2> {
        let e1 = self.edge_embedding1.weight.val().unsqueeze_dim::<3>(1);
        let e2 = self.edge_embedding2.weight.val().unsqueeze_dim::<3>(0);
        (e1 + e2).reshape([EDGE_KINDS as i64, -1])
    }

    fn forward(&self, h: Tensor<2>, batch: &GraphBatch) -> Tensor<2> {
        let edges = batch.edge_counts.clone().cast(h.dtype()).matmul(self.edge_table());
        let mut aggregated = h.clone() + edges;
        if batch.src.dims()[0] > 0 {
            let messages = h.select(0, batch.src.clone());
            aggregated = aggregated.select_assign(0, batch.dst.clone(), messages, IndexingUpdateOp::Add);
        }
        apply_linear(&self.mlp_out, relu(apply_linear(&self.mlp_in, aggregated)))
    }
}

impl Gin {
    /// Loads from a view with the reference names (prefix `mol_structure_encoder.` in the fused
    /// BioMedGPT checkpoint). `num_batches_tracked` and unknown keys are not read.
    pub fn load(config: &GinConfig, vb: &WeightView, ty: FloatType, device: &Device) -> Result<Self, LoadError> {
        let d = config.emb_dim;
        let gnns = (0..config.num_layer)
            .map(|i| {
                let g = vb.pp("gnns").pp(i);
                Ok(GinConv {
                    mlp_in: linear(&g.pp("mlp.0"), d, 2 * d, true, ty, device)?,
                    mlp_out: linear(&g.pp("mlp.2"), 2 * d, d, true, ty, device)?,
                    edge_embedding1: embedding(&g.pp("edge_embedding1"), NUM_BOND_TYPES, d, ty, device)?,
                    edge_embedding2: embedding(&g.pp("edge_embedding2"), NUM_BOND_DIRECTIONS, d, ty, device)?,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        let batch_norms = (0..config.num_layer)
            .map(|i| {
                let b = vb.pp("batch_norms").pp(i);
                Ok(BatchNormEval {
                    weight: param(b.load("weight", &[d], ty)?, device),
                    bias: param(b.load("bias", &[d], ty)?, device),
                    running_mean: param(b.load("running_mean", &[d], ty)?, device),
                    running_var: param(b.load("running_var", &[d], ty)?, device),
                    eps: config.batch_norm_eps,
                })
            })
            .collect::<Result<Vec<_>, LoadError>>()?;
        Ok(Gin {
            x_embedding1: embedding(&vb.pp("x_embedding1"), NUM_ATOM_TYPES, d, ty, device)?,
            x_embedding2: embedding(&vb.pp("x_embedding2"), NUM_CHIRALITY_TAGS, d, ty, device)?,
            gnns,
            batch_norms,
            config: config.clone(),
        })
    }

    pub fn config(&self) -> &GinConfig {
        &self.config
    }

    pub fn device(&self) -> Device {
        self.x_embedding1.weight.val().device()
    }

    /// Node features `[N, output_dim]` for a batch.
    pub fn forward(&self, batch: &GraphBatch) -> Tensor<2> {
        let x = lookup(&self.x_embedding1, batch.atom_type.clone()) + lookup(&self.x_embedding2, batch.chirality.clone());
        let mut layers = vec![x];
        let last = self.gnns.len() - 1;
        for (i, (conv, norm)) in self.gnns.iter().zip(&self.batch_norms).enumerate() {
            let h = norm.forward(conv.forward(layers[i].clone(), batch));
            // Dropout is the identity at inference.
            layers.push(if i == last { h } else { relu(h) });
        }
        match self.config.jk {
            JumpingKnowledge::Last => layers.pop().expect("at least one layer"),
            JumpingKnowledge::Concat => Tensor::cat(layers, 1),
            JumpingKnowledge::Max => Tensor::stack::<3>(layers, 0).max_dim(0).squeeze_dim(0),
            JumpingKnowledge::Sum => Tensor::stack::<3>(layers, 0).sum_dim(0).squeeze_dim(0),
        }
    }

    /// Per-molecule features: `[atoms, output_dim]` row-major, in input order.
    pub fn node_features(&self, graphs: &[MolGraph]) -> Result<Vec<Vec<f32>>, biomedgpt_chem::GraphError> {
        let batch = GraphBatch::new(graphs, &self.device())?;
        let values = self.forward(&batch).cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 features");
        let width = self.config.output_dim();
        let mut out = Vec::with_capacity(graphs.len());
        let mut start = 0;
        for &n in &batch.sizes {
            out.push(values[start * width..(start + n) * width].to_vec());
            start += n;
        }
        Ok(out)
    }

    /// One mean-pooled vector per molecule (`output_dim` values each), in input order.
    pub fn pooled_features(&self, graphs: &[MolGraph]) -> Result<Vec<Vec<f32>>, biomedgpt_chem::GraphError> {
        let batch = GraphBatch::new(graphs, &self.device())?;
        let pooled = self.mean_pool(&batch, self.forward(&batch));
        let values = pooled.cast(DType::F32).into_data().try_to_vec::<f32>().expect("f32 features");
        Ok(values.chunks(self.config.output_dim()).map(<[f32]>::to_vec).collect())
    }

    /// Mean over each molecule's atoms: `[molecules, output_dim]`, computed with a scatter-add.
    pub fn mean_pool(&self, batch: &GraphBatch, nodes: Tensor<2>) -> Tensor<2> {
        let device = nodes.device();
        let graphs = batch.sizes.len();
        let index = Tensor::<1, Int>::from_data(
            TensorData::new(batch.node_to_graph.iter().map(|&g| g as i64).collect::<Vec<_>>(), [batch.num_nodes()]),
            &device,
        );
        let width = nodes.dims()[1];
        let sums = Tensor::<2>::zeros([graphs, width], (&device, nodes.dtype())).select_assign(0, index, nodes, IndexingUpdateOp::Add);
        let counts: Vec<f32> = batch.sizes.iter().map(|&n| n as f32).collect();
        let counts = Tensor::<2>::from_data(TensorData::new(counts, [graphs, 1]), (&device, DType::F32)).cast(sums.dtype());
        sums / counts
    }
}
