//! The process's own CPU time, from `/proc/self/stat`: a validator exports it as a
//! metric and `stele bench` reads its own, so a run can state CPU per committed tx.

use std::time::Duration;

/// This process's CPU time (user + system, all threads), or `None` off Linux.
pub fn process_cpu() -> Option<Duration> {
    parse_proc_stat_cpu(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// utime + stime of a `/proc/PID/stat` line, at Linux's USER_HZ of 100.
pub fn parse_proc_stat_cpu(stat: &str) -> Option<Duration> {
    // The command name (field 2) may hold spaces and parentheses: count after the last ')'.
    let (_, rest) = stat.rsplit_once(')')?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(Duration::from_millis(
        utime.saturating_add(stime).saturating_mul(10),
    ))
}

/// Bytes the files directly in `dir` and in its subdirectories take (lengths, not
/// blocks); `None` when `dir` cannot be read. A RocksDB directory is flat, so this reads
/// one listing and a metadata per file.
pub fn dir_bytes(dir: &std::path::Path) -> Option<u64> {
    fn walk(dir: &std::path::Path, depth: u32) -> std::io::Result<u64> {
        let mut total = 0u64;
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                if depth > 0 {
                    total = total.saturating_add(walk(&entry.path(), depth - 1)?);
                }
            } else {
                total = total.saturating_add(meta.len());
            }
        }
        Ok(total)
    }
    walk(dir, 2).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_after_the_command_name() {
        let stat = "4242 (we ird) name) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0";
        assert_eq!(parse_proc_stat_cpu(stat), Some(Duration::from_secs(3)));
        assert_eq!(parse_proc_stat_cpu("garbage"), None);
        assert!(process_cpu().is_some(), "this test runs on Linux");
    }

    #[test]
    fn dir_bytes_sums_the_files_below() {
        let dir = std::env::temp_dir().join(format!("stele-dir-bytes-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a"), [0u8; 100]).unwrap();
        std::fs::write(dir.join("sub").join("b"), [0u8; 23]).unwrap();
        assert_eq!(super::dir_bytes(&dir), Some(123));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(super::dir_bytes(&dir), None);
    }
}
