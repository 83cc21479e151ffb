//! The machine as the program finds it: the `LSTM_WGPU_*` and
//! `WGPU_ADAPTER_NAME` variables (the only place the program reads the
//! environment) and the adapter `--device` chooses, the host memory budget, and the GPU they describe (the library takes a [`Tuning`] and
//! [`GpuOptions`] value). The criterion benchmarks include this file too.

use lstm_wgpu::GpuContext;
use lstm_wgpu::error::{Error, Result};
use lstm_wgpu::gpu::GpuOptions;
use lstm_wgpu::gpu::tuning::Tuning;
use std::sync::Arc;

/// Environment variable forcing the GEMM variant: `block`, `tiled` or
/// `subgroup` (unset or empty: chosen by adapter).
pub const GEMM_ENV: &str = "LSTM_WGPU_GEMM";
/// Environment variable setting the tiled GEMM's shape: `WG_M,WG_N,TK`
/// (unset: [`lstm_wgpu::kernels::gemm::TileShape::DEFAULT`]).
pub const GEMM_TILE_ENV: &str = "LSTM_WGPU_GEMM_TILE";
/// Environment variable forcing the cell variant: `direct` or `tiled`
/// (unset or empty: chosen by adapter).
pub const CELL_ENV: &str = "LSTM_WGPU_CELL";
/// Environment variable setting the tiled cell's tile: `TB,TU,KC,KS`
/// (batch rows, hidden units, K chunk, K slices; unset: the default tile,
/// and the large one for large dispatches).
pub const CELL_TILE_ENV: &str = "LSTM_WGPU_CELL_TILE";
/// Environment variable forcing the cell path: `per-step`, `persistent` or
/// `wavefront` (unset or empty: chosen by shape).
pub const CELL_PATH_ENV: &str = "LSTM_WGPU_CELL_PATH";
/// Environment variable setting the wavefront's skew C (layer l + 1 runs
/// step s − C beside layer l at step s); unset: chosen by adapter and shape.
pub const WAVE_SKEW_ENV: &str = "LSTM_WGPU_WAVE_SKEW";
/// Environment variable turning the subgroup kernels off (`off` or `0`) or
/// on (`on`, `1`, or unset: on wherever the adapter has subgroups of one
/// fixed width).
pub const SUBGROUPS_ENV: &str = "LSTM_WGPU_SUBGROUPS";

/// The value of environment variable `var` parsed by `parse`, when set and
/// not empty; a parse failure names the variable.
pub fn env_choice<T>(
    var: &str,
    parse: impl Fn(&str) -> std::result::Result<T, String>,
) -> Result<Option<T>> {
    match std::env::var(var) {
        Ok(v) if !v.trim().is_empty() => parse(&v)
            .map(Some)
            .map_err(|e| Error::Invalid(format!("{var}: {e}"))),
        _ => Ok(None),
    }
}

/// The [`Tuning`] the `LSTM_WGPU_*` variables ask for: the only place the
/// program reads them (the library takes the value). A malformed value is
/// an error naming its variable.
pub fn tuning_from_env() -> Result<Tuning> {
    use lstm_wgpu::gpu::tuning::{CellPath, CellVariant, GemmVariant, TileConfig, TileShape};
    let cell_path = match std::env::var(CELL_PATH_ENV) {
        Ok(v) if !v.is_empty() => {
            Some(CellPath::parse(&v).map_err(|e| Error::Invalid(format!("{CELL_PATH_ENV}: {e}")))?)
        }
        _ => None,
    };
    let wave_skew = env_choice(WAVE_SKEW_ENV, |v| {
        v.trim()
            .parse::<usize>()
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| format!("`{v}` is not a positive whole number"))
    })?;
    let subgroups = env_choice(SUBGROUPS_ENV, |v| match v.trim() {
        "on" | "1" => Ok(true),
        "off" | "0" => Ok(false),
        other => Err(format!("`{other}` is neither on nor off")),
    })?;
    Ok(Tuning {
        gemm: env_choice(GEMM_ENV, GemmVariant::parse)?,
        gemm_tile: env_choice(GEMM_TILE_ENV, TileShape::parse)?,
        cell: env_choice(CELL_ENV, CellVariant::parse)?,
        cell_tile: env_choice(CELL_TILE_ENV, TileConfig::parse)?,
        cell_path,
        wave_skew,
        subgroups,
    })
}

/// `--device`, as `cli::run` set it (the one global flag the GPU reads).
static DEVICE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Keeps `--device SPEC` for [`gpu_options_for`].
pub fn set_device(spec: Option<String>) {
    if let Some(s) = spec {
        let _ = DEVICE.set(s);
    }
}

/// How the program builds its GPU context: [`gpu_options_for`] rank 0.
pub fn gpu_options_from_env() -> Result<GpuOptions> {
    gpu_options_for(0)
}

/// How rank `rank` of a data-parallel job (0 alone) builds its GPU
/// context: the adapter `--device` chooses (rank r takes entry r modulo
/// the list), else the one `WGPU_ADAPTER_NAME` names, each resolved to its
/// index in [`lstm_wgpu::gpu::adapters`] now (none matching is an error
/// naming the flag or variable and listing the adapters); and
/// [`tuning_from_env`].
pub fn gpu_options_for(rank: usize) -> Result<GpuOptions> {
    let env_name = std::env::var(lstm_wgpu::gpu::ADAPTER_NAME_ENV)
        .ok()
        .filter(|v| !v.is_empty());
    let (label, entry) = match (DEVICE.get(), env_name) {
        (Some(spec), _) => {
            let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
            if entries.iter().any(|e| e.is_empty()) {
                return Err(Error::Invalid(format!(
                    "--device {spec}: an empty entry; give adapter numbers or names, \
                     comma-separated (`lstm-wgpu devices` lists them)"
                )));
            }
            let e = entries[rank % entries.len()].to_string();
            (format!("--device {spec}"), Some(e))
        }
        (None, Some(n)) => (format!("{}={n}", lstm_wgpu::gpu::ADAPTER_NAME_ENV), Some(n)),
        (None, None) => (String::new(), None),
    };
    let device = match entry {
        Some(e) => Some(resolve_adapter(&label, &e)?),
        None => None,
    };
    Ok(GpuOptions {
        device,
        tuning: tuning_from_env()?,
        ..GpuOptions::default()
    })
}

/// `--device`'s value, when given.
pub fn device_flag() -> Option<&'static str> {
    DEVICE.get().map(String::as_str)
}

/// The adapters of `train --devices SPEC`, one per rank: `all`, every
/// adapter a data-parallel rank takes by default
/// ([`lstm_wgpu::gpu::data_parallel_adapters`]: the GPUs of the primary
/// backends, else their CPU adapters); otherwise a comma-separated list
/// of `--device` entries (numbers or parts of names; one may repeat).
/// Each is resolved now: one naming no adapter is an error naming it.
pub fn devices(spec: &str) -> Result<Vec<GpuOptions>> {
    let label = format!("--devices {spec}");
    let tuning = tuning_from_env()?;
    let with = |device, adapter_index| GpuOptions {
        device,
        adapter_index,
        tuning,
        ..GpuOptions::default()
    };
    if spec.trim() == "all" {
        let n = lstm_wgpu::gpu::data_parallel_adapters().len();
        if n == 0 {
            return Err(Error::NoAdapter(format!(
                "{label}: no adapter on the primary backends (Vulkan, Metal, DX12)"
            )));
        }
        return Ok((0..n).map(|i| with(None, Some(i))).collect());
    }
    let entries: Vec<&str> = spec.split(',').map(str::trim).collect();
    if entries.iter().any(|e| e.is_empty()) {
        return Err(Error::Invalid(format!(
            "{label}: an empty entry; give `all`, or adapter numbers or names, \
             comma-separated (`lstm-wgpu devices` lists them)"
        )));
    }
    entries
        .iter()
        .map(|e| Ok(with(Some(resolve_adapter(&label, e)?), None)))
        .collect()
}

/// The index in [`lstm_wgpu::gpu::adapters`] of adapter `entry`: a number,
/// or a part of a name (case insensitive, the first match).
fn resolve_adapter(label: &str, entry: &str) -> Result<usize> {
    let all = lstm_wgpu::gpu::adapters();
    let list = || lstm_wgpu::gpu::adapter_list(&all);
    if let Ok(i) = entry.parse::<usize>() {
        if i < all.len() {
            return Ok(i);
        }
        return Err(Error::Invalid(format!(
            "{label}: no adapter {i}; adapters: {}",
            list()
        )));
    }
    let lower = entry.to_lowercase();
    all.iter()
        .position(|i| i.name.to_lowercase().contains(&lower))
        .ok_or_else(|| {
            Error::Invalid(format!(
                "{label}: no adapter's name contains `{entry}`; adapters: {}",
                list()
            ))
        })
}

/// Host memory a run may plan for ([`lstm_wgpu::train::host_budget`]:
/// half of the machine's).
pub fn host_budget() -> u64 {
    lstm_wgpu::train::host_budget()
}

/// The size limits of a run: the host budget and, with a GPU, its largest
/// storage buffer.
pub fn size_limits(ctx: Option<&GpuContext>) -> lstm_wgpu::train::SizeLimits {
    lstm_wgpu::train::SizeLimits::of(ctx)
}

/// Opens the GPU as the environment says ([`gpu_options_from_env`]),
/// printing the adapter with `-v`.
pub fn open_gpu(verbose: bool) -> Result<Arc<GpuContext>> {
    let ctx = GpuContext::with_options(gpu_options_from_env()?)?;
    if verbose {
        eprintln!("adapter: {}", ctx.describe());
    }
    Ok(Arc::new(ctx))
}
