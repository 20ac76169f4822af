//! `airlock-fake-runner`: stands in for GitHub's `run.sh --jitconfig <blob>` in tests.
//!
//! Reads the JIT config (`--jitconfig` or `ACTIONS_RUNNER_INPUT_JITCONFIG`), decodes the fake
//! GitHub's blob (base64 of `{runner_id, name, url}`), fetches its one job from
//! `<url>/_fake/runner/job` over plain HTTP (no proxy: inside airlock the egress gateway
//! intercepts port 80 transparently), runs the script with `/bin/sh -c`, reports the exit
//! code to `<url>/_fake/runner/complete`, and exits 0. Exit 2: bad config; 3: no job in time;
//! 4: the fake could not be reached.

use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use base64::Engine as _;

#[derive(serde::Deserialize)]
struct Payload {
    runner_id: u64,
    name: String,
    url: String,
}

#[derive(serde::Deserialize)]
struct Job {
    job_id: u64,
    script: String,
}

fn jitconfig() -> Option<String> {
    // Hand-parsed: two accepted forms of one flag do not justify an argument parser here,
    // and this binary is meant to stay small.
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--jitconfig" {
            return args.next();
        }
        if let Some(v) = a.strip_prefix("--jitconfig=") {
            return Some(v.to_owned());
        }
    }
    std::env::var("ACTIONS_RUNNER_INPUT_JITCONFIG").ok()
}

fn start_ms() -> u64 {
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--start-ms" {
            return args.next().and_then(|v| v.parse().ok()).unwrap_or(0);
        }
    }
    std::env::var("AIRLOCK_FAKE_RUNNER_START_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

const USAGE: &str = "\
airlock-fake-runner: a stand-in for GitHub's runner (`run.sh --jitconfig BLOB`) in airlock's
tests and local dry runs with airlock-fake-github.

Usage: airlock-fake-runner [--jitconfig BLOB] [--start-ms N] [--wait-secs N]

The JIT config comes from --jitconfig or ACTIONS_RUNNER_INPUT_JITCONFIG (what airlock serve
sets). The runner fetches its one job from the fake GitHub named in the config, runs the
job's script with /bin/sh -c, reports its exit code, and exits 0.

Environment:
  ACTIONS_RUNNER_INPUT_JITCONFIG  the JIT config, when --jitconfig is not given
  AIRLOCK_FAKE_RUNNER_WAIT_SECS   how long to wait for a job (default 60)
  AIRLOCK_FAKE_RUNNER_START_MS    milliseconds to spend starting up before the first poll
                                  (the real runner takes seconds; default 0)

Exit codes: 0 job run and reported; 2 bad or missing config; 3 no job in time; 4 the fake
GitHub could not be reached.
";

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "-h" || a == "--help") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let Some(blob) = jitconfig() else {
        eprintln!("airlock-fake-runner: no --jitconfig and no ACTIONS_RUNNER_INPUT_JITCONFIG");
        return ExitCode::from(2);
    };
    let payload: Payload = match base64::engine::general_purpose::STANDARD
        .decode(blob.trim())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
    {
        Some(p) => p,
        None => {
            eprintln!("airlock-fake-runner: the JIT config is not a fake GitHub config");
            return ExitCode::from(2);
        }
    };
    let wait = std::env::args()
        .skip_while(|a| a != "--wait-secs")
        .nth(1)
        .or_else(|| std::env::var("AIRLOCK_FAKE_RUNNER_WAIT_SECS").ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    // The real runner spends seconds starting (.NET, configuration, connecting) before it
    // asks for a job; tests of warm runners stand that in with a delay. Read from the
    // command line too (`--start-ms N`), since a sandbox passes no environment it is not told.
    let start_ms = start_ms();
    if start_ms > 0 {
        std::thread::sleep(Duration::from_millis(start_ms));
    }
    let base = payload.url.trim_end_matches('/').to_owned();
    let auth = format!("Runner {}", payload.runner_id);
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    eprintln!(
        "airlock-fake-runner: {} (id {}) polling {base}",
        payload.name, payload.runner_id
    );
    let deadline = Instant::now() + Duration::from_secs(wait);
    let job: Job = loop {
        match agent
            .get(&format!("{base}/_fake/runner/job"))
            .header("Authorization", &auth)
            .call()
        {
            Ok(mut r) if r.status() == 200 => match r.body_mut().read_json() {
                Ok(j) => break j,
                Err(e) => {
                    eprintln!("airlock-fake-runner: bad job body: {e}");
                    return ExitCode::from(4);
                }
            },
            Ok(_) => {}
            Err(e) => {
                eprintln!("airlock-fake-runner: fetching the job: {e}");
                return ExitCode::from(4);
            }
        }
        if Instant::now() >= deadline {
            eprintln!("airlock-fake-runner: no job within {wait}s");
            return ExitCode::from(3);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let code = match Command::new("/bin/sh").arg("-c").arg(&job.script).status() {
        Ok(s) => s.code().unwrap_or(128),
        Err(e) => {
            eprintln!("airlock-fake-runner: cannot run /bin/sh: {e}");
            127
        }
    };
    let report = agent
        .post(&format!("{base}/_fake/runner/complete"))
        .header("Authorization", &auth)
        .send_json(serde_json::json!({"job_id": job.job_id, "exit_code": code}));
    if let Err(e) = report {
        eprintln!("airlock-fake-runner: reporting job {}: {e}", job.job_id);
        return ExitCode::from(4);
    }
    eprintln!("airlock-fake-runner: job {} exited {code}", job.job_id);
    ExitCode::SUCCESS
}
