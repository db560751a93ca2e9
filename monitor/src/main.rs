//! pthwatch: watches Python interpreter start-up and stops startup hooks (`.pth`,
//! `sitecustomize`, `usercustomize`, `.start`) that read credentials and reach the network.

mod btf;
mod check;
mod credentials;
mod inventory;

fn main() {}
