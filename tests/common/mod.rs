//! Starting the real `ringkv` binary for end-to-end tests: ephemeral ports
//! on 127.0.0.1, readiness by the `ready` line and then a PING answered,
//! never by sleeping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use net::client::{Client, ClientConfig};

/// A running `ringkv serve` process, killed when dropped.
pub struct Node {
    pub child: Child,
    pub native: SocketAddr,
    pub resp: SocketAddr,
    pub shards: Vec<SocketAddr>,
    pub data_dir: PathBuf,
}

pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

impl Node {
    /// Starts a node over `data_dir` with extra flags.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringkv"))
            .args(["serve", "--port", "0", "--resp-port", "0", "--no-pin", "--log-level", "warn"])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start ringkv");
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(STARTUP_TIMEOUT).expect("ringkv printed its ready line");
        let field = |name: &str| -> String {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name).and_then(|r| r.strip_prefix('=')))
                .unwrap_or_else(|| panic!("no {name} in {line:?}"))
                .to_string()
        };
        let native = field("native").parse().expect("native address");
        let resp = field("resp").parse().expect("resp address");
        let shards = field("shards").split(',').map(|s| s.parse().expect("shard address")).collect();
        let node = Node { child, native, resp, shards, data_dir: data_dir.to_path_buf() };
        node.wait_ready();
        node
    }

    /// Ready means it answers PING.
    fn wait_ready(&self) {
        let rt = runtime();
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            let ok = rt.block_on(async {
                let mut c =
                    Client::connect(self.native, ClientConfig { attempts: 1, ..ClientConfig::default() }).await?;
                c.ping().await
            });
            match ok {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("ringkv never answered PING: {e}"),
                // The process already printed its ready line, so a refused
                // attempt is rare; retry at once, bounded by the deadline.
                Err(_) => std::thread::yield_now(),
            }
        }
    }

    /// SIGTERM, then wait for the exit status.
    pub fn stop(mut self) -> ExitStatus {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let status = wait_with_timeout(&mut self.child, Duration::from_secs(30));
        std::mem::forget(self);
        status
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::mem::forget(self);
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.native, ClientConfig::default()).await.expect("client connects")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_with_timeout(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("ringkv did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
}
