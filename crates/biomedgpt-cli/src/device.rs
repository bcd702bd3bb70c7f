//! `--device cpu|wgpu[:N]|cuda[:N]`, resolved against the backends this binary was built with.

use anyhow::{Result, bail};
use burn::tensor::Device;

pub fn parse(spec: &str) -> Result<Device> {
    let (kind, index) = match spec.split_once(':') {
        Some((k, i)) => {
            let i: usize = i
                .parse()
                .map_err(|_| anyhow::anyhow!("device index in `{spec}` must be a number"))?;
            (k, Some(i))
        }
        None => (spec, None),
    };
    match kind {
        "cpu" | "flex" => Ok(Device::flex()),
        "wgpu" => wgpu(index),
        "cuda" => cuda(index),
        other => bail!("unknown device `{other}` (expected cpu, wgpu[:N] or cuda[:N])"),
    }
}

/// `train --device`: one device, or several CUDA devices (`cuda:0,cuda:1`) for data-parallel
/// training. Burn 0.22 all-reduces gradients with NCCL, its only implementation of collective
/// operations, so other backends train on one device.
pub fn parse_training_devices(spec: &str) -> Result<Vec<Device>> {
    let specs: Vec<&str> = spec.split(',').map(str::trim).collect();
    if specs.len() > 1 {
        if let Some(other) = specs.iter().find(|s| !s.starts_with("cuda")) {
            bail!(
                "--device {spec}: data-parallel training needs collective operations, which Burn 0.22 \
                 implements for CUDA only (NCCL); `{other}` can train on its own, or list CUDA devices \
                 (cuda:0,cuda:1)"
            );
        }
        let mut seen = specs.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != specs.len() {
            bail!("--device {spec}: a device is listed twice");
        }
    }
    specs.iter().map(|s| parse(s)).collect()
}

#[cfg(feature = "wgpu")]
fn wgpu(index: Option<usize>) -> Result<Device> {
    use burn::tensor::DeviceKind;
    Ok(Device::wgpu(match index {
        Some(i) => DeviceKind::DiscreteGpu(i),
        None => DeviceKind::DefaultDevice,
    }))
}

#[cfg(not(feature = "wgpu"))]
fn wgpu(_: Option<usize>) -> Result<Device> {
    bail!("this binary was built without the wgpu backend; rebuild with `cargo build --release --features wgpu`")
}

#[cfg(feature = "cuda")]
fn cuda(index: Option<usize>) -> Result<Device> {
    Ok(Device::cuda(index.unwrap_or(0)))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: Option<usize>) -> Result<Device> {
    bail!(
        "this binary was built without the CUDA backend; rebuild with `cargo build --release --features cuda` \
         (needs the CUDA toolkit)"
    )
}
