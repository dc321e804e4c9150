//! Runs the node's demo workloads: `kommit-node-demo <workload> [args]` is the same as
//! `kommit demo <workload> [args]`. The node's tests build their demo image from it.

fn main() {
    std::process::exit(kommit_node::demo::main(std::env::args_os().skip(1)));
}
