//! The `kura` binary: hands the command line to [`kura::cli`].
fn main() -> std::process::ExitCode {
    kura::cli::run()
}
