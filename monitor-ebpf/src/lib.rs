//! The kernel programs live in the `monitor` binary target (built for bpfel by
//! `monitor/build.rs`). This empty library exists so `monitor` can name the crate as a
//! build dependency, which makes cargo rebuild the object when these sources change.
#![no_std]
