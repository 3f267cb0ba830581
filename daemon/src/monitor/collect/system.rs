//! Host and process readings from sysinfo (USE: utilization of CPU, memory, disk).
//!
//! sysinfo measures CPU use between two refreshes, so the probe refreshes once when it is built
//! and the first reading covers the time since then (notes §3.8: refresh on a timer, never per
//! request). The disk reported is the one holding the daemon's working directory, where anything
//! it writes (migrations) goes.

use std::path::{Path, PathBuf};

use serde::Serialize;
use sysinfo::{Disks, Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SystemReading {
    pub cpu_percent: f64,
    pub cores: usize,
    pub load_average_1m: f64,
    pub memory_used_bytes: u64,
    pub memory_total_bytes: u64,
    pub memory_percent: f64,
    pub disk_mount: Option<String>,
    pub disk_used_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_percent: f64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProcessReading {
    pub pid: u32,
    /// Share of all cores (100 = every core busy).
    pub cpu_percent: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub start_time_s: u64,
}

pub struct SystemProbe {
    sys: System,
    disks: Disks,
    pid: Option<Pid>,
    cwd: PathBuf,
}

impl std::fmt::Debug for SystemProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SystemProbe").field("pid", &self.pid).finish()
    }
}

fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 { 0.0 } else { part as f64 * 100.0 / whole as f64 }
}

/// The disk whose mount point is the longest prefix of `dir`.
fn disk_of<'a>(disks: &'a Disks, dir: &Path) -> Option<&'a sysinfo::Disk> {
    disks.list().iter().filter(|d| dir.starts_with(d.mount_point())).max_by_key(|d| d.mount_point().as_os_str().len())
}

impl SystemProbe {
    pub fn new() -> Self {
        let mut sys = System::new();
        sys.refresh_cpu_usage();
        let pid = sysinfo::get_current_pid().ok();
        if let Some(pid) = pid {
            sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
        }
        Self {
            sys,
            disks: Disks::new_with_refreshed_list(),
            pid,
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
        }
    }

    pub fn read(&mut self) -> (SystemReading, Option<ProcessReading>) {
        self.sys.refresh_cpu_usage();
        self.sys.refresh_memory();
        self.disks.refresh(true);
        let cores = self.sys.cpus().len().max(1);
        let (total, used) = (self.sys.total_memory(), self.sys.used_memory());
        let disk = disk_of(&self.disks, &self.cwd);
        let (disk_total, disk_used) =
            disk.map_or((0, 0), |d| (d.total_space(), d.total_space().saturating_sub(d.available_space())));
        let system = SystemReading {
            cpu_percent: f64::from(self.sys.global_cpu_usage()),
            cores,
            load_average_1m: System::load_average().one,
            memory_used_bytes: used,
            memory_total_bytes: total,
            memory_percent: percent(used, total),
            disk_mount: disk.map(|d| d.mount_point().display().to_string()),
            disk_used_bytes: disk_used,
            disk_total_bytes: disk_total,
            disk_percent: percent(disk_used, disk_total),
        };
        let process = self.pid.and_then(|pid| {
            self.sys.refresh_processes_specifics(
                ProcessesToUpdate::Some(&[pid]),
                true,
                ProcessRefreshKind::nothing().with_cpu().with_memory(),
            );
            self.sys.process(pid).map(|p| ProcessReading {
                pid: pid.as_u32(),
                cpu_percent: f64::from(p.cpu_usage()) / cores as f64,
                resident_bytes: p.memory(),
                virtual_bytes: p.virtual_memory(),
                start_time_s: p.start_time(),
            })
        });
        (system, process)
    }
}

impl Default for SystemProbe {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_reads_this_machine_and_this_process() {
        let mut probe = SystemProbe::new();
        let (system, process) = probe.read();
        assert!(system.memory_total_bytes > 0 && system.memory_percent > 0.0 && system.memory_percent <= 100.0);
        assert!(system.cores >= 1);
        assert!((0.0..=100.0).contains(&system.cpu_percent));
        let process = process.expect("the current process is visible");
        assert_eq!(process.pid, std::process::id());
        assert!(process.resident_bytes > 0);
    }
}
