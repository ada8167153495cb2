//! The `kaos` command line (being written).

fn main() {}
