//! The CIFAR-10 distillation study driver (`cargo xtask study`); being written.
fn main() {}
