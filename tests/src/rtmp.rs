//! Debian's nginx with its RTMP module, on a free loopback port: the RTMP server streams are pushed to
//! in tests (`application live { live on; }`), and pulled back with ffmpeg.

use crate::procs::{Proc, free_port, wait_for_port};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const MODULE: &str = "/usr/lib/nginx/modules/ngx_rtmp_module.so";

pub struct RtmpServer {
    pub port: u16,
    dir: PathBuf,
    proc: Option<Proc>,
}

impl RtmpServer {
    pub fn start(dir: &Path) -> RtmpServer {
        assert!(Path::new(MODULE).exists(), "{MODULE} is missing: install nginx-light and libnginx-mod-rtmp (deploy/dev.sh test does)");
        let dir = dir.join("nginx");
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        let mut server = RtmpServer { port: free_port(), dir, proc: None };
        server.restart();
        server
    }

    /// `rtmp://127.0.0.1:<port>/<app>/<stream>`
    pub fn url(&self, app: &str, stream: &str) -> String {
        format!("rtmp://127.0.0.1:{}/{app}/{stream}", self.port)
    }

    /// Starts (again) on the same port.
    pub fn restart(&mut self) {
        self.proc = None;
        let config = self.dir.join("nginx.conf");
        let d = self.dir.display();
        // Not a daemon, one process, every path in the test's directory (the defaults are not writable).
        let text = format!(
            "load_module {MODULE};\ndaemon off;\nmaster_process off;\nworker_processes 1;\nerror_log {d}/logs/error.log info;\npid {d}/nginx.pid;\n\
             events {{ worker_connections 64; }}\nrtmp {{\n  access_log off;\n  server {{\n    listen 127.0.0.1:{port};\n    \
             application live {{ live on; }}\n  }}\n}}\n",
            port = self.port
        );
        std::fs::write(&config, text).unwrap();
        let (prefix, config) = (self.dir.to_string_lossy().to_string(), config.to_string_lossy().to_string());
        let error_log = self.dir.join("logs/startup.log").to_string_lossy().to_string();
        let proc = Proc::spawn("nginx", Path::new("/usr/sbin/nginx"), &["-p", &prefix, "-c", &config, "-e", &error_log], &[], &self.dir);
        wait_for_port(self.port, Duration::from_secs(10));
        self.proc = Some(proc);
    }

    pub fn kill(&mut self) {
        self.proc = None;
    }
}

/// What a pull of the stream shows: `(codec, width, height)` per stream, or ffprobe's complaint.
pub fn probe_stream(url: &str, timeout: Duration) -> Result<Vec<(String, u64, u64)>, String> {
    let out = Command::new("timeout")
        .arg(timeout.as_secs().to_string())
        .args(["ffprobe", "-v", "error", "-print_format", "json", "-show_streams", url])
        .output()
        .expect("ffprobe runs");
    if !out.status.success() {
        return Err(format!("ffprobe {}: {}", out.status, String::from_utf8_lossy(&out.stderr).trim()));
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let streams = json["streams"].as_array().cloned().unwrap_or_default();
    Ok(streams
        .iter()
        .map(|s| (s["codec_name"].as_str().unwrap_or("").to_string(), s["width"].as_u64().unwrap_or(0), s["height"].as_u64().unwrap_or(0)))
        .collect())
}

/// Records `seconds` of the stream as it plays (copied, not re-encoded) into `out` (FLV).
pub fn capture_stream(url: &str, seconds: u32, out: &Path) -> Result<(), String> {
    let status = Command::new("timeout")
        .arg((seconds + 20).to_string())
        .args(["ffmpeg", "-v", "error", "-y", "-i", url, "-t", &seconds.to_string(), "-c", "copy", "-f", "flv"])
        .arg(out)
        .status()
        .expect("ffmpeg runs");
    if status.success() { Ok(()) } else { Err(format!("ffmpeg pulling {url}: {status}")) }
}
