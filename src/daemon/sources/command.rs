//! A program that prints one picture on its standard output for each capture: `rpicam-still` for the Raspberry
//! Pi Camera Module, `ffmpeg`, `gphoto2`. It runs in a process group of its own, so that a timeout ends it and
//! whatever it started; its standard error goes into the log.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, bail};

use super::http::megabytes;
use super::{Frame, FrameSource};
use crate::caption::preprocess;
use crate::daemon::config::CommandSettings;

/// The end of a program's standard error kept for the log: what it said last is what explains a failure.
const STDERR_TAIL: usize = 2048;
/// How often a finished program's exit is looked for.
const POLL: Duration = Duration::from_millis(5);

pub struct CommandSource {
    camera: String,
    config: CommandSettings,
    /// `` `rpicam-still` ``, for messages.
    program: String,
    /// `command rpicam-still`, for the caption's record.
    origin: String,
}

impl CommandSource {
    pub fn new(camera: &str, config: &CommandSettings) -> CommandSource {
        let path = config.argv.first().map_or("", String::as_str);
        CommandSource {
            camera: camera.to_string(),
            program: format!("`{path}`"),
            origin: format!("command {path}"),
            config: config.clone(),
        }
    }

    fn run(&self) -> Result<Vec<u8>> {
        let program = &self.program;
        let timeout = self.config.timeout;
        let deadline = Instant::now() + timeout;
        let Some((path, arguments)) = self.config.argv.split_first() else {
            bail!("command.argv is empty: no program to run");
        };
        let mut child = Command::new(path)
            .args(arguments)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => anyhow::anyhow!("{program}: no such program"),
                _ => anyhow::anyhow!("{program}: cannot start it: {e}"),
            })?;
        let stdout = read_stdout(child.stdout.take(), self.config.max_picture_bytes);
        let stderr = read_stderr(child.stderr.take());
        let ran = wait(&mut child, &stdout, deadline);
        // Whatever it left behind goes with it, on success too: a helper it started must not outlive the
        // capture (nor hold its standard error open).
        let status = end_group(&mut child);
        let said = stderr
            .recv_timeout(POLL * 20)
            .unwrap_or_else(|_| String::new());
        let said_note = if said.is_empty() {
            String::new()
        } else {
            format!("; it said: {said}")
        };
        let printed = match ran {
            Err(Failure::Timeout) => bail!(
                "{program}: no picture within {} s (command.timeout_s): stopped it{said_note}",
                timeout.as_secs_f64()
            ),
            Err(Failure::Oversized) => bail!(
                "{program}: printed more than {} (max_picture_mb): stopped it{said_note}",
                megabytes(self.config.max_picture_bytes)
            ),
            Err(Failure::Io(e)) => bail!("{program}: cannot read what it printed: {e}"),
            Ok(printed) => printed,
        };
        let status = status.with_context(|| format!("{program}: cannot learn how it ended"))?;
        if !status.success() {
            bail!("{program}: {}{said_note}", exit_description(status));
        }
        if printed.is_empty() {
            bail!("{program}: printed nothing on its standard output{said_note}");
        }
        if !said.is_empty() {
            log::debug!(camera = self.camera; "{program} said: {said}");
        }
        Ok(printed)
    }
}

impl FrameSource for CommandSource {
    fn grab(&mut self) -> Result<Option<Frame>> {
        let taken_at = SystemTime::now();
        let printed = self.run()?;
        // Its messages start with the program's name and say what is wrong with what it printed.
        let image = preprocess::decode_rgb(&printed, &self.program, None)?;
        Ok(Some(Frame {
            image,
            origin: self.origin.clone(),
            taken_at,
        }))
    }
}

enum Failure {
    Timeout,
    Oversized,
    Io(std::io::Error),
}

/// Standard output, read to its end on a thread, unless it grows past `limit`.
fn read_stdout(stdout: Option<ChildStdout>, limit: u64) -> Receiver<Result<Vec<u8>, Failure>> {
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = stdout {
        thread::spawn(move || {
            let mut printed = Vec::new();
            let outcome = match stdout.take(limit + 1).read_to_end(&mut printed) {
                Err(e) => Err(Failure::Io(e)),
                Ok(_) if printed.len() as u64 > limit => Err(Failure::Oversized),
                Ok(_) => Ok(printed),
            };
            let _ = sender.send(outcome);
        });
    }
    receiver
}

/// The last lines of standard error, on one line, once the program closed it.
fn read_stderr(stderr: Option<ChildStderr>) -> Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    if let Some(mut stderr) = stderr {
        thread::spawn(move || {
            let mut tail = Vec::new();
            let mut chunk = [0u8; 4096];
            while let Ok(read @ 1..) = stderr.read(&mut chunk) {
                tail.extend_from_slice(&chunk[..read]);
                if tail.len() > STDERR_TAIL {
                    tail.drain(..tail.len() - STDERR_TAIL);
                }
            }
            let text = String::from_utf8_lossy(&tail);
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .collect();
            let _ = sender.send(lines.join(" | "));
        });
    }
    receiver
}

/// What the program printed, once it has exited (not reaped yet: `end_group` does that), before the deadline.
fn wait(
    child: &mut Child,
    stdout: &Receiver<Result<Vec<u8>, Failure>>,
    deadline: Instant,
) -> Result<Vec<u8>, Failure> {
    let mut printed = None;
    loop {
        match stdout.try_recv() {
            Ok(outcome) => printed = Some(outcome?),
            Err(TryRecvError::Empty) => {}
            // Standard output could not be piped: nothing was printed.
            Err(TryRecvError::Disconnected) => printed = printed.or(Some(Vec::new())),
        }
        if exited(child).map_err(Failure::Io)? {
            break;
        }
        if Instant::now() >= deadline {
            return Err(Failure::Timeout);
        }
        thread::sleep(POLL);
    }
    if let Some(printed) = printed {
        return Ok(printed);
    }
    // It exited, and something it started may still hold its output open: that goes with the group.
    signal_group(child);
    match stdout.recv_timeout(
        deadline
            .saturating_duration_since(Instant::now())
            .max(POLL * 20),
    ) {
        Ok(outcome) => outcome,
        Err(RecvTimeoutError::Timeout) => Err(Failure::Timeout),
        Err(RecvTimeoutError::Disconnected) => Ok(Vec::new()),
    }
}

/// Whether the program has exited, leaving it unreaped, so that its process id (and so its group's) cannot be
/// taken by another process before `end_group` signals the group.
fn exited(child: &Child) -> std::io::Result<bool> {
    let pid = libc::id_t::from(child.id());
    // SAFETY: waitid writes only the siginfo_t it is given; a zeroed one is valid.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let flags = libc::WEXITED | libc::WNOHANG | libc::WNOWAIT;
    if unsafe { libc::waitid(libc::P_PID, pid, &mut info, flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: with WNOHANG, si_pid is 0 until the child has exited, and then its pid.
    Ok(unsafe { info.si_pid() } != 0)
}

/// Ends everything left in the program's process group, then reaps the program: how it ended.
fn end_group(child: &mut Child) -> std::io::Result<ExitStatus> {
    signal_group(child);
    child.wait()
}

fn signal_group(child: &Child) {
    if let Ok(group) = i32::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals the process group the child leads (`process_group(0)`);
        // the child is not reaped yet, so the group is still its own.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

fn exit_description(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with status {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => format!("ended with {status}"),
    }
}
