//! The `mpcd` child processes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// One `mpcd` process started by localnet.
pub struct NodeProcess {
    /// Node id.
    pub id: String,
    /// argv (argv\[0\] is the mpcd path).
    pub cmd: Vec<String>,
    /// Log file.
    pub log: PathBuf,
    child: Child,
    exited: Option<ExitStatus>,
}

impl NodeProcess {
    /// Starts `cmd` with stdout and stderr appended to `log`, in its own process group (so a
    /// Ctrl-C in the terminal reaches only localnet, which then stops the nodes in order).
    pub fn spawn(id: &str, cmd: Vec<String>, log: &Path) -> anyhow::Result<NodeProcess> {
        let (program, args) = cmd.split_first().context("empty command")?;
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        writeln!(
            file,
            "=== localnet: starting {id} (pid of localnet {}) ===",
            std::process::id()
        )?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {id}: {}", cmd.join(" ")))?;
        Ok(NodeProcess {
            id: id.to_owned(),
            cmd,
            log: log.to_path_buf(),
            child,
            exited: None,
        })
    }

    /// Pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` the first time the process is seen to have exited.
    pub fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_some() {
            return None;
        }
        match self.child.try_wait() {
            Ok(Some(st)) => {
                self.exited = Some(st);
                Some(st)
            }
            _ => None,
        }
    }

    /// Whether it has exited (as last polled).
    pub fn has_exited(&self) -> bool {
        self.exited.is_some()
    }

    fn signal(&self, sig: Signal) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = kill(Pid::from_raw(pid), sig);
        }
    }
}

/// Stops the nodes: SIGTERM to all, up to `grace` for them to exit, SIGKILL for the rest.
pub fn stop_all(nodes: &mut [NodeProcess], grace: Duration) {
    for n in nodes.iter_mut() {
        n.poll_exit();
        if !n.has_exited() {
            n.signal(Signal::SIGTERM);
        }
    }
    let deadline = Instant::now() + grace;
    loop {
        for n in nodes.iter_mut() {
            n.poll_exit();
        }
        if nodes.iter().all(NodeProcess::has_exited) || Instant::now() >= deadline {
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    for n in nodes.iter_mut() {
        if !n.has_exited() {
            tracing::warn!(node = %n.id, pid = n.pid(), "did not stop on SIGTERM; SIGKILL");
            let _ = n.child.kill();
            let _ = n.child.wait();
            n.exited = n.child.try_wait().ok().flatten();
        }
    }
}

/// The last `lines` lines of a log file (reads at most its last 16 KiB).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(mut f) = File::open(path) else {
        return format!("(no log at {})", path.display());
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = len.saturating_sub(16 * 1024);
    if f.seek(SeekFrom::Start(start)).is_err() {
        return String::new();
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all.get(from..).unwrap_or_default().join("\n")
}

/// Whether a process with this pid exists.
pub fn alive(pid: u32) -> bool {
    match i32::try_from(pid) {
        Ok(p) if p > 0 => kill(Pid::from_raw(p), None).is_ok(),
        _ => false,
    }
}

/// The command line of a process (from /proc), if readable.
pub fn cmdline(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Pids of the processes whose argv is exactly `cmd` (from /proc; empty where /proc is
/// missing). Finds a node restarted by hand with the `cmd` of localnet.json.
pub fn find_by_argv(cmd: &[String]) -> Vec<u32> {
    let want: Vec<u8> = cmd
        .iter()
        .flat_map(|a| a.as_bytes().iter().copied().chain(std::iter::once(0)))
        .collect();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != std::process::id())
        .filter(|pid| std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| raw == want))
        .collect()
}

/// SIGTERMs every process running exactly `cmd`, waits up to `grace`, then SIGKILLs.
/// Returns how many there were.
pub fn stop_by_argv(cmd: &[String], grace: Duration) -> usize {
    let pids = find_by_argv(cmd);
    for p in &pids {
        let _ = terminate(*p);
    }
    let deadline = Instant::now() + grace;
    while pids.iter().any(|p| alive_not_zombie(*p)) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    for p in &pids {
        if alive_not_zombie(*p) {
            if let Ok(raw) = i32::try_from(*p) {
                let _ = kill(Pid::from_raw(raw), Signal::SIGKILL);
            }
        }
    }
    pids.len()
}

/// Alive and not a zombie (a zombie has exited; its parent just has not reaped it).
pub fn alive_not_zombie(pid: u32) -> bool {
    if !alive(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Sends SIGTERM to `pid`.
pub fn terminate(pid: u32) -> anyhow::Result<()> {
    let p = i32::try_from(pid).context("bad pid")?;
    kill(Pid::from_raw(p), Signal::SIGTERM).with_context(|| format!("SIGTERM to {pid}"))
}
