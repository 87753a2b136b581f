fn main() -> std::process::ExitCode {
    kura::cli::run()
}
