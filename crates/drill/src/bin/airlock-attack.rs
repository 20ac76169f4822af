//! `airlock-attack <attack-id>`: runs ONE attack inside a sandbox, as the unprivileged job
//! user, and prints one JSON line `{"attack":…,"succeeded":…,"detail":…}`. `--list` lists
//! the attacks. Started by `airlock drill`; see docs/drill.md.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(airlock_drill::attack::main_with_args(&args));
}
