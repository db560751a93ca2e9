//! The credential catalogue and persistence locations.
