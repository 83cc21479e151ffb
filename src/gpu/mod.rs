//! GPU context: adapter choice, device, limits, buffers, pipelines, error scopes.

pub mod tuning;

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicU64, Ordering};
use wgpu::util::DeviceExt;

/// Bytes of the GPU buffers created through a [`GpuContext`]: live now and
/// the most ever live at once. wgpu has no hook on a buffer's drop, so a
/// buffer stays counted until the context goes away unless the context
/// frees it itself (its readback staging buffers). `live` is thus an upper
/// bound on what is live, exact for owners that keep their buffers, as the
/// trainer does (its buffers are made once per shape and reused).
#[derive(Debug, Default)]
pub struct MemCounter {
    live: AtomicU64,
    peak: AtomicU64,
}

impl MemCounter {
    fn alloc(&self, bytes: u64) {
        let live = self.live.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(live, Ordering::Relaxed);
    }

    fn free(&self, bytes: u64) {
        self.live.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes counted as live.
    pub fn live(&self) -> u64 {
        self.live.load(Ordering::Relaxed)
    }

    /// The most bytes live at once since the context was made or since
    /// [`MemCounter::reset_peak`].
    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }

    /// Starts a new high-water mark at the current live bytes.
    pub fn reset_peak(&self) {
        self.peak.store(self.live(), Ordering::Relaxed);
    }
}

/// Whether the adapter runs shaders on the CPU (lavapipe/llvmpipe,
/// SwiftShader, WARP): workgroup barriers are emulated there, and kernels
/// that read straight from memory beat tiled ones.
pub fn cpu_adapter(info: &wgpu::AdapterInfo) -> bool {
    let llvmpipe = |s: &str| s.to_ascii_lowercase().contains("llvmpipe");
    info.device_type == wgpu::DeviceType::Cpu || llvmpipe(&info.name) || llvmpipe(&info.driver)
}

pub use crate::gpu::tuning::{Tuning, parse_counts};

/// Environment variable choosing the adapter by (part of) its name, case
/// insensitive, as wgpu's `initialize_adapter_from_env`. The command line
/// reads it into [`GpuOptions::adapter_name`]; errors name it.
pub const ADAPTER_NAME_ENV: &str = "WGPU_ADAPTER_NAME";

/// How a [`GpuContext`] is built; `GpuOptions::default()` is
/// [`GpuContext::new`].
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Ask for timestamp queries inside passes (for [`Profiler`]); fails if
    /// the adapter lacks them.
    pub timestamps: bool,
    /// Lower the largest storage binding to this many bytes (when below the
    /// adapter's).
    pub binding_limit: Option<u64>,
    /// The first adapter whose name contains this (case insensitive); none
    /// matching is an error listing the adapters. `None`: wgpu's own choice
    /// (which honours `WGPU_BACKEND`, `WGPU_ADAPTER_NAME` and
    /// `WGPU_POWER_PREF`).
    pub adapter_name: Option<String>,
    /// Without `adapter_name`: adapter i modulo the count of the GPUs
    /// wgpu enumerates on its primary backends (Vulkan, Metal, DX12), or
    /// of the CPU adapters where there is no GPU (lavapipe), in wgpu's
    /// order (one rank of a data-parallel job per GPU). `None`: wgpu's
    /// own choice.
    pub adapter_index: Option<usize>,
    /// Adapter i of [`adapters`] (every backend, wgpu's order); an index
    /// past the last is an error listing them. Before `adapter_name` and
    /// `adapter_index`.
    pub device: Option<usize>,
    /// Kernel choices: the default of every model built on the context
    /// ([`crate::Lstm::new`]); its `subgroups` decides whether the device
    /// asks for subgroup operations.
    pub tuning: Tuning,
    /// The longest a wait for the GPU may take before it fails, naming the
    /// time ([`GpuContext::wait`], readbacks, a step's statistics); `None`:
    /// forever. A data-parallel rank's thread stuck on a hung driver then
    /// returns, so its group can end (`train --devices`).
    pub wait_timeout: Option<std::time::Duration>,
}

/// Identifies one compiled kernel family in a context's pipeline cache:
/// the family (its shader), its variant and tile as the wrapper names them,
/// the precision and whether its subgroup entry points are built.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct KernelKey {
    /// The family, e.g. `gemm` or `lstm_cell`.
    pub family: &'static str,
    /// Variant and tile, `""` for families with one build.
    pub variant: String,
    /// The f16(-mixed) build.
    pub half: bool,
    /// With subgroup entry points.
    pub subgroups: bool,
}

/// Kernel families compiled on first use and shared by every model and
/// trainer on a context (as candle's `Kernels`).
#[derive(Default)]
struct PipelineCache {
    families: std::sync::Mutex<
        std::collections::HashMap<KernelKey, std::sync::Arc<dyn std::any::Any + Send + Sync>>,
    >,
}

/// The instance every context and [`adapters`] enumerate from (backends
/// as `WGPU_BACKEND` says, which wgpu reads).
fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Every adapter wgpu enumerates, on every backend, in its order: the
/// indices of [`GpuOptions::device`].
pub fn adapters() -> Vec<wgpu::AdapterInfo> {
    let all = pollster::block_on(instance().enumerate_adapters(wgpu::Backends::all()));
    infos(&all)
}

/// A list of adapters for error messages: `0 `name` (Vulkan), …`, numbered
/// as [`adapters`] numbers them.
pub fn adapter_list(adapters: &[wgpu::AdapterInfo]) -> String {
    if adapters.is_empty() {
        return "none".to_string();
    }
    let names: Vec<String> = adapters
        .iter()
        .enumerate()
        .map(|(k, i)| format!("{k} `{}` ({:?})", i.name, i.backend))
        .collect();
    names.join(", ")
}

fn infos(adapters: &[wgpu::Adapter]) -> Vec<wgpu::AdapterInfo> {
    adapters.iter().map(wgpu::Adapter::get_info).collect()
}

/// The first adapter whose name contains `want` (case insensitive); when
/// none does, an error listing the adapters (wgpu's own lookup panics
/// there).
fn adapter_named(instance: &wgpu::Instance, want: &str) -> Result<wgpu::Adapter> {
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    let lower = want.to_lowercase();
    match adapters
        .iter()
        .position(|a| a.get_info().name.to_lowercase().contains(&lower))
    {
        Some(k) => Ok(adapters.into_iter().nth(k).expect("found above")),
        None => Err(Error::Invalid(format!(
            "adapter `{want}`: no adapter's name contains it; adapters: {}",
            adapter_list(&infos(&adapters))
        ))),
    }
}

/// Adapter `i` of [`adapters`]; past the last, an error listing them.
fn adapter_numbered(instance: &wgpu::Instance, i: usize) -> Result<wgpu::Adapter> {
    let adapters = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::all()));
    if i >= adapters.len() {
        return Err(Error::Invalid(format!(
            "adapter {i}: there are {} (numbered from 0): {}",
            adapters.len(),
            adapter_list(&infos(&adapters))
        )));
    }
    Ok(adapters.into_iter().nth(i).expect("checked above"))
}

/// The GPUs of the primary backends (Vulkan, Metal, DX12), or their CPU
/// adapters where there is no GPU, in wgpu's order: what
/// [`GpuOptions::adapter_index`] counts modulo.
fn parallel_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    let all = pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY));
    let is_cpu = |a: &wgpu::Adapter| a.get_info().device_type == wgpu::DeviceType::Cpu;
    let (cpus, gpus): (Vec<_>, Vec<_>) = all.into_iter().partition(is_cpu);
    if gpus.is_empty() { cpus } else { gpus }
}

/// The adapters [`GpuOptions::adapter_index`] takes, in its order: one
/// rank of a data-parallel group each.
pub fn data_parallel_adapters() -> Vec<wgpu::AdapterInfo> {
    infos(&parallel_adapters(&instance()))
}

/// Adapter `i` modulo the GPUs of the primary backends, or of their CPU
/// adapters where there is no GPU (see [`GpuOptions::adapter_index`]).
fn adapter_at(instance: &wgpu::Instance, i: usize) -> Result<wgpu::Adapter> {
    let mut gpus = parallel_adapters(instance);
    match gpus.len() {
        0 => Err(Error::NoAdapter(
            "no adapter on the primary backends (Vulkan, Metal, DX12)".into(),
        )),
        n => Ok(gpus.swap_remove(i % n)),
    }
}

/// How a kernel binding is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Binding {
    /// A small uniform parameter block.
    Uniform,
    /// A read-only storage buffer.
    Read,
    /// A read-write storage buffer.
    ReadWrite,
}

/// The device, its queue and what the adapter allows.
pub struct GpuContext {
    /// The wgpu device.
    pub device: wgpu::Device,
    /// Its queue.
    pub queue: wgpu::Queue,
    /// Name, backend and driver of the adapter in use.
    pub info: wgpu::AdapterInfo,
    /// The limits the device was created with (the adapter's own).
    pub limits: wgpu::Limits,
    /// Bytes of the buffers created through this context.
    pub mem: MemCounter,
    /// The device has SHADER_F16 (f16 arithmetic and storage in WGSL with
    /// `enable f16;`), requested whenever the adapter offers it.
    pub f16: bool,
    /// The subgroup width, when the adapter's subgroups all have one width
    /// (minimum = maximum) and it offers subgroup operations (WGPU's
    /// SUBGROUP, then requested), unless the tuning turns them off.
    pub subgroup: Option<u32>,
    /// The kernel choices models on this context default to.
    pub tuning: Tuning,
    pipelines: PipelineCache,
    wait_timeout: Option<std::time::Duration>,
}

impl GpuContext {
    /// Chooses an adapter (wgpu's choice, honouring `WGPU_BACKEND`,
    /// `WGPU_ADAPTER_NAME`, `WGPU_POWER_PREF`) and creates a device with the
    /// adapter's full limits and the default [`Tuning`].
    pub fn new() -> Result<Self> {
        Self::with_options(GpuOptions::default())
    }

    /// As [`GpuContext::new`], with `tuning` as the default of the models
    /// built on the context (its `subgroups` applies to the device).
    pub fn with_tuning(tuning: Tuning) -> Result<Self> {
        Self::with_options(GpuOptions {
            tuning,
            ..GpuOptions::default()
        })
    }

    /// As [`GpuContext::new`]; `timestamps` also asks for timestamp queries
    /// inside passes (for [`Profiler`]) and fails if the adapter lacks them.
    pub fn with_timestamps(timestamps: bool) -> Result<Self> {
        Self::with_options(GpuOptions {
            timestamps,
            ..GpuOptions::default()
        })
    }

    /// As [`GpuContext::new`], with the largest storage binding lowered to
    /// `bytes` (when below the adapter's): behaves as an adapter with that
    /// limit would, e.g. to test how models too large for one binding are
    /// laid out.
    pub fn with_binding_limit(bytes: u64) -> Result<Self> {
        Self::with_options(GpuOptions {
            binding_limit: Some(bytes),
            ..GpuOptions::default()
        })
    }

    /// A context built as `opts` says.
    pub fn with_options(opts: GpuOptions) -> Result<Self> {
        let GpuOptions {
            timestamps,
            binding_limit,
            adapter_name,
            adapter_index,
            device,
            tuning,
            wait_timeout,
        } = opts;
        tuning.check()?;
        let instance = instance();
        let adapter = match (device, adapter_name, adapter_index) {
            (Some(i), _, _) => adapter_numbered(&instance, i)?,
            (_, Some(want), _) if !want.is_empty() => adapter_named(&instance, &want)?,
            (_, _, Some(i)) => adapter_at(&instance, i)?,
            // wgpu's own choice, honouring WGPU_BACKEND and WGPU_POWER_PREF.
            _ => pollster::block_on(wgpu::util::initialize_adapter_from_env_or_default(
                &instance, None,
            ))
            .map_err(|e| Error::NoAdapter(e.to_string()))?,
        };
        let info = adapter.get_info();
        let mut limits = adapter.limits();
        if let Some(b) = binding_limit {
            limits.max_storage_buffer_binding_size = limits.max_storage_buffer_binding_size.min(b);
        }
        let f16 = adapter.features().contains(wgpu::Features::SHADER_F16);
        let mut required_features = if timestamps {
            let want =
                wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES;
            if !adapter.features().contains(want) {
                return Err(Error::Device(format!(
                    "adapter {} has no timestamp queries inside passes: cannot profile",
                    info.name
                )));
            }
            want
        } else {
            wgpu::Features::empty()
        };
        if f16 {
            required_features |= wgpu::Features::SHADER_F16;
        }
        // Subgroup operations of one fixed width (lavapipe: 8), requested
        // whenever the adapter offers them (the `*_sg` kernels), unless the
        // tuning turns them off.
        let wanted = tuning.subgroups.unwrap_or(true);
        let subgroup = (wanted
            && adapter.features().contains(wgpu::Features::SUBGROUP)
            && info.subgroup_min_size == info.subgroup_max_size)
            .then_some(info.subgroup_min_size);
        if subgroup.is_some() {
            required_features |= wgpu::Features::SUBGROUP;
        }
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("lstm-wgpu"),
            required_features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| Error::Device(e.to_string()))?;
        // Errors are caught by scopes around each operation; anything that
        // escapes them is logged instead of aborting the process.
        device.on_uncaptured_error(std::sync::Arc::new(|e| {
            eprintln!("lstm-wgpu: uncaptured GPU error: {e}");
        }));
        Ok(Self {
            device,
            queue,
            info,
            limits,
            mem: MemCounter::default(),
            f16,
            subgroup,
            tuning,
            pipelines: PipelineCache::default(),
            wait_timeout,
        })
    }

    /// The kernel family of `key` from the context's pipeline cache,
    /// compiled by `build` (inside an error scope) on first use; every
    /// model and trainer on the context shares it.
    pub fn cached<T: std::any::Any + Send + Sync>(
        &self,
        key: KernelKey,
        build: impl FnOnce() -> Result<T>,
    ) -> Result<std::sync::Arc<T>> {
        // Compiling under the lock keeps two models from compiling the same
        // family twice; builders never reenter the cache.
        let mut map = self
            .pipelines
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let any = match map.get(&key) {
            Some(v) => v.clone(),
            None => {
                let v: std::sync::Arc<dyn std::any::Any + Send + Sync> =
                    std::sync::Arc::new(self.scoped(build)?);
                map.insert(key.clone(), v.clone());
                v
            }
        };
        any.downcast::<T>().map_err(|_| {
            Error::Invalid(format!(
                "pipeline cache: {key:?} holds another kernel family"
            ))
        })
    }

    /// Kernel families compiled so far on this context.
    pub fn cached_families(&self) -> usize {
        self.pipelines
            .families
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// One line naming the adapter and its backend.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?}, driver {} {})",
            self.info.name,
            self.info.backend,
            self.info.device_type,
            self.info.driver,
            self.info.driver_info
        )
    }

    /// Runs `f` inside validation and out-of-memory error scopes, turning any
    /// wgpu error raised meanwhile into [`Error::Gpu`].
    pub fn scoped<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let out = f();
        let v = pollster::block_on(val.pop());
        let o = pollster::block_on(oom.pop());
        if let Some(e) = v.or(o) {
            return Err(Error::Gpu(e.to_string()));
        }
        out
    }

    /// The largest storage buffer that can be bound whole: the smaller of
    /// the adapter's largest storage binding and largest buffer, and which
    /// of the two it is.
    pub fn max_storage_bytes(&self) -> (u64, &'static str) {
        let binding = self.limits.max_storage_buffer_binding_size;
        let buffer = self.limits.max_buffer_size;
        if binding < buffer {
            (binding, "storage binding")
        } else {
            (buffer, "buffer")
        }
    }

    /// Checks that a storage buffer of `bytes` fits the adapter's limits.
    pub fn check_size(&self, what: &str, bytes: u64) -> Result<()> {
        let (limit, kind) = self.max_storage_bytes();
        if bytes > limit {
            return Err(Error::TooLarge {
                what: what.to_string(),
                bytes,
                limit,
                kind,
            });
        }
        Ok(())
    }

    /// A zeroed storage buffer of `len` 32-bit elements (at least one).
    pub fn storage(&self, label: &str, len: usize) -> Result<wgpu::Buffer> {
        let bytes = (len.max(1) * 4) as u64;
        self.check_size(label, bytes)?;
        self.mem.alloc(bytes);
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A buffer of `len` 32-bit elements the host maps to read (the
    /// destination of copies), kept by its owner.
    pub fn readback(&self, label: &str, len: usize) -> wgpu::Buffer {
        let bytes = (len.max(1) * 4) as u64;
        self.mem.alloc(bytes);
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// A storage buffer initialised with `data`.
    pub fn storage_init<T: bytemuck::Pod>(&self, label: &str, data: &[T]) -> Result<wgpu::Buffer> {
        let bytes = std::mem::size_of_val(data).max(4) as u64;
        self.check_size(label, bytes)?;
        if data.is_empty() {
            return self.storage(label, 1);
        }
        self.mem.alloc(bytes);
        Ok(self
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            }))
    }

    /// Writes `data` into `buf` at element offset `offset`.
    pub fn write<T: bytemuck::Pod>(&self, buf: &wgpu::Buffer, offset: usize, data: &[T]) {
        if !data.is_empty() {
            self.queue.write_buffer(
                buf,
                (offset * std::mem::size_of::<T>()) as u64,
                bytemuck::cast_slice(data),
            );
        }
    }

    /// Reads `len` f32 values from `buf` starting at element `offset`,
    /// waiting for all submitted work first.
    pub fn read_f32(&self, buf: &wgpu::Buffer, offset: usize, len: usize) -> Result<Vec<f32>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let bytes = (len * 4) as u64;
        let staging = self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("readback"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        self.mem.alloc(bytes);
        let out = self.read_staged(buf, offset, &staging, bytes);
        // The staging buffer dies here, whatever the outcome.
        self.mem.free(bytes);
        out
    }

    fn read_staged(
        &self,
        buf: &wgpu::Buffer,
        offset: usize,
        staging: &wgpu::Buffer,
        bytes: u64,
    ) -> Result<Vec<f32>> {
        let mut enc = self.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(buf, (offset * 4) as u64, staging, 0, bytes);
        self.queue.submit([enc.finish()]);
        self.map_read(staging, bytes)
    }

    /// Maps the first `bytes` of `staging` (a MAP_READ buffer), waits for
    /// the GPU, and returns them as `T`s, unmapping again.
    pub fn map_read<T: bytemuck::Pod>(&self, staging: &wgpu::Buffer, bytes: u64) -> Result<Vec<T>> {
        self.map_read_after(staging, bytes, None)
    }

    /// [`GpuContext::map_read`] waiting only for submission `index` (the
    /// last to write `staging`), not for the work submitted after it.
    pub fn map_read_after<T: bytemuck::Pod>(
        &self,
        staging: &wgpu::Buffer,
        bytes: u64,
        index: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<T>> {
        let (tx, rx) = std::sync::mpsc::channel();
        staging.map_async(wgpu::MapMode::Read, ..bytes, move |r| {
            let _ = tx.send(r);
        });
        self.poll_wait(index)?;
        rx.recv()
            .map_err(|e| Error::Gpu(e.to_string()))?
            .map_err(|e| Error::Gpu(e.to_string()))?;
        let view = staging
            .get_mapped_range(..bytes)
            .map_err(|e| Error::Gpu(e.to_string()))?;
        let out = bytemuck::cast_slice::<u8, T>(&view).to_vec();
        drop(view);
        staging.unmap();
        Ok(out)
    }

    /// Waits until all submitted work is done.
    pub fn wait(&self) -> Result<()> {
        self.poll_wait(None)
    }

    /// Waits until submission `index` is done (the work submitted after it
    /// may still run).
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.poll_wait(Some(index))
    }

    fn poll_wait(&self, index: Option<wgpu::SubmissionIndex>) -> Result<()> {
        let wait = wgpu::PollType::Wait {
            submission_index: index,
            timeout: self.wait_timeout,
        };
        match self.device.poll(wait) {
            Ok(_) => Ok(()),
            Err(wgpu::PollError::Timeout) => Err(Error::Gpu(format!(
                "the GPU did not finish within {:.1} s (a hung driver or device?)",
                self.wait_timeout.map_or(0.0, |t| t.as_secs_f64())
            ))),
            Err(e) => Err(Error::Gpu(e.to_string())),
        }
    }

    /// Splits `n` workgroups into an (x, y) grid within the per-dimension limit.
    pub fn grid(&self, n: u32) -> (u32, u32) {
        let max = self.limits.max_compute_workgroups_per_dimension.max(1);
        if n <= max {
            (n.max(1), 1)
        } else {
            (max, n.div_ceil(max))
        }
    }
}

/// A compute pipeline with an explicit bind group layout. Binding 0 of
/// group 0 is always the kernel's uniform parameter block.
pub struct Kernel {
    /// The pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Its only bind group layout (group 0).
    pub layout: wgpu::BindGroupLayout,
    bindings: Vec<(u32, Binding)>,
    name: std::sync::Arc<str>,
}

/// One recorded dispatch: pipeline, bind group and workgroup grid.
#[derive(Clone, Debug)]
pub struct Dispatch {
    /// The pipeline to run.
    pub pipeline: wgpu::ComputePipeline,
    /// Its bind group (group 0).
    pub bind_group: wgpu::BindGroup,
    /// Workgroups in x and y.
    pub groups: (u32, u32),
    /// The kernel's entry point (what the profiler reports).
    pub name: std::sync::Arc<str>,
}

impl Dispatch {
    /// Records the dispatch into a compute pass.
    pub fn record(&self, pass: &mut wgpu::ComputePass<'_>) {
        pass.set_pipeline(&self.pipeline);
        pass.set_bind_group(0, &self.bind_group, &[]);
        pass.dispatch_workgroups(self.groups.0, self.groups.1, 1);
    }
}

impl Kernel {
    /// Compiles `entry` of `module` with the given storage bindings (binding
    /// number and use; the uniform at binding 0 is implied) and
    /// pipeline-overridable constants.
    pub fn new(
        ctx: &GpuContext,
        module: &Module,
        entry: &str,
        storage: &[(u32, Binding)],
        constants: &[(&str, f64)],
    ) -> Self {
        Self::build(&ctx.device, module, entry, storage, constants)
    }

    fn build(
        device: &wgpu::Device,
        module: &Module,
        entry: &str,
        storage: &[(u32, Binding)],
        constants: &[(&str, f64)],
    ) -> Self {
        let mut bindings = vec![(0, Binding::Uniform)];
        bindings.extend_from_slice(storage);
        let entries: Vec<wgpu::BindGroupLayoutEntry> = bindings
            .iter()
            .map(|&(i, b)| wgpu::BindGroupLayoutEntry {
                binding: i,
                visibility: wgpu::ShaderStages::COMPUTE,
                ty: wgpu::BindingType::Buffer {
                    ty: match b {
                        Binding::Uniform => wgpu::BufferBindingType::Uniform,
                        Binding::Read => wgpu::BufferBindingType::Storage { read_only: true },
                        Binding::ReadWrite => wgpu::BufferBindingType::Storage { read_only: false },
                    },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                count: None,
            })
            .collect();
        let layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some(entry),
            entries: &entries,
        });
        let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
            label: Some(entry),
            bind_group_layouts: &[Some(&layout)],
            immediate_size: 0,
        });
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(entry),
            layout: Some(&pl),
            module: &module.inner,
            entry_point: Some(entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        Self {
            pipeline,
            layout,
            bindings,
            name: format!("{}::{entry}", module.label).into(),
        }
    }

    /// A dispatch of this kernel with its own uniform block `params` (the
    /// shader's `Params`, as its `#[repr(C)]` mirror) and `storage` buffers
    /// in the order the bindings were declared.
    pub fn dispatch<P: bytemuck::Pod>(
        &self,
        ctx: &GpuContext,
        params: &P,
        storage: &[&wgpu::Buffer],
        groups: (u32, u32),
    ) -> Dispatch {
        assert_eq!(self.bindings.len(), storage.len() + 1, "binding count");
        let uniform = ctx
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::bytes_of(params),
                usage: wgpu::BufferUsages::UNIFORM,
            });
        // Kept alive by the bind group, as long as the dispatch.
        ctx.mem.alloc(uniform.size());
        let mut entries = vec![wgpu::BindGroupEntry {
            binding: 0,
            resource: uniform.as_entire_binding(),
        }];
        for (&(i, _), b) in self.bindings[1..].iter().zip(storage) {
            entries.push(wgpu::BindGroupEntry {
                binding: i,
                resource: b.as_entire_binding(),
            });
        }
        let bind_group = ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &self.layout,
            entries: &entries,
        });
        Dispatch {
            pipeline: self.pipeline.clone(),
            bind_group,
            groups,
            name: self.name.clone(),
        }
    }
}

/// A compiled WGSL module and the name of its kernel family.
pub struct Module {
    /// The module.
    pub inner: wgpu::ShaderModule,
    /// Its family (the shader file's stem).
    pub label: &'static str,
    /// The device it was compiled on, which compiles its kernels.
    device: wgpu::Device,
}

impl Module {
    /// [`Kernel::new`] of `entry` with no overridable constants, what all
    /// but the tiled kernels compile.
    pub fn kernel(&self, entry: &str, storage: &[(u32, Binding)]) -> Kernel {
        Kernel::build(&self.device, self, entry, storage, &[])
    }
}

/// The f16 build of a kernel's source: `enable f16;` first, each alias of
/// `aliases` set to f16 and each (name, value) of `consts` set, by name
/// ([`set_decl`]).
pub fn half_source(src: &str, aliases: &[&str], consts: &[(&str, &str)]) -> String {
    let mut out = format!("enable f16;\n{src}");
    for a in aliases {
        out = set_decl(&out, "alias", a, "f16");
    }
    for (name, value) in consts {
        out = set_decl(&out, "const", name, value);
    }
    out
}

/// `src` with the value after `=` of its declaration `kind name`
/// (`const TB: u32 = 8u;`, `alias WT = f32;`) set to `value`. Panics unless
/// a line starts with that declaration exactly once (the sources are
/// compiled in; a test builds every variant).
pub fn set_decl(src: &str, kind: &str, name: &str, value: &str) -> String {
    let head = format!("{kind} {name}");
    let at: Vec<usize> = src
        .match_indices(&head)
        .map(|(i, _)| i)
        .filter(|&i| {
            (i == 0 || src[..i].ends_with('\n'))
                && src[i + head.len()..].starts_with([':', ' ', '='])
        })
        .collect();
    let [start] = at[..] else {
        panic!("`{head}` declared {} times, not once", at.len());
    };
    let eq = start + src[start..].find('=').expect("a declaration with =");
    let end = eq + src[eq..].find(';').expect("a declaration ending in ;");
    format!("{} {value}{}", &src[..=eq], &src[end..])
}

/// `src` without the lines from `// subgroup-begin` to `// subgroup-end`:
/// the entry points that use subgroup operations, which the shader
/// validator refuses on devices without them.
pub fn without_subgroups(src: &str) -> String {
    match src.split_once("// subgroup-begin") {
        Some((head, rest)) => {
            let (_, tail) = rest
                .split_once("// subgroup-end")
                .expect("a subgroup section ends");
            format!("{head}{tail}")
        }
        None => src.to_string(),
    }
}

/// Compiles WGSL source into a module, with bounds checks but without the
/// loop-bounding counters wgpu adds by default: those hide every loop's
/// trip count from the driver's compiler, which then neither unrolls the
/// small constant loops that stage tiles nor overlaps their loads (measured
/// on an H100: each chunk of a tiled kernel paid one memory latency per
/// load).
pub fn module(ctx: &GpuContext, label: &'static str, src: &str) -> Module {
    let desc = wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(src.into()),
    };
    let checks = wgpu::ShaderRuntimeChecks {
        bounds_checks: true,
        force_loop_bounding: false,
        ..wgpu::ShaderRuntimeChecks::checked()
    };
    // SAFETY: every loop in shaders/ runs over a bound that the host
    // validates and that each iteration approaches (counters that only grow
    // towards a uniform or constant limit), so none can run forever, which
    // is all that dropping the loop-bounding counters requires; all buffer
    // and array accesses stay bounds-checked.
    let inner = unsafe { ctx.device.create_shader_module_trusted(desc, checks) };
    Module {
        inner,
        label,
        device: ctx.device.clone(),
    }
}

/// Compiles WGSL source that joins code from outside `shaders/` (a cell
/// file): with wgpu's default checks, loop-bounding counters included,
/// since nothing proves its loops end.
pub fn module_bounded(ctx: &GpuContext, label: &'static str, src: &str) -> Module {
    let inner = ctx
        .device
        .create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        });
    Module {
        inner,
        label,
        device: ctx.device.clone(),
    }
}

/// Per-kernel GPU time of recorded passes, from timestamps written between
/// dispatches (the context must come from [`GpuContext::with_timestamps`]).
/// Time between two timestamps is charged to the dispatch between them, so
/// the barrier before a dispatch counts as its own.
pub struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    staging: wgpu::Buffer,
    capacity: u32,
    recorded: Vec<std::sync::Arc<str>>,
    /// Nanoseconds per kernel name, summed over collected passes.
    totals: std::collections::BTreeMap<std::sync::Arc<str>, (f64, usize)>,
    passes: usize,
}

impl Profiler {
    /// Room for `dispatches` dispatches per recorded pass.
    pub fn new(ctx: &GpuContext, dispatches: usize) -> Result<Self> {
        let capacity = (dispatches + 1) as u32;
        if capacity > wgpu::QUERY_SET_MAX_QUERIES {
            return Err(Error::Invalid(format!(
                "{dispatches} dispatches exceed the {} timestamps of one query set",
                wgpu::QUERY_SET_MAX_QUERIES - 1
            )));
        }
        let bytes = capacity as u64 * wgpu::QUERY_SIZE as u64;
        let queries = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("profiler"),
            ty: wgpu::QueryType::Timestamp,
            count: capacity,
        });
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profiler resolve"),
            size: bytes,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("profiler staging"),
            size: bytes,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        Ok(Self {
            queries,
            resolve,
            staging,
            capacity,
            recorded: Vec::new(),
            totals: Default::default(),
            passes: 0,
        })
    }

    /// Records `list` into `pass` with a timestamp before each dispatch and
    /// after the last.
    pub fn record<'a>(
        &mut self,
        pass: &mut wgpu::ComputePass<'_>,
        list: impl IntoIterator<Item = &'a Dispatch>,
    ) -> Result<()> {
        self.recorded.clear();
        for d in list {
            if self.recorded.len() + 1 >= self.capacity as usize {
                return Err(Error::Invalid(
                    "profiler: more dispatches than it was made for".into(),
                ));
            }
            pass.write_timestamp(&self.queries, self.recorded.len() as u32);
            d.record(pass);
            self.recorded.push(d.name.clone());
        }
        pass.write_timestamp(&self.queries, self.recorded.len() as u32);
        Ok(())
    }

    /// Copies the timestamps out (after the pass, before the submit).
    pub fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = self.recorded.len() as u32 + 1;
        enc.resolve_query_set(&self.queries, 0..n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.staging, 0, n as u64 * 8);
    }

    /// Reads the submitted pass's timestamps (waits for the GPU) and adds
    /// them to the totals.
    pub fn collect(&mut self, ctx: &GpuContext) -> Result<()> {
        let n = self.recorded.len() + 1;
        let ticks: Vec<u64> = ctx.map_read(&self.staging, n as u64 * 8)?;
        let period = ctx.queue.get_timestamp_period() as f64;
        for (i, name) in self.recorded.iter().enumerate() {
            let ns = ticks[i + 1].saturating_sub(ticks[i]) as f64 * period;
            let e = self.totals.entry(name.clone()).or_insert((0.0, 0));
            e.0 += ns;
            e.1 += 1;
        }
        self.passes += 1;
        Ok(())
    }

    /// Per kernel: name, dispatches per pass, microseconds per pass; the
    /// costliest first.
    pub fn report(&self) -> Vec<(String, f64, f64)> {
        let p = self.passes.max(1) as f64;
        let mut rows: Vec<(String, f64, f64)> = self
            .totals
            .iter()
            .map(|(k, &(ns, n))| (k.to_string(), n as f64 / p, ns / p / 1e3))
            .collect();
        rows.sort_by(|a, b| b.2.total_cmp(&a.2));
        rows
    }

    /// Forgets what was collected (after warm-up steps).
    pub fn reset(&mut self) {
        self.totals.clear();
        self.passes = 0;
    }
}
