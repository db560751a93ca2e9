//! The `pthwatch` binary; everything is in the `monitor` library.

fn main() -> std::process::ExitCode {
    monitor::main()
}
