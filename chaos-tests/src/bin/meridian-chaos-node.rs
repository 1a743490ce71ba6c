//! The `meridian` binary for the chaos scenarios: the same entry point, linked against
//! the node library built with the `failpoints` feature.

fn main() -> std::process::ExitCode {
    meridian_node::cli::main()
}
