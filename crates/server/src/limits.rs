//! Process limits: lift the open-files soft limit to the hard one, since every
//! connection is a file descriptor.

/// Raises `RLIMIT_NOFILE`'s soft limit to its hard limit; returns the new soft limit.
pub fn raise_nofile() -> std::io::Result<u64> {
    let (soft, hard) = rlimit::Resource::NOFILE.get()?;
    if soft < hard {
        rlimit::Resource::NOFILE.set(hard, hard)?;
    }
    Ok(hard.max(soft))
}
