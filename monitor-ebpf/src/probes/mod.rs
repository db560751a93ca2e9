//! One file per hook family; programs are named `<family>_<hook>`.
pub mod iouring;
pub mod net;
pub mod open;
pub mod process;
pub mod startup;
