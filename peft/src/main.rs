//! The `peft` command-line tool. Every failure prints `error: <message>` to stderr and exits 1.
mod cli;

fn main() {
    std::process::exit(cli::run(std::env::args_os()));
}
