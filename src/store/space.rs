//! Free space on the filesystem holding the store. sled does not recover from a failed write
//! in place (a full disk leaves it failing until it is reopened, and it cannot even be opened
//! while the disk is full), so the committer refuses new writes while less than
//! `store.min_free_mib` is free, before sled runs out (`ingest::committer`). Reads and
//! delivery carry on; writes resume by themselves once space is freed.

use std::path::Path;

/// Bytes available to Herald on the filesystem of `dir`; `None` when it cannot be asked.
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and `stat` points to
    // memory for one `statvfs`, which the call fills in whole when it returns 0.
    let rc = unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised `stat`.
    let stat = unsafe { stat.assume_init() };
    // fsblkcnt_t and c_ulong are u64 on the 64-bit Linux Herald runs on.
    #[allow(clippy::useless_conversion)]
    let (available, fragment) = (u64::from(stat.f_bavail), u64::from(stat.f_frsize));
    available.checked_mul(fragment)
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_real_directory_has_some_free_space_and_a_missing_one_none() {
        let dir = tempfile::tempdir().unwrap();
        assert!(super::free_bytes(dir.path()).is_some_and(|b| b > 0));
        assert!(super::free_bytes(&dir.path().join("missing")).is_none());
    }
}
