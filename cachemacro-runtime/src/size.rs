//! [`CacheSize`]: how many bytes a cached value occupies, for `Stats::l1_bytes`.

use std::mem::size_of;
use std::sync::Arc;

/// The bytes a value occupies in memory: its own size plus what it owns on the heap.
///
/// Implement it for a value type (or derive it by summing its fields) and every function
/// returning that type reports the bytes its in-process tier holds, keys included, in
/// `Stats::l1_bytes` (and the `cachemacro_l1_bytes` gauge). Functions whose value type does
/// not implement it report `None`: nothing is guessed. Implemented here for the standard
/// types that usually make up a value.
///
/// ```
/// use cachemacro_runtime::CacheSize;
///
/// struct User { id: u64, name: String, tags: Vec<String> }
///
/// impl CacheSize for User {
///     fn cache_size(&self) -> usize {
///         std::mem::size_of::<Self>() + self.name.heap_size() + self.tags.heap_size()
///     }
/// }
/// ```
pub trait CacheSize: Sized {
    /// Bytes of the value itself and of what it owns.
    fn cache_size(&self) -> usize;

    /// Bytes it owns beyond its own `size_of` (for summing the fields of a struct).
    fn heap_size(&self) -> usize {
        self.cache_size().saturating_sub(size_of::<Self>())
    }
}

macro_rules! flat {
    ($($t:ty),*) => {$(
        impl CacheSize for $t {
            #[inline]
            fn cache_size(&self) -> usize {
                size_of::<Self>()
            }
        }
    )*};
}

flat!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    bool,
    char,
    ()
);

impl CacheSize for String {
    fn cache_size(&self) -> usize {
        size_of::<Self>() + self.capacity()
    }
}

impl CacheSize for Box<str> {
    fn cache_size(&self) -> usize {
        size_of::<Self>() + self.len()
    }
}

impl CacheSize for Arc<str> {
    fn cache_size(&self) -> usize {
        // The pointer, the string and the two reference counts.
        size_of::<Self>() + self.len() + 2 * size_of::<usize>()
    }
}

impl<T: CacheSize> CacheSize for Vec<T> {
    fn cache_size(&self) -> usize {
        size_of::<Self>()
            + self.iter().map(CacheSize::cache_size).sum::<usize>()
            + (self.capacity() - self.len()) * size_of::<T>()
    }
}

impl<T: CacheSize> CacheSize for Option<T> {
    fn cache_size(&self) -> usize {
        match self {
            Some(v) => size_of::<Self>() + v.heap_size(),
            None => size_of::<Self>(),
        }
    }
}

impl<T: CacheSize> CacheSize for Box<T> {
    fn cache_size(&self) -> usize {
        size_of::<Self>() + (**self).cache_size()
    }
}

impl<T: CacheSize> CacheSize for Arc<T> {
    fn cache_size(&self) -> usize {
        size_of::<Self>() + (**self).cache_size() + 2 * size_of::<usize>()
    }
}

impl<A: CacheSize, B: CacheSize> CacheSize for (A, B) {
    fn cache_size(&self) -> usize {
        size_of::<Self>() + self.0.heap_size() + self.1.heap_size()
    }
}

impl<A: CacheSize, B: CacheSize, C: CacheSize> CacheSize for (A, B, C) {
    fn cache_size(&self) -> usize {
        size_of::<Self>() + self.0.heap_size() + self.1.heap_size() + self.2.heap_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_count_the_value_and_its_heap() {
        assert_eq!(7u64.cache_size(), 8);
        let s = String::from("hello");
        assert_eq!(s.cache_size(), size_of::<String>() + s.capacity());
        let v = vec![String::from("ab"), String::from("cde")];
        let each: usize = v.iter().map(CacheSize::cache_size).sum();
        assert_eq!(
            v.cache_size(),
            size_of::<Vec<String>>() + each + (v.capacity() - 2) * size_of::<String>()
        );
        assert_eq!(Some(3u32).cache_size(), size_of::<Option<u32>>());
        assert_eq!(
            (1u8, String::from("x")).heap_size(),
            String::from("x").capacity()
        );
    }
}
