//! Test support (feature `testkit`, tests only): the P4Runtime test server of this crate's tests
//! (`tests/p4rt/server.py`, a real process on the PyPI `p4runtime` bindings that validates every
//! entity against the P4Info it was given) as a process any test can start and read back, and
//! the python virtual environment it runs in.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};

use tonic::client::Grpc;
use tonic::transport::Endpoint;

use crate::client::{ClientError, read_entries_over};
use crate::entries::Entries;

/// The P4Runtime test server's directory: `server.py` and its pinned `requirements.txt`.
pub fn p4rt_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/p4rt")
}

/// The python of a virtual environment at `venv` holding the pinned `requirements`: the
/// environment is created with `python3 -m venv` if missing, and `pip install -r requirements`
/// runs unless `ready(python)` says the packages are already there. `.ci/run` makes the same
/// environments ahead of the tests. One caller at a time per process (pip is not safe to run
/// twice at once on one environment).
///
/// # Panics
///
/// If python3 cannot be run, or the environment cannot be made.
pub fn python_venv(venv: &Path, requirements: &Path, ready: impl Fn(&Path) -> bool) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let python = venv.join("bin/python");
    if !python.exists() {
        if let Err(e) = Command::new("python3").arg("--version").output() {
            panic!(
                "python3 is required (python3 -m venv {}, pip install -r {}), but it cannot \
                 be run: {e}",
                venv.display(),
                requirements.display()
            );
        }
        run_ok(
            Command::new("python3").args(["-m", "venv"]).arg(venv),
            &format!("python3 -m venv {}", venv.display()),
        );
    }
    if !ready(&python) {
        run_ok(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "-r",
                ])
                .arg(requirements),
            &format!("pip install -r {}", requirements.display()),
        );
    }
    python
}

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The test server's python (`tests/p4rt/.venv`), with the pinned `p4runtime` bindings
/// installed if missing.
pub fn venv_python() -> PathBuf {
    let dir = p4rt_dir();
    python_venv(
        &dir.join(".venv"),
        &dir.join("requirements.txt"),
        |python| {
            Command::new(python)
                .args(["-c", "import p4.v1, grpc"])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        },
    )
}

/// The P4Runtime test server on an ephemeral port of 127.0.0.1 (device id 1), killed when
/// dropped. What it prints after its port (with `--log-rpcs`: one line per pipeline and write)
/// is collected.
#[derive(Debug)]
pub struct TestServer {
    child: Child,
    _stdin: ChildStdin,
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl TestServer {
    /// Starts `server.py` with `args` (see `server.py --help`) and waits until it listens.
    ///
    /// # Panics
    ///
    /// If the server cannot be started or exits before it listens.
    pub fn start(args: &[&str]) -> TestServer {
        let mut child = Command::new(venv_python())
            .arg(p4rt_dir().join("server.py"))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start server.py");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        // Blocks until the server prints its port or exits (EOF: an empty line).
        stdout.read_line(&mut line).expect("read server.py stdout");
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse().ok())
            .unwrap_or_else(|| panic!("server.py did not start: {line:?}"));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        TestServer {
            child,
            _stdin: stdin,
            port,
            lines,
        }
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// What it printed after its port so far, one entry a line.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Its entries, read over P4Runtime without arbitration (as any client may read) and
    /// checked against the program.
    pub async fn entries(&self) -> Result<Entries, ClientError> {
        let target = format!("127.0.0.1:{}", self.port);
        let channel = Endpoint::from_shared(format!("http://{target}"))
            .map_err(|e| ClientError::Config(e.to_string()))?
            .connect()
            .await
            .map_err(|source| ClientError::Connect { target, source })?;
        read_entries_over(&mut Grpc::new(channel), 1).await
    }
}
