//! Every kernel family in `shaders/` parses and validates with naga, the
//! shader compiler inside wgpu, without needing a GPU adapter. A shader
//! error thus fails `cargo test` on any machine, with naga's annotated
//! source excerpt, instead of surfacing as a pipeline-creation error on
//! first use.
//!
//! Each family is checked as its wrapper compiles it
//! (`kernels::wgsl::sources()`: the shared pieces of `shaders/common/`
//! joined first); the directory is listed at test time, so a new shader
//! without a wrapper yet is checked as it stands. Entry points are checked
//! against the names the Rust wrappers in `src/kernels/` compile, and the
//! uniform structs (written into each source from their Rust declarations)
//! against Rust's layout of them.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::path::{Path, PathBuf};

/// Entry points each known shader must define: exactly the ones its wrapper
/// in `src/kernels/` passes to `Kernel::new`.
const ENTRY_POINTS: &[(&str, &[&str])] = &[
    (
        "attention.wgsl",
        &[
            "attention_forward",
            "attention_backward",
            "attention_query_grad",
        ],
    ),
    ("gemm.wgsl", &["gemm", "gemm_tiled", "gemm_vec4", "gemm_sg"]),
    (
        "lstm_cell.wgsl",
        &[
            "forward",
            "backward",
            "backward_state",
            "forward_tiled",
            "backward_tiled",
            "backward_state_tiled",
            "forward_sg",
            "backward_sg",
            "backward_state_sg",
        ],
    ),
    ("reduce.wgsl", &["colsum", "colsum_prod"]),
    ("cast.wgsl", &["to_half"]),
    ("check_cell.wgsl", &["check"]),
    ("lstm_cell_ln.wgsl", &["forward", "backward"]),
    (
        "layer_norm.wgsl",
        &["forward", "backward_dx", "backward_params"],
    ),
    (
        "batch_norm.wgsl",
        &["forward", "backward_sums", "backward_dx"],
    ),
    ("clip.wgsl", &["partials", "segsum", "finalize", "apply"]),
    ("lstm_cell_bn.wgsl", &["forward", "backward"]),
    ("lstm_persistent.wgsl", &["forward", "backward"]),
    (
        "lstm_proj.wgsl",
        &["forward_step", "backward_step", "scatter", "gather"],
    ),
    (
        "optim.wgsl",
        &["sgd", "sgd_momentum", "adam", "adam_amsgrad"],
    ),
    ("embedding.wgsl", &["forward", "backward"]),
    (
        "loss.wgsl",
        &[
            "ce_forward",
            "ce_backward",
            "mse_forward",
            "mse_backward",
            "mean",
        ],
    ),
    (
        "elementwise.wgsl",
        &[
            "dropout",
            "dropout_add",
            "dropout_split",
            "add",
            "accumulate",
            "fill",
            "last_gather",
            "last_scatter",
        ],
    ),
];

fn shader_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders")
}

/// Every `*.wgsl` file of `shaders/` (the families; shared pieces live in
/// `shaders/common/`), sorted by name.
fn shader_files() -> Vec<PathBuf> {
    let dir = shader_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "wgsl"))
        .collect();
    files.sort();
    files
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// (file name, source) of every family: as its wrapper compiles it, or the
/// file itself for a shader the library does not list.
fn families() -> Vec<(String, String)> {
    let built = lstm_wgpu::kernels::wgsl::sources();
    let files: Vec<String> = shader_files().iter().map(|f| file_name(f)).collect();
    for (name, _) in &built {
        assert!(
            files.iter().any(|f| f == name),
            "kernels::wgsl::sources() names {name}, which is not in {}",
            shader_dir().display()
        );
    }
    files
        .into_iter()
        .map(|name| {
            let src = match built.iter().find(|(n, _)| *n == name) {
                Some((_, src)) => src.clone(),
                None => std::fs::read_to_string(shader_dir().join(&name))
                    .unwrap_or_else(|e| panic!("{name}: cannot read: {e}")),
            };
            (name, src)
        })
        .collect()
}

/// Parses and validates `source`, returning the module or a readable error
/// naming the family (line numbers count from the first shared piece).
fn check(name: &str, source: &str) -> Result<naga::Module, String> {
    let module = naga::front::wgsl::parse_str(source).map_err(|e| {
        format!(
            "{name}: WGSL parse error:\n{}",
            e.emit_to_string_with_path(source, name)
        )
    })?;
    Validator::new(ValidationFlags::all(), Capabilities::all())
        .validate(&module)
        .map_err(|e| {
            format!(
                "{name}: validation error:\n{}",
                e.emit_to_string_with_path(source, name)
            )
        })?;
    Ok(module)
}

#[test]
fn every_shader_parses_and_validates() {
    let families = families();
    assert!(
        families.len() >= 3,
        "expected at least 3 .wgsl files in {}, found {}",
        shader_dir().display(),
        families.len()
    );
    // Check them all before failing, so one run reports every broken shader.
    let errors: Vec<String> = families
        .iter()
        .filter_map(|(name, src)| check(name, src).err())
        .collect();
    assert!(
        errors.is_empty(),
        "{} of {} shaders failed:\n{}",
        errors.len(),
        families.len(),
        errors.join("\n")
    );
}

#[test]
fn entry_points_match_the_wrappers() {
    let families = families();
    for (file, _) in ENTRY_POINTS {
        assert!(
            families.iter().any(|(n, _)| n == file),
            "{file} is missing from {}",
            shader_dir().display()
        );
    }
    for (name, src) in &families {
        let module = check(name, src).unwrap_or_else(|e| panic!("{e}"));
        let mut found: Vec<&str> = module
            .entry_points
            .iter()
            .map(|ep| ep.name.as_str())
            .collect();
        // The wrappers only build compute pipelines.
        for ep in &module.entry_points {
            assert_eq!(
                ep.stage,
                naga::ShaderStage::Compute,
                "{name}: entry point `{}` is not a compute shader",
                ep.name
            );
        }
        match ENTRY_POINTS.iter().find(|(f, _)| f == name) {
            Some((_, expected)) => {
                let mut expected = expected.to_vec();
                expected.sort_unstable();
                found.sort_unstable();
                assert_eq!(
                    found, expected,
                    "{name}: entry points differ from those src/kernels/ compiles"
                );
            }
            // A new shader with no entry in the table yet: it must at least
            // offer something to dispatch.
            None => assert!(!found.is_empty(), "{name}: no entry points"),
        }
    }
}

/// The f16-mixed builds (`enable f16;`, f16 aliases) of every kernel that
/// has one, made by their wrappers, parse and validate too.
#[test]
fn f16_builds_validate() {
    let builds = lstm_wgpu::kernels::half_sources();
    assert_eq!(
        builds.len(),
        8,
        "f16 builds: {:?}",
        builds.iter().map(|b| &b.0).collect::<Vec<_>>()
    );
    for (name, src) in builds {
        let module = naga::front::wgsl::parse_str(&src)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
        Validator::new(ValidationFlags::all(), Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(&src)));
    }
}

/// On devices without subgroups the wrappers strip the `*_sg` entry points
/// (`gpu::without_subgroups`); what is left must validate without the
/// subgroup capabilities, while the whole source must need them.
#[test]
fn sources_without_subgroups_validate_without_the_capability() {
    let no_sg = Capabilities::all() - Capabilities::SUBGROUP - Capabilities::SUBGROUP_BARRIER;
    let mut builds: Vec<(String, String)> = families()
        .into_iter()
        .filter(|(n, _)| n == "gemm.wgsl" || n == "lstm_cell.wgsl")
        .collect();
    builds.extend(
        lstm_wgpu::kernels::half_sources()
            .into_iter()
            .filter(|(n, _)| n.starts_with("gemm") || n.starts_with("lstm_cell")),
    );
    assert_eq!(
        builds.len(),
        8,
        "gemm f32 + 3 f16, cell f32 + 2 f16 tiles + the GRU's f16"
    );
    for (name, src) in builds {
        let validate = |src: &str| {
            let module = naga::front::wgsl::parse_str(src)
                .unwrap_or_else(|e| panic!("{name}: {}", e.emit_to_string(src)));
            Validator::new(ValidationFlags::all(), no_sg)
                .validate(&module)
                .map(|_| ())
                .map_err(|e| e.emit_to_string(src))
        };
        assert!(validate(&src).is_err(), "{name} uses subgroup operations");
        let stripped = lstm_wgpu::gpu::without_subgroups(&src);
        validate(&stripped).unwrap_or_else(|e| panic!("{name} stripped: {e}"));
        let module = naga::front::wgsl::parse_str(&stripped).expect("parsed above");
        let entries: Vec<&str> = module
            .entry_points
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert!(
            !entries.is_empty() && entries.iter().all(|e| !e.ends_with("_sg")),
            "{name} stripped: {entries:?}"
        );
    }
}

/// The WGSL spelling of `ty`, as `kernels::wgsl::WgslType` writes it.
fn wgsl_type(module: &naga::Module, ty: naga::Handle<naga::Type>) -> String {
    let t = &module.types[ty];
    match &t.inner {
        naga::TypeInner::Scalar(naga::Scalar { kind, width: 4 }) => match kind {
            naga::ScalarKind::Uint => "u32".into(),
            naga::ScalarKind::Sint => "i32".into(),
            naga::ScalarKind::Float => "f32".into(),
            k => format!("{k:?}"),
        },
        naga::TypeInner::Array {
            base,
            size: naga::ArraySize::Constant(n),
            ..
        } => format!("array<{}, {n}>", wgsl_type(module, *base)),
        naga::TypeInner::Struct { .. } => t.name.clone().unwrap_or_default(),
        other => format!("{other:?}"),
    }
}

/// The structs a uniform block of `module` holds (nested ones too), each
/// with the stride it has as an array element, if it is one.
fn uniform_structs(module: &naga::Module) -> Vec<(naga::Handle<naga::Type>, Option<u32>)> {
    fn walk(
        module: &naga::Module,
        ty: naga::Handle<naga::Type>,
        stride: Option<u32>,
        out: &mut Vec<(naga::Handle<naga::Type>, Option<u32>)>,
    ) {
        match &module.types[ty].inner {
            naga::TypeInner::Array { base, stride, .. } => walk(module, *base, Some(*stride), out),
            naga::TypeInner::Struct { members, .. } => {
                out.push((ty, stride));
                for m in members {
                    walk(module, m.ty, None, out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for (_, var) in module.global_variables.iter() {
        if var.space == naga::AddressSpace::Uniform {
            walk(module, var.ty, None, &mut out);
        }
    }
    out
}

/// Every struct in a uniform block of a shader has a `#[repr(C)]` Rust
/// declaration in `src/kernels/` with the same size, member names, offsets
/// and types (naga's layout against `offset_of!`), and every declaration
/// listed has its struct: the WGSL text is generated from the Rust one, so
/// this catches where WGSL's alignment rules lay out what Rust packs
/// otherwise (a vec3, a nested struct's stride), or a struct not generated.
#[test]
fn uniform_structs_match_their_rust_mirrors() {
    let mirrors = lstm_wgpu::kernels::wgsl::uniform_structs();
    let mut errors = Vec::new();
    let mut matched = vec![false; mirrors.len()];
    for (file, src) in families() {
        let module = check(&file, &src).unwrap_or_else(|e| panic!("{e}"));
        let mut layouter = naga::proc::Layouter::default();
        layouter.update(module.to_ctx()).expect("layout");
        for (ty, stride) in uniform_structs(&module) {
            let name = module.types[ty].name.clone().unwrap_or_default();
            let Some(i) = mirrors
                .iter()
                .position(|m| m.shader == file && m.name == name)
            else {
                errors.push(format!(
                    "{file}: uniform struct `{name}` has no Rust mirror"
                ));
                continue;
            };
            matched[i] = true;
            let rust = &mirrors[i];
            let naga::TypeInner::Struct { members, .. } = &module.types[ty].inner else {
                unreachable!("a struct");
            };
            let wgsl: Vec<(String, usize, String)> = members
                .iter()
                .map(|m| {
                    (
                        m.name.clone().unwrap_or_default(),
                        m.offset as usize,
                        wgsl_type(&module, m.ty),
                    )
                })
                .collect();
            let host: Vec<(String, usize, String)> = rust
                .members
                .iter()
                .map(|m| (m.name.to_string(), m.offset, m.ty.clone()))
                .collect();
            if let Some(i) = (0..wgsl.len().max(host.len())).find(|&i| wgsl.get(i) != host.get(i)) {
                errors.push(format!(
                    "{file}: `{name}` member {i} (name, offset, type): WGSL {:?}, Rust {:?}",
                    wgsl.get(i),
                    host.get(i)
                ));
            }
            let size = layouter[ty].size as usize;
            if size != rust.size {
                errors.push(format!(
                    "{file}: `{name}` is {size} bytes in WGSL, {} in Rust",
                    rust.size
                ));
            }
            if let Some(stride) = stride.filter(|&s| s as usize != rust.size) {
                errors.push(format!(
                    "{file}: `{name}` has an array stride of {stride} bytes in WGSL, {} in Rust",
                    rust.size
                ));
            }
        }
    }
    for (m, _) in mirrors.iter().zip(&matched).filter(|(_, hit)| !**hit) {
        errors.push(format!(
            "{}: no uniform struct `{}` for its Rust mirror",
            m.shader, m.name
        ));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// Sources are specialised by declaration name (`gpu::set_decl`): the
/// cell's tile constants and f16 switches land where the shader declares
/// them, and a name declared other than once at the start of a line is
/// refused instead of silently left alone.
#[test]
fn sources_are_specialised_by_name() {
    use lstm_wgpu::gpu::set_decl;
    use lstm_wgpu::kernels::lstm_cell::TileConfig;
    let src = "const TB: u32 = 8u;\nconst TBX: u32 = 1u;\n    const TB: u32 = 2u;\n";
    assert_eq!(
        set_decl(src, "const", "TB", "16u"),
        "const TB: u32 = 16u;\nconst TBX: u32 = 1u;\n    const TB: u32 = 2u;\n"
    );
    assert!(std::panic::catch_unwind(|| set_decl(src, "const", "KC", "1u")).is_err());
    let twice = format!("{src}const TB: u32 = 4u;\n");
    assert!(std::panic::catch_unwind(|| set_decl(&twice, "const", "TB", "1u")).is_err());
    for tile in [TileConfig::DEFAULT, TileConfig::LARGE] {
        for half in [false, true] {
            let s = tile.source(half);
            for (name, v) in [
                ("TB", tile.tb),
                ("TU", tile.tu),
                ("KC", tile.kc),
                ("KS", tile.ks),
            ] {
                let line = format!("\nconst {name}: u32 = {v}u;\n");
                assert!(
                    s.contains(&line),
                    "{tile:?} half {half}: no `{}`",
                    line.trim()
                );
            }
            assert_eq!(s.contains("\nconst HALF: bool = true;\n"), half);
            assert_eq!(s.contains("\nalias DGT = f16;\n"), half);
            assert_eq!(s.starts_with("enable f16;\n"), half);
        }
    }
}

/// The gate count a cell file declares is the one the host lays buffers
/// out with (`kernels::cell`), in every family that joins the file.
/// The CELL_GATES a validated source declares (is a cell file joined?).
fn declared_gates(name: &str, src: &str) -> usize {
    let module = check(name, src).unwrap_or_else(|e| panic!("{e}"));
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some("CELL_GATES"))
        .unwrap_or_else(|| panic!("{name}: no CELL_GATES (is a cells/ file joined?)"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v as usize,
        ref e => panic!("{name}: CELL_GATES is {e:?}"),
    }
}

#[test]
fn cell_files_declare_the_host_gate_count() {
    use lstm_wgpu::kernels::cell::Cell;
    let lstm = [
        "lstm_cell.wgsl",
        "lstm_cell_bn.wgsl",
        "lstm_cell_ln.wgsl",
        "lstm_persistent.wgsl",
        "lstm_proj.wgsl",
    ];
    for (name, src) in families()
        .into_iter()
        .filter(|(n, _)| lstm.contains(&n.as_str()))
    {
        assert_eq!(declared_gates(&name, &src), Cell::Lstm.gates(), "{name}");
    }
    // The recurrent strategies and the persistent loop joined with every
    // other cell validate and declare that cell's G.
    use lstm_wgpu::kernels::lstm_cell::TileConfig;
    for cell in [
        Cell::Gru,
        Cell::IndRnn { relu: true },
        Cell::IndRnn { relu: false },
    ] {
        for tile in [TileConfig::DEFAULT, TileConfig::LARGE] {
            let name = format!("lstm_cell.wgsl with {cell:?}, {tile:?}");
            let src = tile.source_of(cell, false);
            assert_eq!(declared_gates(&name, &src), cell.gates(), "{name}");
        }
        // And the persistent loop.
        let name = format!("lstm_persistent.wgsl with {cell:?}");
        let src = lstm_wgpu::kernels::lstm_persistent::source(cell);
        assert_eq!(declared_gates(&name, &src), cell.gates(), "{name}");
    }
}
