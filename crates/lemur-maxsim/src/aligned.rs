//! A growable buffer of plain values that starts on a cache line, and
//! whose large allocations ask the OS for 2 MiB pages.
//!
//! An AMX tile row is 64 bytes. When a row straddles two cache lines,
//! every `tileloadd` touches twice the lines, and the one-query bf16
//! product `f W^T` ran at 1.4x the time of the `vdpbf16ps` kernel over the
//! same `W` (a C probe of the same loop: 1.65 ms aligned, 2.21 ms with `W`
//! 16 bytes off). A `Vec<u32>` is only as aligned as the allocator makes
//! it (16 bytes for large blocks), so the bf16 and int8 storage the
//! kernels read lives here, in whole 64-byte lines.
//!
//! Pages matter for data streamed from memory. On the Zen 4 measured
//! (docs/PERFORMANCE.md, Zen 4), one thread read 17-26 GB/s from
//! 4 KiB pages and 27-32 GB/s from 2 MiB ones, and MaxSim of an 8-token
//! query over documents streamed from memory ran at 40-69% of the FMA
//! peak from the former and 64-77% from the latter: the hardware
//! prefetchers stop at every page boundary. So a buffer made with
//! [`Pages::Huge`] puts every allocation of at least [`HUGE_PAGE_BYTES`]
//! in an anonymous memory map which, on Linux, is advised `MADV_HUGEPAGE`
//! before anything is written to it: the kernel then faults it in as huge
//! pages, where collapsing pages already written costs about 2 ms per MB.
//! It is opt-in. The query pipeline, which reads scattered documents and
//! `W` rows, did not get faster from it; and in the VM measured, the first
//! huge pages a process touched still took about 2 ms per MB to fault in
//! (the hypervisor backing fresh memory, not compaction), 17 ms per 100 MB
//! after that. Where the advice is unavailable (another OS, huge pages
//! disabled) the map is plain pages, and where no map can be made the
//! buffer falls back to the heap: the pages are a hint, never a failure.

use core::fmt;
use core::marker::PhantomData;
use core::ops::{Deref, DerefMut};

use bytemuck::{Pod, Zeroable};
use memmap2::MmapMut;

use crate::prefetch::LINE_BYTES;

/// With [`Pages::Huge`], allocations of at least this many bytes (in whole
/// cache lines) are memory maps advised for huge pages: one 2 MiB page,
/// the x86-64 and AArch64 (4 KiB granule) size.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// One cache line.
#[derive(Clone, Copy, Pod, Zeroable)]
#[repr(C, align(64))]
struct Line([u8; LINE_BYTES]);

/// Which pages a buffer asks the OS for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Pages {
    /// The allocator's usual pages (4 KiB on x86-64).
    #[default]
    Small,
    /// 2 MiB pages for every allocation of at least [`HUGE_PAGE_BYTES`],
    /// where the OS grants them: for large buffers scanned from memory.
    Huge,
}

/// Where the values live: heap lines, or for [`Pages::Huge`] from
/// [`HUGE_PAGE_BYTES`] on a map (page aligned, so also line aligned). A
/// map's capacity is a whole number of huge pages, which Linux 6.7 and
/// later align to one; older kernels may start it mid-page, and then its
/// first and last 2 MiB stay in small pages.
enum Storage {
    Lines(Vec<Line>),
    Map(MmapMut),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Lines(lines) => bytemuck::cast_slice(lines),
            Storage::Map(map) => map,
        }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Storage::Lines(lines) => bytemuck::cast_slice_mut(lines),
            Storage::Map(map) => map,
        }
    }

    /// Zeroed storage of at least `bytes` bytes in `pages`.
    fn zeroed(bytes: usize, pages: Pages) -> Storage {
        let bytes = bytes.next_multiple_of(LINE_BYTES);
        if pages == Pages::Huge
            && bytes >= HUGE_PAGE_BYTES
            && let Some(map) = huge_page_map(bytes.next_multiple_of(HUGE_PAGE_BYTES))
        {
            return Storage::Map(map);
        }
        Storage::Lines(vec![Line::zeroed(); bytes / LINE_BYTES])
    }
}

/// A zeroed anonymous map of `bytes` bytes, advised for huge pages before
/// it is touched, or `None` where the OS makes none.
fn huge_page_map(bytes: usize) -> Option<MmapMut> {
    let map = MmapMut::map_anon(bytes).ok()?;
    // The advice is a hint: where the kernel refuses it (huge pages set to
    // `never`, an old kernel), the map works in small pages.
    #[cfg(target_os = "linux")]
    let _ = map.advise(memmap2::Advice::HugePage);
    Some(map)
}

/// `len` values of `T` (plain data, alignment at most 64 bytes) starting
/// on a 64-byte cache line, in the [`Pages`] chosen at construction (see
/// the module docs).
///
/// Use it with [`Pages::Huge`] for large token matrices that one or a few
/// short queries at a time scan from memory (a batch of queries reuses
/// each document it reads, and is bound by the FMAs instead):
/// [`MultiVectors`](crate::MultiVectors) accepts it as storage and appends
/// to it like a `Vec`.
///
/// ```
/// use lemur_maxsim::{AlignedVec, Pages};
///
/// let mut tokens = AlignedVec::from_slice_in(&[1.0f32, 2.0], Pages::Huge);
/// tokens.extend_from_slice(&[3.0]);
/// assert_eq!(&tokens[..], &[1.0, 2.0, 3.0]);
/// assert_eq!(tokens.as_ptr() as usize % 64, 0);
/// // Three values fit in one cache line on the heap; a map starts at 2 MiB.
/// assert!(!tokens.is_mapped());
/// ```
pub struct AlignedVec<T> {
    storage: Storage,
    len: usize,
    pages: Pages,
    values: PhantomData<T>,
}

/// The bf16 pairs and int8 quads the reduced-precision kernels read.
pub(crate) type AlignedU32 = AlignedVec<u32>;

impl<T: Pod> AlignedVec<T> {
    /// `len` zeros in small pages.
    pub fn zeroed(len: usize) -> Self {
        AlignedVec::zeroed_in(len, Pages::Small)
    }

    /// `len` zeros in `pages`.
    pub fn zeroed_in(len: usize, pages: Pages) -> Self {
        // Values are viewed in place in 64-byte-aligned storage.
        const { assert!(size_of::<T>() > 0 && align_of::<T>() <= LINE_BYTES) };
        let mut buffer = AlignedVec {
            storage: Storage::Lines(Vec::new()),
            len: 0,
            pages,
            values: PhantomData,
        };
        buffer.reset_zeroed(len);
        buffer
    }

    /// A copy of `values` in small pages.
    pub fn from_slice(values: &[T]) -> Self {
        AlignedVec::from_slice_in(values, Pages::Small)
    }

    /// A copy of `values` in `pages`.
    pub fn from_slice_in(values: &[T], pages: Pages) -> Self {
        let mut buffer = AlignedVec::zeroed_in(0, pages);
        buffer.extend_from_slice(values);
        buffer
    }

    /// The pages this buffer asks for.
    pub fn pages(&self) -> Pages {
        self.pages
    }

    /// Replaces the contents by `len` zeros, keeping the allocation when it
    /// is large enough (a packed query is repacked this way per query).
    pub fn reset_zeroed(&mut self, len: usize) {
        let bytes = Self::bytes_for(len);
        if bytes <= self.storage.bytes().len() {
            self.storage.bytes_mut()[..bytes].fill(0);
        } else {
            self.storage = Storage::zeroed(bytes, self.pages);
        }
        self.len = len;
    }

    /// Appends `values` after the current contents: heap storage grows as
    /// a `Vec` does (in place where the allocator can), a map by at least
    /// half into a new one.
    pub fn extend_from_slice(&mut self, values: &[T]) {
        let old = self.len;
        let new_len = old + values.len();
        let needed = Self::bytes_for(new_len);
        let capacity = self.storage.bytes().len();
        if needed > capacity {
            let target = needed.max(capacity + capacity / 2);
            let to_map = self.pages == Pages::Huge && target >= HUGE_PAGE_BYTES;
            match &mut self.storage {
                Storage::Lines(lines) if !to_map => {
                    lines.resize(needed.div_ceil(LINE_BYTES), Line::zeroed());
                }
                _ => {
                    let mut grown = Storage::zeroed(target, self.pages);
                    let used = Self::bytes_for(old);
                    grown.bytes_mut()[..used].copy_from_slice(&self.storage.bytes()[..used]);
                    self.storage = grown;
                }
            }
        }
        self.len = new_len;
        self[old..].copy_from_slice(values);
    }

    /// Whether the values live in a memory map (advised for huge pages on
    /// Linux; whether the kernel granted them shows in `/proc/self/smaps`):
    /// for [`Pages::Huge`] once the allocation reached [`HUGE_PAGE_BYTES`],
    /// where the OS makes maps.
    pub fn is_mapped(&self) -> bool {
        matches!(self.storage, Storage::Map(_))
    }

    /// Bytes of `len` values.
    fn bytes_for(len: usize) -> usize {
        len * size_of::<T>()
    }
}

impl<T: Pod> Default for AlignedVec<T> {
    fn default() -> Self {
        AlignedVec::zeroed(0)
    }
}

impl<T: Pod> Clone for AlignedVec<T> {
    fn clone(&self) -> Self {
        AlignedVec::from_slice_in(self, self.pages)
    }
}

impl<T: Pod> Deref for AlignedVec<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        bytemuck::cast_slice(&self.storage.bytes()[..Self::bytes_for(self.len)])
    }
}

impl<T: Pod> DerefMut for AlignedVec<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        let bytes = Self::bytes_for(self.len);
        bytemuck::cast_slice_mut(&mut self.storage.bytes_mut()[..bytes])
    }
}

impl<T: Pod> AsRef<[T]> for AlignedVec<T> {
    fn as_ref(&self) -> &[T] {
        self
    }
}

impl<T: Pod + PartialEq> PartialEq for AlignedVec<T> {
    fn eq(&self, other: &Self) -> bool {
        **self == **other
    }
}

impl<T: Pod + fmt::Debug> fmt::Debug for AlignedVec<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn starts_on_a_cache_line_and_keeps_its_values() {
        let mut buffer = AlignedU32::zeroed(5);
        buffer[4] = 7;
        buffer.extend_from_slice(&(0..40).collect::<Vec<u32>>());
        assert_eq!(buffer.as_ptr() as usize % 64, 0);
        assert_eq!(buffer.len(), 45);
        assert_eq!(&buffer[..6], &[0, 0, 0, 0, 7, 0]);
        assert_eq!(buffer[44], 39);
        let mut other = AlignedU32::zeroed(45);
        other.copy_from_slice(&buffer);
        assert_eq!(other, buffer);
        other[0] = 1;
        assert_ne!(other, buffer);
        // Values whose size does not divide a cache line are viewed too.
        let triples = AlignedVec::from_slice(&[[1.0f32, 2.0, 3.0]; 5]);
        assert_eq!(triples[4], [1.0, 2.0, 3.0]);
        assert_eq!(triples.len(), 5);
    }

    #[test]
    fn large_huge_page_buffers_are_maps_and_the_rest_are_not() {
        // One cache line short of a huge page.
        let small = AlignedVec::<f32>::zeroed_in((HUGE_PAGE_BYTES - LINE_BYTES) / 4, Pages::Huge);
        assert!(!small.is_mapped());
        assert!(!AlignedVec::<f32>::zeroed(HUGE_PAGE_BYTES).is_mapped());
        let mut large = AlignedVec::<f32>::zeroed_in(HUGE_PAGE_BYTES / 4, Pages::Huge);
        assert!(
            large.is_mapped(),
            "an anonymous map is available on this OS"
        );
        assert_eq!(large.as_ptr() as usize % 64, 0);
        assert!(large.iter().all(|&v| v == 0.0));
        let last = large.len() - 1;
        large[last] = 2.5;
        let copy = large.clone();
        assert!(copy.is_mapped());
        assert_eq!(copy.pages(), Pages::Huge);
        assert_eq!(copy[last], 2.5);
        // Growing past the threshold moves the values into a map.
        let mut grown = small.clone();
        grown.extend_from_slice(&[1.0, 2.0]);
        assert!(grown.is_mapped());
        assert_eq!(&grown[grown.len() - 3..], &[0.0, 1.0, 2.0]);
    }

    /// One step of the model test: a reset or an append.
    #[derive(Debug, Clone)]
    enum Step {
        Reset(usize),
        Extend(Vec<u32>),
    }

    fn step() -> impl Strategy<Value = Step> {
        // Sizes around the map threshold (in u32 values) as well as small
        // ones, so both storages and the moves between them are exercised.
        let threshold = HUGE_PAGE_BYTES / 4;
        prop_oneof![
            (0usize..100).prop_map(Step::Reset),
            (threshold - 50..threshold + 50).prop_map(Step::Reset),
            (0usize..300, any::<u32>())
                .prop_map(|(n, seed)| Step::Extend((0..n as u32).map(|i| i ^ seed).collect())),
            (threshold / 2..threshold, any::<u32>())
                .prop_map(|(n, seed)| Step::Extend(vec![seed; n])),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Any sequence of resets and appends leaves the same values as a
        /// `Vec` given the same steps, on a cache line, in whichever
        /// storage the pages and the size call for.
        #[test]
        fn behaves_like_a_vec(
            steps in proptest::collection::vec(step(), 1..6),
            huge in any::<bool>(),
        ) {
            let pages = if huge { Pages::Huge } else { Pages::Small };
            let mut buffer = AlignedU32::zeroed_in(0, pages);
            let mut model: Vec<u32> = Vec::new();
            for step in steps {
                match step {
                    Step::Reset(len) => {
                        buffer.reset_zeroed(len);
                        model = vec![0; len];
                    }
                    Step::Extend(values) => {
                        buffer.extend_from_slice(&values);
                        model.extend_from_slice(&values);
                    }
                }
                prop_assert!(buffer[..] == model[..]);
                prop_assert_eq!(buffer.as_ptr() as usize % 64, 0);
                let large = buffer.storage.bytes().len() >= HUGE_PAGE_BYTES;
                prop_assert_eq!(buffer.is_mapped(), huge && large);
            }
        }
    }
}
