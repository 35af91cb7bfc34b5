//! The `jwksd` binary: everything lives in the library; see `jwksd::cli`.

fn main() -> std::process::ExitCode {
    jwksd::cli::main()
}
