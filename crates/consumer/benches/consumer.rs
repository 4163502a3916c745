//! Consumer runtime benchmark (filled in below).
fn main() {}
