//! The allocator: jemalloc on Linux, measured against glibc's malloc
//! (`docs/PERFORMANCE.md`, "The allocator"): the same memory per idle
//! session, but memory goes back to the system after traffic (glibc's
//! malloc keeps freed pages that lie between live allocations), and room
//! fan-out took less CPU.
//!
//! Its settings are compiled in (`JEMALLOC_SYS_WITH_MALLOC_CONF` in
//! `.cargo/config.toml`): pages freed are given back within a second
//! (`dirty_decay_ms:1000`, `muzzy_decay_ms:0`) by a background thread, so a
//! process that goes quiet after a burst shrinks too. Set at run time
//! instead, the decay did not apply to every page (3.29 instead of 2.62
//! KiB per session after a 64 KiB message). `_RJEM_MALLOC_CONF` overrides
//! them when a deployment wants otherwise.
//!
//! Built without the `jemalloc` feature, the binary uses the system's
//! malloc, whose calls heap profilers see (`scripts/heap-profile.sh`).

#[cfg(all(feature = "jemalloc", target_os = "linux"))]
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(test, feature = "jemalloc", target_os = "linux"))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use tikv_jemalloc_ctl::{opt, Access, AsName};

    /// The settings were compiled in (a build without `.cargo/config.toml`
    /// would keep pages for 10 s, and only while the process allocates).
    #[test]
    fn freed_pages_go_back_within_a_second_from_a_background_thread() {
        if std::env::var_os("_RJEM_MALLOC_CONF").is_some() {
            return;
        }
        let dirty: isize = b"opt.dirty_decay_ms\0".name().read().unwrap();
        let muzzy: isize = b"opt.muzzy_decay_ms\0".name().read().unwrap();
        assert_eq!((dirty, muzzy), (1000, 0));
        assert!(opt::background_thread::read().unwrap());
    }
}
