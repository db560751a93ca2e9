//! Minimal BTF reader: struct member offsets from the running kernel.
