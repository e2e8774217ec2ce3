//! Shell layer: the speech worker — runs the core's synthesis jobs off the event loop.
//!
//! [`Worker::start`] spawns `threads` threads sharing one job queue (the core never has more
//! jobs running than that, so none waits). Each job runs `espeak-ng --stdout -b 1 -v VOICE`
//! directly (argv, never a shell), the text on its stdin (never an argument, so no text is read
//! as an option), reads the WAV from its stdout, kills it past the timeout, and reports a
//! [`TtsDone`] with the time it took, waking the loop through `notify` (the reactor's
//! `Waker`). The loop takes reports with [`Worker::poll_done`]; no decision is made here.

use crate::server::tts::{TtsDone, TtsFailure, TtsJob};
use std::io::{ErrorKind, Read, Write};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// At most this much of the program's stderr is kept for an error message.
const STDERR_KEPT: usize = 300;

pub struct Worker {
    jobs: mpsc::Sender<TtsJob>,
    done: mpsc::Receiver<TtsDone>,
}

impl Worker {
    pub fn start(
        command: String,
        timeout: Duration,
        threads: usize,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<Worker> {
        let (jobs, queue) = mpsc::channel::<TtsJob>();
        let queue = Arc::new(Mutex::new(queue));
        let (tell, done) = mpsc::channel();
        for i in 0..threads.max(1) {
            let (queue, tell, notify, command) =
                (queue.clone(), tell.clone(), notify.clone(), command.clone());
            std::thread::Builder::new()
                .name(format!("tts-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(_) => return,
                    };
                    let Ok(job) = job else { return };
                    let started = Instant::now();
                    let result = synthesize(&command, &job.voice, &job.text, timeout);
                    let report = TtsDone {
                        id: job.id,
                        result,
                        took: started.elapsed(),
                    };
                    if tell.send(report).is_err() {
                        return;
                    }
                    notify();
                })?;
        }
        Ok(Worker { jobs, done })
    }

    pub fn submit(&self, job: TtsJob) {
        let _ = self.jobs.send(job);
    }

    pub fn poll_done(&self) -> Option<TtsDone> {
        self.done.try_recv().ok()
    }
}

/// Run the program once: the WAV it wrote, or why there is none.
pub fn synthesize(
    command: &str,
    voice: &str,
    text: &str,
    timeout: Duration,
) -> Result<Vec<u8>, TtsFailure> {
    let mut child = Command::new(command)
        .args(["--stdout", "-b", "1", "-v", voice])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            TtsFailure::Unavailable(if e.kind() == ErrorKind::NotFound {
                format!("{command} is not installed on this box")
            } else {
                format!("cannot start {command}: {e}")
            })
        })?;
    // The text is bounded (the core's `max_chars`): it fits in the pipe, so this cannot block.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(text.as_bytes());
        let _ = stdin.write_all(b"\n");
    }
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(TtsFailure::Failed("no pipes to the program".into()));
    };
    let (tx, rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut wav = Vec::new();
        let mut err = Vec::new();
        let ok = stdout.read_to_end(&mut wav).is_ok();
        let _ = stderr.read_to_end(&mut err);
        let _ = tx.send((ok, wav, err));
    });
    let out = rx.recv_timeout(timeout);
    if out.is_err() {
        let _ = child.kill();
        let _ = child.wait();
        // The reader ends when the pipe closes; not waited for (a grandchild may hold it).
        return Err(TtsFailure::TimedOut);
    }
    let _ = child.wait();
    let _ = reader.join();
    let (ok, wav, err) = out.map_err(|_| TtsFailure::TimedOut)?;
    if ok && !wav.is_empty() {
        return Ok(wav);
    }
    let err = String::from_utf8_lossy(&err[..err.len().min(STDERR_KEPT)])
        .trim()
        .to_string();
    Err(TtsFailure::Failed(if err.is_empty() {
        "no audio came out".into()
    } else {
        err
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_program_is_unavailable() {
        let r = synthesize(
            "/nonexistent/espeak-ng",
            "en-us",
            "hi",
            Duration::from_secs(1),
        );
        assert!(matches!(r, Err(TtsFailure::Unavailable(ref m)) if m.contains("not installed")));
    }

    /// An executable script in a fresh directory.
    fn script(name: &str, body: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("edge-tts-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fake-espeak");
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn a_program_past_its_timeout_is_killed() {
        let slow = script("slow", "exec sleep 5");
        let r = synthesize(
            slow.to_str().unwrap(),
            "en-us",
            "hi",
            Duration::from_millis(100),
        );
        assert_eq!(r, Err(TtsFailure::TimedOut));
    }

    #[test]
    fn the_text_goes_to_stdin_and_argv_is_fixed() {
        // Echoes its argv and stdin back as "audio": the text is never an argument.
        let echo = script("echo", "echo \"$@\"; cat");
        let r = synthesize(
            echo.to_str().unwrap(),
            "en-us",
            "-x; rm -rf /",
            Duration::from_secs(5),
        );
        let out = String::from_utf8(r.unwrap()).unwrap();
        assert_eq!(out, "--stdout -b 1 -v en-us\n-x; rm -rf /\n");
        let quiet = script("quiet", "echo 'Error: no such voice' >&2");
        let r = synthesize(quiet.to_str().unwrap(), "xx", "hi", Duration::from_secs(5));
        assert_eq!(r, Err(TtsFailure::Failed("Error: no such voice".into())));
    }
}
