//! Empty: the build-dependencies of this crate exist only for their features (Cargo.toml).
fn main() {}
