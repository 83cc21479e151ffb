//! What the host knows of the WGSL side: the shaders' uniform structs,
//! declared once in Rust and written into each source as WGSL (their
//! layouts checked against naga's by `tests/shaders.rs`), and the sources
//! the wrappers compile.

/// The source of a kernel family: files of `shaders/` joined at compile
/// time, shared pieces (`common/...`) first, the family's own file last.
macro_rules! shader {
    ($($file:literal),+ $(,)?) => {
        concat!($(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $file))),+)
    };
}
pub(crate) use shader;

/// A family's source: the WGSL declaration of its uniform struct `T` (and
/// of the structs that holds), generated from the Rust mirror, the one place
/// it is written, then `files` (joined by [`shader!`]).
pub(crate) fn source<T: WgslStruct>(files: &str) -> String {
    let mut out = String::new();
    T::declare(&mut out);
    out.push_str(files);
    out
}

/// Defines a family's `source()`: [`source`] of uniform struct `$ty` and
/// `files` joined by [`shader!`].
macro_rules! family_source {
    ($ty:ty; $($file:literal),+ $(,)?) => {
        #[doc = concat!("The family's source, its uniform struct declared from [`", stringify!($ty), "`].")]
        pub(crate) fn source() -> String {
            $crate::kernels::wgsl::source::<$ty>($crate::kernels::wgsl::shader!($($file),+))
        }
    };
}
pub(crate) use family_source;

/// [`source`] of a family that joins a cell's pointwise functions between
/// its shared pieces (`before`) and its own file (`after`).
pub(crate) fn cell_source<T: WgslStruct>(
    before: &str,
    cell: super::cell::Cell,
    after: &str,
) -> String {
    source::<T>(&format!("{before}{}{after}", cell.source()))
}

/// A type as WGSL spells it, for comparing a Rust mirror with its shader.
pub trait WgslType {
    /// The WGSL type, e.g. `u32` or `array<Dir, 2>`.
    fn wgsl() -> String;
    /// Appends the WGSL declarations the type needs: none for a scalar, a
    /// struct's own after those of the structs it holds.
    fn declare(_out: &mut String) {}
}

impl WgslType for u32 {
    fn wgsl() -> String {
        "u32".into()
    }
}

impl WgslType for f32 {
    fn wgsl() -> String {
        "f32".into()
    }
}

impl<T: WgslType, const N: usize> WgslType for [T; N] {
    fn wgsl() -> String {
        format!("array<{}, {N}>", T::wgsl())
    }

    fn declare(out: &mut String) {
        T::declare(out);
    }
}

/// One member of a mirrored struct.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    /// Its name, the same in Rust and WGSL.
    pub name: &'static str,
    /// Byte offset.
    pub offset: usize,
    /// Its WGSL type.
    pub ty: String,
}

/// A `#[repr(C)]` Rust struct laid out as a WGSL struct, member for member.
pub trait WgslStruct: bytemuck::Pod + WgslType {
    /// The struct's name in its shader.
    const NAME: &'static str;
    /// The members in declaration order.
    fn members() -> Vec<Member>;

    /// Its WGSL declaration, one member a line.
    fn declaration() -> String {
        let members: String = Self::members()
            .iter()
            .map(|m| format!("    {}: {},\n", m.name, m.ty))
            .collect();
        format!("struct {} {{\n{members}}}\n", Self::NAME)
    }
}

/// Declares a struct of the shaders in Rust: `#[repr(C)]`, `Pod`, public
/// fields named as in WGSL, and its [`WgslStruct`] metadata, from which
/// [`source`] writes its WGSL declaration.
macro_rules! wgsl_struct {
    (
        $(#[$doc:meta])*
        pub struct $name:ident = $wgsl:literal {
            $($(#[$fdoc:meta])* $field:ident: $ty:ty),+ $(,)?
        }
    ) => {
        $(#[$doc])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
        pub struct $name {
            $($(#[$fdoc])* pub $field: $ty),+
        }

        impl $crate::kernels::wgsl::WgslType for $name {
            fn wgsl() -> String {
                $wgsl.into()
            }

            fn declare(out: &mut String) {
                $(<$ty as $crate::kernels::wgsl::WgslType>::declare(out);)+
                out.push_str(&<Self as $crate::kernels::wgsl::WgslStruct>::declaration());
            }
        }

        impl $crate::kernels::wgsl::WgslStruct for $name {
            const NAME: &'static str = $wgsl;
            fn members() -> Vec<$crate::kernels::wgsl::Member> {
                vec![$($crate::kernels::wgsl::Member {
                    name: stringify!($field),
                    offset: std::mem::offset_of!($name, $field),
                    ty: <$ty as $crate::kernels::wgsl::WgslType>::wgsl(),
                }),+]
            }
        }
    };
}
pub(crate) use wgsl_struct;

/// A Rust mirror's layout, beside the shader it mirrors a struct of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StructLayout {
    /// The shader's file in `shaders/`.
    pub shader: &'static str,
    /// The struct's WGSL name.
    pub name: &'static str,
    /// `size_of` the Rust struct.
    pub size: usize,
    /// Its members.
    pub members: Vec<Member>,
}

fn layout<T: WgslStruct>(shader: &'static str) -> StructLayout {
    StructLayout {
        shader,
        name: T::NAME,
        size: std::mem::size_of::<T>(),
        members: T::members(),
    }
}

/// Every Rust mirror of a struct in a uniform block (nested ones too), by
/// shader.
pub fn uniform_structs() -> Vec<StructLayout> {
    use super::*;
    vec![
        layout::<attention::AttentionUniform>("attention.wgsl"),
        layout::<layer_norm::NormUniform>("batch_norm.wgsl"),
        layout::<cast::CastUniform>("cast.wgsl"),
        layout::<check_cell::CheckUniform>("check_cell.wgsl"),
        layout::<clip::ClipUniform>("clip.wgsl"),
        layout::<elementwise::ElementwiseUniform>("elementwise.wgsl"),
        layout::<embedding::EmbeddingUniform>("embedding.wgsl"),
        layout::<gemm::GemmUniform>("gemm.wgsl"),
        layout::<histogram::HistogramUniform>("histogram.wgsl"),
        layout::<layer_norm::NormUniform>("layer_norm.wgsl"),
        layout::<loss::LossUniform>("loss.wgsl"),
        layout::<lstm_cell::CellUniform>("lstm_cell.wgsl"),
        layout::<lstm_cell_ln::NormCellUniform>("lstm_cell_bn.wgsl"),
        layout::<lstm_cell_ln::NormCellUniform>("lstm_cell_ln.wgsl"),
        layout::<lstm_persistent::PersistentUniform>("lstm_persistent.wgsl"),
        layout::<lstm_persistent::PersistentDir>("lstm_persistent.wgsl"),
        layout::<lstm_proj::ProjUniform>("lstm_proj.wgsl"),
        layout::<optim::OptimUniform>("optim.wgsl"),
        layout::<reduce::ReduceUniform>("reduce.wgsl"),
    ]
}

/// Every kernel family's f32 source as its wrapper compiles it (shared
/// pieces joined, every entry point, the default tiles), by shader file, so
/// that tests can validate them without an adapter.
pub fn sources() -> Vec<(&'static str, String)> {
    use super::*;
    vec![
        ("attention.wgsl", attention::source()),
        ("batch_norm.wgsl", batch_norm::source()),
        ("cast.wgsl", cast::source()),
        ("check_cell.wgsl", check_cell::source(cell::Cell::Lstm)),
        ("clip.wgsl", clip::source()),
        ("elementwise.wgsl", elementwise::source()),
        ("embedding.wgsl", embedding::source()),
        ("gemm.wgsl", gemm::Gemm::source(false, false)),
        ("histogram.wgsl", histogram::source()),
        ("layer_norm.wgsl", layer_norm::source()),
        ("loss.wgsl", loss::source()),
        (
            "lstm_cell.wgsl",
            lstm_cell::TileConfig::DEFAULT.source(false),
        ),
        ("lstm_cell_bn.wgsl", lstm_cell_bn::source()),
        ("lstm_cell_ln.wgsl", lstm_cell_ln::source()),
        (
            "lstm_persistent.wgsl",
            lstm_persistent::source(cell::Cell::Lstm),
        ),
        ("lstm_proj.wgsl", lstm_proj::source()),
        ("optim.wgsl", optim::source()),
        ("reduce.wgsl", reduce::source()),
    ]
}
