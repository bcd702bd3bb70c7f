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
    let index = index.unwrap_or(0);
    cuda_present(index)?;
    Ok(Device::cuda(index))
}

/// Burn opens the CUDA driver lazily and panics deep inside the first kernel launch when there
/// is none; ask the driver (the same cudarc that cubecl-cuda loads at run time) before that.
#[cfg(feature = "cuda")]
fn cuda_present(index: usize) -> Result<()> {
    use cudarc::driver::{result, sys};
    // SAFETY: only tries to open libcuda.so with the dynamic loader.
    if !unsafe { sys::is_culib_present() } {
        bail!(
            "--device cuda:{index}: no NVIDIA driver on this machine (libcuda.so could not be loaded); \
             run with --device cpu, or on a machine with an NVIDIA GPU and its driver"
        );
    }
    result::init().map_err(|e| {
        anyhow::anyhow!("--device cuda:{index}: the NVIDIA driver did not start ({e}); check `nvidia-smi`")
    })?;
    let count = result::device::get_count()
        .map_err(|e| anyhow::anyhow!("--device cuda:{index}: cannot count the CUDA GPUs ({e})"))?;
    match usize::try_from(count).unwrap_or(0) {
        0 => bail!("--device cuda:{index}: the NVIDIA driver is loaded but sees no GPU; run with --device cpu"),
        n if index >= n => bail!("--device cuda:{index}: this machine has {n} CUDA GPU(s): cuda:0 to cuda:{}", n - 1),
        _ => Ok(()),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda(_: Option<usize>) -> Result<Device> {
    bail!(
        "this binary was built without the CUDA backend; rebuild with `cargo build --release --features cuda` \
         (README: CUDA)"
    )
}
