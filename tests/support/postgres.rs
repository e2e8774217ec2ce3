//! Test support: a throwaway PostgreSQL on loopback — its own data directory under the
//! temporary directory, a fresh port, SCRAM-SHA-256 password authentication (the default of
//! PostgreSQL 14+), stopped and removed when dropped.
//!
//! The binaries are found on `PATH` or under `/usr/lib/postgresql/<version>/bin` (where
//! Debian's `postgresql` package puts them); without them [`Pg::start`] says why and the
//! caller skips. PostgreSQL refuses to run as root: as root, it runs as `nobody` through
//! `runuser`.

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub const PASSWORD: &str = "edge-test-pw";

pub struct Pg {
    pub dir: PathBuf,
    pub port: u16,
    bin: PathBuf,
    as_nobody: bool,
}

/// The directory holding `initdb` and `pg_ctl`, if any.
fn binaries() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for d in std::env::split_paths(&path) {
        if d.join("initdb").is_file() && d.join("pg_ctl").is_file() {
            return Some(d);
        }
    }
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|d| d.join("initdb").is_file())
        .collect();
    versions.sort();
    versions.pop()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

impl Pg {
    /// Start a fresh server; `Err` only when no PostgreSQL is installed (the reason to skip).
    pub fn start(name: &str) -> Result<Pg, String> {
        let bin = binaries().ok_or(
            "no PostgreSQL binaries (initdb, pg_ctl) on PATH or under /usr/lib/postgresql/*/bin; install the postgresql package",
        )?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "augmentos-edge-pg-{}-{name}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let as_nobody = is_root();
        std::fs::write(dir.join("pw"), PASSWORD).unwrap();
        if as_nobody {
            let ok = Command::new("chown")
                .args(["-R", "nobody"])
                .arg(&dir)
                .status()
                .unwrap()
                .success();
            assert!(ok, "chown nobody {}", dir.display());
        }
        let port = super::ports::free_port().unwrap();
        let pg = Pg {
            dir,
            port,
            bin,
            as_nobody,
        };
        let data = pg.dir.join("data");
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "edge".as_ref(),
                "--auth=scram-sha-256".as_ref(),
                format!("--pwfile={}", pg.dir.join("pw").display()).as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        pg.up();
        Ok(pg)
    }

    /// Run a PostgreSQL tool (as `nobody` when root); panics with its output if it fails.
    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) {
        let exe = self.bin.join(tool);
        let mut c = if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let out = c
            .args(args)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            out.status.success(),
            "{tool} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn url(&self) -> String {
        format!(
            "postgres://edge:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Start (again) on the same data and port.
    pub fn up(&self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data().as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                opts.as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "start".as_ref(),
            ],
        );
    }

    /// Stop (fast: connections are closed).
    #[allow(dead_code)] // not every test that includes this file stops its server
    pub fn down(&self) {
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                self.data().as_os_str(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        let exe = self.bin.join("pg_ctl");
        let mut c = if self.as_nobody {
            let mut c = Command::new("runuser");
            c.args(["-u", "nobody", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        let _ = c
            .arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
