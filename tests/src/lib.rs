//! Helpers shared by the root-only integration tests.
