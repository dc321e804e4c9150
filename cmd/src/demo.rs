//! `kommit demo <workload> [args]`: the built-in demo workloads (what the node's
//! `kommit.dev/demo` image runs; see `kommit_node::demo`).

/// Arguments of `kommit demo`: everything after it goes to the workload.
#[derive(Debug, clap::Args)]
#[command(disable_help_flag = true)]
pub struct DemoCmd {
    /// Workload and its arguments (`http --port 8080`, `exit --code 3`, `sleep`, ...).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
    args: Vec<String>,
}

/// Runs the workload; returns its exit code.
pub fn run(cmd: DemoCmd) -> i32 {
    kommit_node::demo::main(cmd.args)
}
