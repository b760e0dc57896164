//! Intel AMX (Advanced Matrix Extensions, Xeon since Sapphire Rapids):
//! eight tile registers of up to 16 rows × 64 bytes, and instructions that
//! multiply whole tiles: `tdpbusd` (u8 × s8 → i32, 16 × 64 by 64 × 16
//! bytes) and `tdpbf16ps` (bf16 pairs → f32, 16 × 32 by 32 × 16 values).
//! One such instruction does 16,384 (int8) or 8,192 (bf16) multiply-adds;
//! an AVX-512 `vpdpbusd` does 64.
//!
//! The products here take their weights in the packed-panel layout of
//! [`crate::int8`] and [`crate::bf16`] (for each group of four bytes or
//! pair of bf16, the 32 columns of a panel side by side): a tile of
//! weights is 16 groups × 16 columns, read with a stride of one group.
//! The activations are rows of whole tile depths (64 bytes), and a product
//! covers 32 rows (two tiles) by the panel's 32 columns (two tiles): four
//! tiles of sums, two of activations and two of weights.
//!
//! Linux lets a process use the tiles only after it asks
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`); [`support`]
//! asks once. `DOCENT_AMX=off` makes docent ignore AMX (to compare with
//! the AVX-512 kernels on one machine).
//!
//! All `unsafe` code is in the `kernel` module: the `arch_prctl` call and
//! the tile instructions, written as inline
//! assembly because Rust's AMX intrinsics are not stable.

use std::sync::OnceLock;

/// Rows of one product: two tiles of 16.
pub const ROWS: usize = 32;

/// Columns of one product: a panel of [`crate::int8::PANEL`].
pub const COLUMNS: usize = 32;

/// Bytes of one tile row: the depth of a product step (64 int8 inputs, or
/// 32 bf16 inputs).
pub const DEPTH_BYTES: usize = 64;

/// What this CPU and kernel let docent run on tiles.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Support {
    /// AMX-TILE and AMX-INT8, with the tiles granted.
    pub int8: bool,
    /// AMX-TILE and AMX-BF16, with the tiles granted.
    pub bf16: bool,
}

/// What AMX this process may use, found once: the CPU's AMX-TILE, AMX-INT8
/// and AMX-BF16 bits, the kernel's permission, and `DOCENT_AMX`.
pub fn support() -> Support {
    static SUPPORT: OnceLock<Support> = OnceLock::new();
    *SUPPORT.get_or_init(|| {
        if crate::switched_off("DOCENT_AMX") {
            return Support::default();
        }
        let (tile, int8, bf16) = kernel::cpu_bits();
        if !tile || !(int8 || bf16) || !kernel::request_tiles() {
            return Support::default();
        }
        Support { int8, bf16 }
    })
}

pub(crate) use kernel::Tiles;

#[allow(unsafe_code)]
mod kernel {
    use super::{COLUMNS, DEPTH_BYTES, ROWS};

    /// The CPU's AMX-TILE, AMX-INT8 and AMX-BF16 bits (CPUID leaf 7,
    /// sub-leaf 0, EDX bits 24, 25 and 22).
    pub fn cpu_bits() -> (bool, bool, bool) {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            // Leaf 7 is asked for only when the highest leaf reaches it.
            if __cpuid(0).eax < 7 {
                return (false, false, false);
            }
            let edx = __cpuid_count(7, 0).edx;
            let bit = |b: u32| edx & (1 << b) != 0;
            (bit(24), bit(25), bit(22))
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            (false, false, false)
        }
    }

    /// Asks Linux for the tile registers; whether it granted them. The
    /// permission covers every thread of the process.
    pub fn request_tiles() -> bool {
        #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
        {
            const SYS_ARCH_PRCTL: i64 = 158;
            const ARCH_REQ_XCOMP_PERM: u64 = 0x1023;
            const XFEATURE_XTILEDATA: u64 = 18;
            let status: i64;
            // SAFETY: `arch_prctl(ARCH_REQ_XCOMP_PERM, 18)` only changes
            // which extended states this process may use; it reads and
            // writes no memory of ours. `syscall` clobbers rcx and r11,
            // declared here.
            unsafe {
                std::arch::asm!(
                    "syscall",
                    inlateout("rax") SYS_ARCH_PRCTL => status,
                    in("rdi") ARCH_REQ_XCOMP_PERM,
                    in("rsi") XFEATURE_XTILEDATA,
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            status == 0
        }
        #[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
        {
            false
        }
    }

    /// The tile registers of this thread, configured as eight tiles of 16
    /// rows × 64 bytes until dropped: sums in tiles 0–3 (16 × 16 i32 or
    /// f32 each), activations in 4–5, weights in 6–7 (16 groups × 16
    /// columns). Not `Send`: the configuration is the thread's. No code
    /// but these products should run while one is alive (a nested one's
    /// drop would release the tiles under it).
    pub struct Tiles {
        _thread: std::marker::PhantomData<*const ()>,
        int8: bool,
        bf16: bool,
    }

    /// The 64-byte operand of `ldtilecfg` (palette 1).
    #[repr(C, align(64))]
    struct TileConfig {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    /// Which tile product a step runs.
    #[derive(Clone, Copy, PartialEq, Eq)]
    enum Op {
        Int8,
        Bf16,
    }

    impl Tiles {
        /// Configures the tiles, or `None` where [`super::support`] has
        /// neither product.
        pub fn new() -> Option<Tiles> {
            let support = super::support();
            if !support.int8 && !support.bf16 {
                return None;
            }
            let mut config = TileConfig {
                palette: 1,
                start_row: 0,
                reserved: [0; 14],
                colsb: [0; 16],
                rows: [0; 16],
            };
            for t in 0..8 {
                config.colsb[t] = DEPTH_BYTES as u16;
                config.rows[t] = 16;
            }
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `support` found AMX-TILE and the permission to use
            // the tiles; `ldtilecfg` reads the 64 bytes of `config`, a
            // valid palette-1 configuration.
            unsafe {
                std::arch::asm!(
                    "ldtilecfg [{}]",
                    in(reg) &config as *const TileConfig,
                    options(nostack, readonly),
                );
            }
            Some(Tiles {
                _thread: std::marker::PhantomData,
                int8: support.int8,
                bf16: support.bf16,
            })
        }

        /// The i32 sums of [`ROWS`] rows of u8 activations `a` (rows
        /// `a_stride` bytes apart; only the first 16 rows when `rows` ≤
        /// 16) times a panel of s8 weight words `b` (groups of four inputs,
        /// [`COLUMNS`] words each), over `depths` steps of 64 bytes, into
        /// `acc` (row-major, [`COLUMNS`] per row). Panics without AMX-INT8
        /// or if a read would leave `a` or `b`.
        pub fn int8(
            &self,
            a: &[u8],
            a_stride: usize,
            b: &[u32],
            depths: usize,
            rows: usize,
            acc: &mut [i32],
        ) {
            assert!(self.int8, "this CPU lacks AMX-INT8");
            let a = (a.as_ptr(), a.len(), a_stride);
            self.product(Op::Int8, a, b, depths, None, rows);
            assert_eq!(acc.len(), ROWS * COLUMNS);
            // SAFETY: `store` writes ROWS × COLUMNS values of 4 bytes.
            unsafe { self.store(acc.as_mut_ptr() as *mut u8) }
        }

        /// The f32 sums of [`ROWS`] rows of bf16 pairs `a` (rows `a_stride`
        /// words apart) times a panel of bf16-pair words `b`, as
        /// [`Tiles::int8`] (a step is 16 pairs), then, if given, one more
        /// step with the 16 groups of weights `tail`. Panics without
        /// AMX-BF16.
        #[allow(clippy::too_many_arguments)]
        pub fn bf16(
            &self,
            a: &[u32],
            a_stride: usize,
            b: &[u32],
            depths: usize,
            tail: Option<&[u32]>,
            rows: usize,
            acc: &mut [f32],
        ) {
            assert!(self.bf16, "this CPU lacks AMX-BF16");
            let a = (a.as_ptr() as *const u8, a.len() * 4, a_stride * 4);
            self.product(Op::Bf16, a, b, depths, tail, rows);
            assert_eq!(acc.len(), ROWS * COLUMNS);
            // SAFETY: `store` writes ROWS × COLUMNS values of 4 bytes.
            unsafe { self.store(acc.as_mut_ptr() as *mut u8) }
        }

        /// The sums into tiles 0–3: `depths` steps of weights from `b`,
        /// then one from `tail` if given. `a` is a pointer to `a.1` bytes,
        /// rows `a.2` bytes apart.
        fn product(
            &self,
            op: Op,
            (a, a_len, a_stride): (*const u8, usize, usize),
            b: &[u32],
            depths: usize,
            tail: Option<&[u32]>,
            rows: usize,
        ) {
            let steps = depths + tail.is_some() as usize;
            let reach = steps * DEPTH_BYTES;
            let tiles = if rows > 16 { 2 } else { 1 };
            assert!(steps >= 1 && (1..=ROWS).contains(&rows));
            assert!(a_stride >= reach && a_len >= (16 * tiles - 1) * a_stride + reach);
            assert!(b.len() >= depths * 16 * COLUMNS);
            assert!(tail.is_none_or(|t| t.len() >= 16 * COLUMNS));
            let group = COLUMNS * 4;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the tiles are configured on this thread (`self`, not
            // `Send`, lives from `ldtilecfg` to `tilerelease`) as the
            // instructions use them, and `support` found the product's
            // instructions (`self.int8`, `self.bf16`, checked by the
            // callers). Each load of activations reads 16 rows of 64 bytes
            // at `d · 64` of rows `a_stride` apart (rows 16 to 31 only with
            // two tiles), inside `a` by the asserts; each load of weights
            // reads 16 rows of 64 bytes, `group` bytes apart, from group
            // `16d` at byte 0 or 64 of the group, inside `b` (or, for the
            // step `depths`, from group 0 of `tail`).
            unsafe {
                use std::arch::asm;
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem)
                );
                for d in 0..steps {
                    let a0 = a.add(d * DEPTH_BYTES);
                    let b0 = match tail {
                        Some(tail) if d == depths => tail.as_ptr() as *const u8,
                        _ => (b.as_ptr() as *const u8).add(d * 16 * group),
                    };
                    macro_rules! step {
                        ($op:literal) => {
                            if tiles == 2 {
                                asm!(
                                    "tileloadd tmm4, [{a0} + {sa}*1]",
                                    "tileloadd tmm5, [{a1} + {sa}*1]",
                                    "tileloadd tmm6, [{b0} + {sb}*1]",
                                    "tileloadd tmm7, [{b1} + {sb}*1]",
                                    concat!($op, " tmm0, tmm4, tmm6"),
                                    concat!($op, " tmm1, tmm4, tmm7"),
                                    concat!($op, " tmm2, tmm5, tmm6"),
                                    concat!($op, " tmm3, tmm5, tmm7"),
                                    a0 = in(reg) a0,
                                    a1 = in(reg) a0.add(16 * a_stride),
                                    sa = in(reg) a_stride,
                                    b0 = in(reg) b0,
                                    b1 = in(reg) b0.add(64),
                                    sb = in(reg) group,
                                    options(nostack, readonly),
                                );
                            } else {
                                asm!(
                                    "tileloadd tmm4, [{a0} + {sa}*1]",
                                    "tileloadd tmm6, [{b0} + {sb}*1]",
                                    "tileloadd tmm7, [{b1} + {sb}*1]",
                                    concat!($op, " tmm0, tmm4, tmm6"),
                                    concat!($op, " tmm1, tmm4, tmm7"),
                                    a0 = in(reg) a0,
                                    sa = in(reg) a_stride,
                                    b0 = in(reg) b0,
                                    b1 = in(reg) b0.add(64),
                                    sb = in(reg) group,
                                    options(nostack, readonly),
                                );
                            }
                        };
                    }
                    match op {
                        Op::Int8 => step!("tdpbusd"),
                        Op::Bf16 => step!("tdpbf16ps"),
                    }
                }
            }
        }

        /// Stores tiles 0–3 as [`ROWS`] × [`COLUMNS`] values of 4 bytes,
        /// row-major, at `c`.
        ///
        /// # Safety
        /// `c` must be valid for writing 4,096 bytes.
        unsafe fn store(&self, c: *mut u8) {
            let row = COLUMNS * 4;
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the tiles are configured (`self`); the stores write 16
            // rows of 64 bytes, `row` = 128 apart, at 0, 64, 2,048 and 2,112
            // bytes from `c`: within its 4,096 (the caller's promise).
            unsafe {
                std::arch::asm!(
                    "tilestored [{c0} + {s}*1], tmm0",
                    "tilestored [{c1} + {s}*1], tmm1",
                    "tilestored [{c2} + {s}*1], tmm2",
                    "tilestored [{c3} + {s}*1], tmm3",
                    c0 = in(reg) c,
                    c1 = in(reg) c.add(64),
                    c2 = in(reg) c.add(16 * row),
                    c3 = in(reg) c.add(16 * row + 64),
                    s = in(reg) row,
                    options(nostack),
                );
            }
        }
    }

    impl Drop for Tiles {
        fn drop(&mut self) {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: returns this thread's tiles to their initial state;
            // no tile instruction runs after it without a new `Tiles` (and
            // its `ldtilecfg`).
            unsafe {
                std::arch::asm!("tilerelease", options(nostack, nomem));
            }
        }
    }
}
