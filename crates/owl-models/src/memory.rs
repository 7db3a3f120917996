//! How much memory this process may still take, and allocations sized from file or request
//! data that fail with an error instead of aborting the process.
//!
//! The bound is the smaller of the kernel's estimate of memory available without swapping
//! (`MemAvailable` in /proc/meminfo) and what the process's cgroup still allows (v2:
//! `memory.max - memory.current`; v1: `memory.limit_in_bytes - memory.usage_in_bytes`).
//! `OWL_MEMORY_LIMIT` (bytes, or with a K/M/G suffix) lowers it further, for tests and for
//! users who want to keep room for other programs.

use std::path::Path;

use crate::error::ModelError;

/// Bytes this process may still allocate, `None` where nothing says (not Linux).
pub fn available_bytes() -> Option<u64> {
    let limits = [mem_available(), cgroup_headroom(), env_limit()];
    limits.into_iter().flatten().min()
}

/// Fails with [`ModelError::OutOfMemory`] when `needed` bytes for `what` exceed
/// [`available_bytes`].
pub fn check(what: &str, needed: u64) -> Result<(), ModelError> {
    match available_bytes() {
        Some(available) if needed > available => {
            Err(ModelError::OutOfMemory { what: what.to_string(), needed, available })
        }
        _ => Ok(()),
    }
}

/// A zero-filled vector of `n` elements, allocated lazily (fresh pages are zero) and
/// fallibly: a size that overflows or that the allocator refuses is an error naming `what`.
pub fn zeroed_vec<T: bytemuck::Zeroable + Copy>(what: &str, n: usize) -> Result<Vec<T>, ModelError> {
    let oom = |needed: u64| ModelError::OutOfMemory {
        what: what.to_string(),
        needed,
        available: available_bytes().unwrap_or(0),
    };
    let bytes = n.checked_mul(std::mem::size_of::<T>()).ok_or_else(|| oom(u64::MAX))?;
    if bytes == 0 {
        return Ok(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).map_err(|_| oom(bytes as u64))?;
    // SAFETY: the layout is non-zero-sized; on success the block holds `n` zeroed `T`s
    // (all-zero is a valid `T`: Zeroable), allocated by the global allocator with `T`'s
    // layout, which is what Vec::from_raw_parts needs to own and free it.
    unsafe {
        let ptr = std::alloc::alloc_zeroed(layout);
        if ptr.is_null() {
            return Err(oom(bytes as u64));
        }
        Ok(Vec::from_raw_parts(ptr.cast::<T>(), n, n))
    }
}

fn mem_available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

/// `MemAvailable:  123456 kB` → bytes.
fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kb.checked_mul(1024)
}

fn cgroup_headroom() -> Option<u64> {
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    // v2: the unified hierarchy's line is `0::/path`.
    if let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) {
        let dir = Path::new("/sys/fs/cgroup").join(path.trim_start_matches('/'));
        if let Some(h) = headroom(&dir.join("memory.max"), &dir.join("memory.current")) {
            return Some(h);
        }
    }
    headroom(
        Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes"),
        Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes"),
    )
}

/// `limit - usage` from two cgroup files; `None` for "max" or an absurd (unlimited) value.
fn headroom(limit: &Path, usage: &Path) -> Option<u64> {
    let limit: u64 = std::fs::read_to_string(limit).ok()?.trim().parse().ok()?;
    if limit >= 1 << 60 {
        return None;
    }
    let usage: u64 = std::fs::read_to_string(usage).ok()?.trim().parse().ok()?;
    Some(limit.saturating_sub(usage))
}

fn env_limit() -> Option<u64> {
    parse_size(&std::env::var("OWL_MEMORY_LIMIT").ok()?)
}

/// `123`, `64K`, `512M`, `2G` (binary units, case-insensitive, optional `B`/`iB`).
fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let upper = s.to_ascii_uppercase();
    let digits = upper.trim_end_matches("IB").trim_end_matches('B');
    let (number, scale) = match digits.chars().last()? {
        'K' => (&digits[..digits.len() - 1], 1u64 << 10),
        'M' => (&digits[..digits.len() - 1], 1 << 20),
        'G' => (&digits[..digits.len() - 1], 1 << 30),
        'T' => (&digits[..digits.len() - 1], 1 << 40),
        _ => (digits, 1),
    };
    number.trim().parse::<u64>().ok()?.checked_mul(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_and_sizes() {
        let text = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(parse_meminfo(text), Some(2000 * 1024));
        assert_eq!(parse_meminfo("MemTotal: 5 kB\n"), None);
        assert_eq!(parse_size("123"), Some(123));
        assert_eq!(parse_size("64K"), Some(64 << 10));
        assert_eq!(parse_size("2g"), Some(2 << 30));
        assert_eq!(parse_size("512MiB"), Some(512 << 20));
        assert_eq!(parse_size("x"), None);
        assert_eq!(parse_size("99999999999T"), None);
    }

    #[test]
    fn this_machine_reports_some_memory() {
        if cfg!(target_os = "linux") {
            let available = available_bytes().expect("Linux has /proc/meminfo");
            assert!(available > 1 << 20, "{available}");
        }
    }

    #[test]
    fn zeroed_vectors_fail_cleanly() {
        let v: Vec<u16> = zeroed_vec("test", 1000).expect("small");
        assert_eq!(v.len(), 1000);
        assert!(v.iter().all(|&x| x == 0));
        let e = zeroed_vec::<f32>("a huge cache", usize::MAX / 2).expect_err("overflows");
        assert!(e.to_string().contains("a huge cache"), "{e}");
        assert!(check("x", u64::MAX).is_err() || available_bytes().is_none());
        assert!(check("x", 1).is_ok());
    }
}
