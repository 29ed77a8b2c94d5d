//! Child processes that die with the test, and loopback port helpers.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The priority of processes standing for other machines (see [`Proc::spawn_remote`]).
const REMOTE_NICENESS: i32 = -5;

/// A child process logging to `<dir>/<name>.log`; killed (SIGKILL) when dropped. When the test is
/// panicking, the log's tail is printed so failures explain themselves.
pub struct Proc {
    pub name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// A process that stands for another machine (a publisher, LiveKit's server): it runs at a higher
    /// priority (`nice -n -5`, where the tests may raise it; `nice` warns and runs it unchanged where not),
    /// so that load on this 2-core machine (the transcode, the flakiness check's CPU hogs) falls on the
    /// fleet under test and not on what it is fed. Threads and processes it starts inherit the priority.
    pub fn spawn_remote(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Self {
        let niceness = REMOTE_NICENESS.to_string();
        let mut niced: Vec<&str> = vec!["-n", &niceness];
        let program = program.to_string_lossy();
        niced.push(&program);
        niced.extend_from_slice(args);
        Self::spawn(name, Path::new("nice"), &niced, env, dir)
    }

    /// Gives every thread of this process and of every process below it the priority of
    /// [`Proc::spawn_remote`]: Chromium starts its own processes at the default priority, whatever its
    /// parent's. Threads started later inherit it from the thread that starts them.
    pub fn prioritise_descendants(&self) {
        let mut parent_of: Vec<(u32, u32)> = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)).and_then(|p| p.parse().ok());
            if let Some(ppid) = ppid {
                parent_of.push((pid, ppid));
            }
        }
        let mut tree = vec![self.pid()];
        let mut i = 0;
        while i < tree.len() {
            let parent = tree[i];
            tree.extend(parent_of.iter().filter(|(_, p)| *p == parent).map(|(pid, _)| *pid));
            i += 1;
        }
        for pid in tree {
            for task in std::fs::read_dir(format!("/proc/{pid}/task")).into_iter().flatten().flatten() {
                if let Ok(tid) = task.file_name().to_string_lossy().parse::<libc::id_t>() {
                    // SAFETY: setpriority takes plain integers; a thread that is gone makes it fail, harmlessly.
                    unsafe { libc::setpriority(libc::PRIO_PROCESS, tid, REMOTE_NICENESS) };
                }
            }
        }
    }

    pub fn spawn(name: &str, program: &Path, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let log = dir.join(format!("{name}.log"));
        let out = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
        let child = Command::new(program)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        Self { name: name.to_string(), child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, then wait up to `grace` for a clean exit (SIGKILL after).
    pub fn terminate(mut self, grace: Duration) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let exited = || if let Ok(Some(_)) = self.child.try_wait() { Ok(()) } else { Err(String::new()) };
        let _ = crate::wait::poll_blocking(grace, Duration::from_millis(100), exited);
    }

    /// Sends SIGTERM and returns at once (a drain that is watched, not awaited).
    pub fn signal_term(&self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
    }

    /// Freezes the process (SIGSTOP): alive, connected, answering nothing, like a node starved of CPU.
    pub fn freeze(&self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGSTOP) };
    }

    /// Lets a frozen process run again (SIGCONT).
    pub fn thaw(&self) {
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
    }

    /// True once the process has exited.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            eprintln!("----- last lines of {} ({}) -----", self.name, self.log.display());
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap().local_addr().unwrap().port()
}

pub fn wait_for_port(port: u16, timeout: Duration) {
    crate::wait::until_blocking(&format!("a listener on 127.0.0.1:{port}"), timeout, Duration::from_millis(50), || {
        TcpStream::connect((Ipv4Addr::LOCALHOST, port)).map(drop).map_err(|e| e.to_string())
    })
}

/// A log's text without its ANSI colour codes (`ESC [ ... m`).
pub fn without_colours(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|&c| c == 'm');
        } else {
            plain.push(c);
        }
    }
    plain
}
