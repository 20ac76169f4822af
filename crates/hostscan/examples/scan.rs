//! Runs `scan host` (or `scan org ORG`) from the command line without the airlock binary:
//! `cargo run -p airlock-hostscan --example scan -- host --root DIR [--json|--sarif|--markdown]`.

use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    Host(airlock_hostscan::HostArgs),
    Org(airlock_hostscan::OrgArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let r = match &cli.cmd {
        Cmd::Host(a) => airlock_hostscan::run_host(a, &mut out),
        Cmd::Org(a) => airlock_hostscan::run_org(a, &mut out),
    };
    match r {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(2)),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("error: {msg}");
            std::process::ExitCode::from(2)
        }
    }
}
