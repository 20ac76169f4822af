//! Stand-alone `scan workflows` for benchmarks and trying the scanner before the CLI wires
//! it in: `cargo run --release -p airlock-scan --example scan-workflows -- PATH…`.

use clap::Parser;

#[derive(Parser)]
#[command(name = "scan-workflows")]
struct Cli {
    #[command(flatten)]
    args: airlock_scan::WorkflowsArgs,
}

fn main() {
    let cli = Cli::parse();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match airlock_scan::run_workflows(&cli.args, &mut out) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            let mut msg = e.to_string();
            let mut src = std::error::Error::source(&e);
            while let Some(s) = src {
                msg.push_str(&format!(": {s}"));
                src = s.source();
            }
            eprintln!("airlock: {msg}");
            std::process::exit(1);
        }
    }
}
