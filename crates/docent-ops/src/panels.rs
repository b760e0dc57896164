//! How the packed-weight products ([`crate::bf16`], [`crate::int8`]) share
//! out their work: an output of `rows × out` values whose columns come in
//! panels, split across rayon's threads by rows when there are many, and by
//! panels when there are few (a query, a short prompt piece). The output is
//! not zeroed first (zeroing and the page faults of fresh memory were 8% of
//! bulk embedding): every value is written once, by the caller's tiles, and
//! only then is the length set. The row-wise ops ([`crate::par_fill`])
//! take their output the same way, each piece zeroed by its own thread.

use rayon::prelude::*;
use std::mem::MaybeUninit;
use std::ops::Range;

/// Bytes shared with other owners, such as a mapped cache file.
pub type SharedBytes = std::sync::Arc<dyn std::ops::Deref<Target = [u8]> + Send + Sync>;

/// Maps `file` read-only and faults its pages in at once: its bytes are
/// then the page cache's, shared between processes, and a load needs no
/// fresh memory for them (which these virtual machines back slowly after a
/// minute of idle). The one place docent maps files: the weights cache's
/// files and the models' safetensors.
///
/// The caller must only map files that are replaced whole, never written
/// in place while mapped: docent writes the weights cache and pulled models
/// to a new file and renames it over the old one.
#[allow(unsafe_code)]
pub fn map_file(file: &std::fs::File) -> std::io::Result<SharedBytes> {
    // SAFETY: the mapping is read-only, and (by this function's contract)
    // the file is only ever replaced by a rename, which leaves an existing
    // mapping on the old, unchanged inode. Only another program truncating
    // or rewriting the file in place while docent runs could change or
    // fault a read of the mapping; such a program is outside that contract.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(file)? };
    Ok(std::sync::Arc::new(map))
}

/// A packed matrix's words: owned, or a stretch of shared bytes.
pub(crate) type Words = Stored<u32>;

/// Values owned, or a stretch of shared bytes (a mapped cache file).
pub(crate) enum Stored<T> {
    Owned(Vec<T>),
    Shared {
        bytes: SharedBytes,
        offset: usize,
        len: usize,
    },
}

impl<T: bytemuck::Pod> Stored<T> {
    /// The `len` values at `offset` in `bytes`; `None` if they do not fit
    /// there or are not aligned for `T`.
    pub(crate) fn shared(bytes: SharedBytes, offset: usize, len: usize) -> Option<Stored<T>> {
        let size = len.checked_mul(std::mem::size_of::<T>())?;
        let stretch = bytes.get(offset..offset.checked_add(size)?)?;
        bytemuck::try_cast_slice::<u8, T>(stretch).ok()?;
        Some(Stored::Shared { bytes, offset, len })
    }

    pub(crate) fn get(&self) -> &[T] {
        match self {
            Stored::Owned(v) => v,
            // Alignment and length were checked when the stretch was taken.
            Stored::Shared { bytes, offset, len } => {
                bytemuck::cast_slice(&bytes[*offset..*offset + *len * std::mem::size_of::<T>()])
            }
        }
    }

    /// The values to write, where they are owned (shared bytes are
    /// read-only).
    pub(crate) fn owned_mut(&mut self) -> Option<&mut [T]> {
        match self {
            Stored::Owned(v) => Some(v),
            Stored::Shared { .. } => None,
        }
    }
}

impl<T: bytemuck::Pod> std::ops::Deref for Stored<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        self.get()
    }
}

/// The shape of one product.
pub(crate) struct Shape {
    pub rows: usize,
    pub input: usize,
    pub out: usize,
    /// Output columns per panel.
    pub panel: usize,
    /// Rows of one tile: each thread's share of rows is a multiple of it.
    pub tile_rows: usize,
}

/// The `rows × out` product of `x` (`rows × input`), row-major.
/// `compute(x, rows, panels, dst, stride)` must write every column of the
/// panels `panels` in every one of the rows `rows` (whose activations are
/// `x`) into `dst`, whose rows are `stride` values apart and whose first
/// column is the first panel's first column.
pub(crate) fn product<F>(x: &[f32], shape: Shape, compute: F) -> Vec<f32>
where
    F: Fn(&[f32], Range<usize>, Range<usize>, &mut [MaybeUninit<f32>], usize) + Sync,
{
    let Shape {
        rows,
        input,
        out,
        panel,
        tile_rows,
    } = shape;
    let len = rows * out;
    let mut result: Vec<f32> = Vec::with_capacity(len);
    if len == 0 {
        return result;
    }
    let threads = rayon::current_num_threads().max(1);
    let panels = out.div_ceil(panel);
    let dst = &mut result.spare_capacity_mut()[..len];
    if rows >= 2 * tile_rows * threads || panels < 2 * threads {
        // Many rows: each thread takes whole rows.
        let per = rows.div_ceil(threads).next_multiple_of(tile_rows);
        dst.par_chunks_mut(per * out)
            .zip(x.par_chunks(per * input))
            .enumerate()
            .for_each(|(i, (dst, src))| {
                let n = dst.len() / out;
                compute(src, i * per..i * per + n, 0..panels, dst, out)
            });
    } else {
        // Few rows: split the panels, each thread into its own buffer, then
        // copy the columns out.
        let per = panels.div_ceil(threads);
        let pieces: Vec<(usize, Vec<f32>)> = (0..panels)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|first| {
                let last = (first + per).min(panels);
                let width = (last * panel).min(out) - first * panel;
                let mut buf = Vec::with_capacity(rows * width);
                let spare = &mut buf.spare_capacity_mut()[..rows * width];
                compute(x, 0..rows, first..last, spare, width);
                uninit::written(&mut buf, rows * width);
                (first * panel, buf)
            })
            .collect();
        for (column, buf) in pieces {
            let width = buf.len() / rows;
            for (dst, src) in dst.chunks_exact_mut(out).zip(buf.chunks_exact(width)) {
                for (d, s) in dst[column..column + width].iter_mut().zip(src) {
                    d.write(*s);
                }
            }
        }
    }
    uninit::written(&mut result, len);
    result
}

/// A vector of `len` values in pieces of `piece` values (the last may be
/// shorter), each zeroed and then handed to `fill(index, values)` on
/// rayon's threads.
pub(crate) fn fill_pieces(
    len: usize,
    piece: usize,
    fill: impl Fn(usize, &mut [f32]) + Sync,
) -> Vec<f32> {
    let mut result: Vec<f32> = Vec::with_capacity(len);
    result.spare_capacity_mut()[..len]
        .par_chunks_mut(piece.max(1))
        .enumerate()
        .for_each(|(i, dst)| fill(i, uninit::zeroed(dst)));
    uninit::written(&mut result, len);
    result
}

#[allow(unsafe_code)]
mod uninit {
    use std::mem::MaybeUninit;

    /// Writes 0 to every value of `v`, and returns them as initialised.
    pub fn zeroed(v: &mut [MaybeUninit<f32>]) -> &mut [f32] {
        for x in v.iter_mut() {
            x.write(0.0);
        }
        // SAFETY: every value of `v` was just written, and
        // `MaybeUninit<f32>` has the layout of `f32`.
        unsafe { &mut *(v as *mut [MaybeUninit<f32>] as *mut [f32]) }
    }

    /// Sets the length of `v` to `len` after its spare capacity was filled.
    /// [`super::product`] calls it only on buffers its `compute` wrote in
    /// full (every row of the range and every column of its panels), or on
    /// the copy of such buffers; [`super::fill_pieces`] after every piece
    /// of the first `len` values was zeroed.
    pub fn written(v: &mut Vec<f32>, len: usize) {
        assert!(len <= v.capacity());
        // SAFETY: the first `len` values were initialised, as stated above,
        // and `len` is within the capacity.
        unsafe { v.set_len(len) }
    }
}
