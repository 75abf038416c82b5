//! Instruction-set levels as values: detected once, passed to every kernel.

use std::fmt;

/// The SIMD instruction-set levels the kernels are compiled for.
///
/// Every level runs the same generic kernel body; only the vector width and
/// the target features differ. Which levels this CPU can run is a run-time
/// question, answered by [`Isa::new`] and [`Isa::available`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    /// Portable scalar code, one lane; always available.
    Scalar,
    /// x86-64 AVX2 + FMA (pulp's `V3`), 8 lanes of f32.
    Avx2,
    /// x86-64 AVX-512 F/BW/CD/DQ/VL (pulp's `V4`), 16 lanes of f32. Needs the
    /// `avx512` cargo feature (on by default).
    Avx512,
    /// aarch64 NEON, 4 lanes of f32.
    Neon,
}

impl Level {
    /// Every level, in the order tests report them.
    pub const ALL: [Level; 4] = [Level::Scalar, Level::Avx2, Level::Avx512, Level::Neon];

    /// The short lower-case name used in logs and in `LEMUR_ISA` /
    /// `LEMUR_REQUIRE_ISA`: `scalar`, `avx2`, `avx512`, `neon`.
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }

    /// Parses a name produced by [`Level::name`].
    pub fn from_name(name: &str) -> Option<Level> {
        Level::ALL
            .into_iter()
            .find(|level| level.name().eq_ignore_ascii_case(name.trim()))
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Proof that this CPU supports a [`Level`]: only constructible when it does.
///
/// Kernels take an `Isa` rather than a `Level` so that asking for AVX-512 on
/// a CPU without it is impossible, not undefined behaviour.
#[derive(Debug, Clone, Copy)]
pub struct Isa {
    arch: pulp::Arch,
    level: Level,
}

impl Isa {
    /// The best level this CPU supports.
    pub fn detect() -> Isa {
        Isa::available()
            .into_iter()
            .next_back()
            .unwrap_or_else(Isa::scalar)
    }

    /// The scalar level, available everywhere.
    pub fn scalar() -> Isa {
        Isa {
            arch: pulp::Arch::Scalar,
            level: Level::Scalar,
        }
    }

    /// `level` if this CPU (and this build's features) support it.
    pub fn new(level: Level) -> Option<Isa> {
        let arch = match level {
            Level::Scalar => Some(pulp::Arch::Scalar),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => pulp::x86::V3::try_new().map(pulp::Arch::V3),
            #[cfg(all(target_arch = "x86_64", feature = "avx512"))]
            Level::Avx512 => pulp::x86::V4::try_new().map(pulp::Arch::V4),
            #[cfg(target_arch = "aarch64")]
            Level::Neon => pulp::aarch64::Neon::try_new().map(pulp::Arch::Neon),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        arch.map(|arch| Isa { arch, level })
    }

    /// Every level this CPU supports, from the narrowest (scalar) up.
    pub fn available() -> Vec<Isa> {
        Level::ALL.into_iter().filter_map(Isa::new).collect()
    }

    /// Which level this is.
    pub fn level(self) -> Level {
        self.level
    }

    /// Runs a pulp kernel at this level, through pulp's `#[target_feature]`
    /// wrapper (never `with_simd` directly, which would skip it).
    #[inline(always)]
    pub(crate) fn dispatch<Op: pulp::WithSimd>(self, op: Op) -> Op::Output {
        self.arch.dispatch(op)
    }
}

impl Default for Isa {
    fn default() -> Self {
        Isa::detect()
    }
}
