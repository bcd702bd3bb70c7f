//! Which instruction set the CPU kernels use: detected once, or forced with `BIOMEDGPT_CPU_ISA`.
//!
//! This is the one place the kernels ask. Every kernel with vector code dispatches on
//! [`current`] (`isa::current() >= Isa::Avx2`, ...), never on `is_x86_feature_detected!`
//! itself, so forcing a lower level sends every op down that level's path: a test run with
//! `BIOMEDGPT_CPU_ISA=avx2` on an AVX-512 machine checks what an AVX2-only laptop computes.
//!
//! The levels are cumulative, each including the ones below it:
//!
//! | level | needs | what it turns on |
//! | --- | --- | --- |
//! | `scalar` | nothing | plain Rust loops; ops the kernels only vectorize go to Burn's own |
//! | `avx2` | AVX2, FMA, F16C | 8-lane decoding products, conversions, transposes |
//! | `avx512` | AVX-512F | 16-lane versions of those, vector exp/erf (attention, GELU, SiLU) |
//! | `avx512bf16` | AVX-512BW, AVX512_BF16 | bf16 dot-product kernels (prompts and decoding) |
//! | `amx` | AMX-TILE, AMX-BF16, the kernel's permission | bf16 prompt products on the tile unit |
//!
//! A forced level the CPU lacks is refused with an error naming the missing features
//! ([`from_env`]); the CLI reports it at start-up, the library panics with that message on first
//! use. Burn's own CPU kernels (its `gemm` crate matmul under autodiff, for example) choose their
//! instruction set themselves and are not affected by this switch.

use std::fmt;
use std::sync::OnceLock;

/// The environment variable that forces a level.
pub const ENV: &str = "BIOMEDGPT_CPU_ISA";

/// An instruction-set level of the CPU kernels, ordered: a level includes those below it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    Scalar,
    Avx2,
    Avx512,
    Avx512Bf16,
    Amx,
}

impl Isa {
    /// Every level, lowest first.
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Avx512Bf16, Isa::Amx];

    /// The name `BIOMEDGPT_CPU_ISA` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512bf16",
            Isa::Amx => "amx",
        }
    }

    /// The CPU features this level needs (beyond the lower levels').
    pub fn features(self) -> &'static str {
        match self {
            Isa::Scalar => "none",
            Isa::Avx2 => "avx2, fma, f16c",
            Isa::Avx512 => "avx512f",
            Isa::Avx512Bf16 => "avx512bw, avx512bf16",
            Isa::Amx => "amx-tile, amx-bf16 and the kernel's permission to use them",
        }
    }

    /// Whether this CPU (and OS) can run the level.
    pub fn supported(self) -> bool {
        self <= detected()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Isa {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Isa::ALL.into_iter().find(|isa| isa.name() == s.trim().to_ascii_lowercase()).ok_or_else(|| {
            let names: Vec<&str> = Isa::ALL.iter().map(|i| i.name()).collect();
            format!("{ENV}={s:?} is not a level: expected one of {}", names.join(", "))
        })
    }
}

/// The highest level this CPU supports (detected once).
pub fn detected() -> Isa {
    static DETECTED: OnceLock<Isa> = OnceLock::new();
    *DETECTED.get_or_init(detect)
}

fn detect() -> Isa {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if !(has!("avx2") && has!("fma") && has!("f16c")) {
            return Isa::Scalar;
        }
        if !has!("avx512f") {
            return Isa::Avx2;
        }
        if !(has!("avx512bw") && has!("avx512bf16")) {
            return Isa::Avx512;
        }
        if !amx_usable() {
            return Isa::Avx512Bf16;
        }
        Isa::Amx
    }
    #[cfg(not(target_arch = "x86_64"))]
    Isa::Scalar
}

/// Whether this CPU has AMX-TILE and AMX-BF16 and the kernel lets this process use them (asked once,
/// by [`detected`]; the AMX kernel is `matmul::amx`).
#[cfg(target_arch = "x86_64")]
fn amx_usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            // CPUID leaf 7: EDX bit 22 AMX-BF16, bit 24 AMX-TILE.
            let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
            if leaf7.edx >> 22 & 1 == 0 || leaf7.edx >> 24 & 1 == 0 {
                return false;
            }
            const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
            const XFEATURE_XTILEDATA: libc::c_long = 18;
            // SAFETY: a plain syscall; it fails (non-zero) where the kernel does not offer AMX.
            unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0 }
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        false
    })
}

/// The level named by `BIOMEDGPT_CPU_ISA`, `Ok(None)` when it is unset or empty, an error for
/// an unknown name or a level this CPU lacks.
pub fn from_env() -> Result<Option<Isa>, String> {
    let Some(value) = std::env::var_os(ENV) else { return Ok(None) };
    let value = value.to_string_lossy();
    if value.trim().is_empty() {
        return Ok(None);
    }
    let isa: Isa = value.parse()?;
    if !isa.supported() {
        return Err(format!(
            "{ENV}={isa} asks for CPU features this machine lacks ({}); it supports up to {}",
            isa.features(),
            detected()
        ));
    }
    Ok(Some(isa))
}

/// The level the kernels use: `BIOMEDGPT_CPU_ISA` if set, else [`detected`].
///
/// # Panics
/// On first use, if `BIOMEDGPT_CPU_ISA` names an unknown level or one the CPU lacks (the CLI
/// checks [`from_env`] first and reports the error without a panic).
pub fn current() -> Isa {
    static CURRENT: OnceLock<Isa> = OnceLock::new();
    *CURRENT.get_or_init(|| match from_env() {
        Ok(forced) => forced.unwrap_or_else(detected),
        Err(e) => panic!("{e}"),
    })
}

/// The levels this CPU supports, lowest first (what the kernels' tests run each path under).
pub fn supported() -> Vec<Isa> {
    Isa::ALL.into_iter().filter(|isa| isa.supported()).collect()
}

/// One line for logs and test output: the level in use and what this CPU supports.
pub fn describe() -> String {
    let untested: Vec<&str> = Isa::ALL.iter().filter(|i| !i.supported()).map(|i| i.name()).collect();
    let mut line = format!(
        "CPU kernels: {} (this CPU supports {})",
        current(),
        supported().iter().map(|i| i.name()).collect::<Vec<_>>().join(", ")
    );
    if !untested.is_empty() {
        line += &format!("; not available here: {}", untested.join(", "));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        for isa in Isa::ALL {
            assert_eq!(isa.name().parse::<Isa>().unwrap(), isa);
        }
        assert_eq!(" AVX2 ".parse::<Isa>().unwrap(), Isa::Avx2);
        let err = "sse9".parse::<Isa>().unwrap_err();
        assert!(err.contains("scalar, avx2, avx512, avx512bf16, amx"), "{err}");
        assert!(Isa::Scalar < Isa::Avx2 && Isa::Avx512 < Isa::Amx);
        assert_eq!(supported().first(), Some(&Isa::Scalar));
        assert_eq!(supported().last(), Some(&detected()));
        assert!(current() <= detected());
    }
}
