//! `meridian`: the registry node and its operator tools.

fn main() -> std::process::ExitCode {
    meridian_node::cli::main()
}
